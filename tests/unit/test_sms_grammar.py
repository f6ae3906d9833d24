"""The SMS/WhatsApp text grammar (siaga.sms_grammar) and phone numbers (siaga.phones), SPEC section 11."""

from __future__ import annotations

import string

import pytest

from services.ingest.gateway import routed_phones
from siaga.events import Phase
from siaga.phones import normalise_phone
from siaga.sms_grammar import (
    MAX_REPLY,
    Checkin,
    Keyword,
    NotUnderstood,
    OnIncident,
    Report,
    SetPhase,
    _replies,
    keyword_of,
    parse,
    reply,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LAPOR banjir masuk TPS", Report("banjir masuk TPS", None, "banjir masuk TPS")),
        ("lapor 12 ada keributan", Report("12 ada keributan", 12, "ada keributan")),
        ("  LPR   12   ada  keributan ", Report("12 ada keributan", 12, "ada keributan")),
        ("lapr TPS 7 ricuh", Report("TPS 7 ricuh", 7, "ricuh")),
        ("Laporan tps07 kotak suara rusak", Report("tps07 kotak suara rusak", 7, "kotak suara rusak")),
        ("Banjir masuk TPS 5", Report("Banjir masuk TPS 5", None, "Banjir masuk TPS 5")),
        ("3 orang pingsan", Report("3 orang pingsan", 3, "orang pingsan")),
        ("ada serangan fajar", Report("ada serangan fajar", None, "ada serangan fajar")),
        ("SELESAI K7Q2M sudah aman", OnIncident(Keyword.SELESAI, "K7Q2M", "sudah aman")),
        ("slsai k7q2m  air surut", OnIncident(Keyword.SELESAI, "K7Q2M", "air surut")),
        ("Selesaii K7Q2M", OnIncident(Keyword.SELESAI, "K7Q2M", "")),
        ("BANTUAN K7Q2M massa bertambah", OnIncident(Keyword.BANTUAN, "K7Q2M", "massa bertambah")),
        ("bntn k7q2m", OnIncident(Keyword.BANTUAN, "K7Q2M", "")),
        ("OK K7Q2M", OnIncident(Keyword.OK, "K7Q2M", "")),
        ("oke k7q2m siap", OnIncident(Keyword.OK, "K7Q2M", "siap")),
        ("HADIR", Checkin("on_duty", "sehat")),
        ("hadir SAKIT", Checkin("unwell", "sakit")),
        ("hadr skt", Checkin("unwell", "sakit")),
        ("HDR libur", Checkin("off_duty", "libur")),
        ("hadir sehaat", Checkin("on_duty", "sehat")),
        ("STATUS hitung", SetPhase(Phase.COUNTING)),
        ("status voting", SetPhase(Phase.VOTING)),
        ("sts coblos", SetPhase(Phase.VOTING)),
        ("statuss tutup", SetPhase(Phase.CLOSED)),
        ("status persiapn", SetPhase(Phase.PREPARATION)),
    ],
)
def test_what_a_message_asks_for(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "help"),
        ("   ", "help"),
        ("LAPOR", "needs_text"),
        ("SELESAI", "needs_code"),
        ("selesai sudah aman", "needs_code"),
        ("OK", "needs_code"),
        ("OK K0Q1", "needs_code"),  # 0 and 1 are never in a code
        ("BANTUAN tolong", "needs_code"),
        ("STATUS", "needs_phase"),
        ("status entahlah", "needs_phase"),
        ("hadir mungkin", "help"),
    ],
)
def test_what_is_not_understood_says_how_to_write_it(text: str, why: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, NotUnderstood) and parsed.reply == why
    answer = reply(parsed.reply, **dict(parsed.values))
    assert len(answer) <= MAX_REPLY


def test_words_that_look_like_no_keyword_stay_report_text() -> None:
    for word in ("banjir", "ada", "api", "bantuin-nya", "hari", "stasiun", "okta"):
        assert keyword_of(word) is None, word


def test_every_reply_fits_one_sms_even_with_long_values() -> None:
    long = "x" * 400
    for key, template in _replies().items():
        if key == "labels":
            continue
        values = {name: long for _, name, _, _ in string.Formatter().parse(template) if name}
        values.setdefault("text", long)
        out = reply(key, **values)
        assert len(out) <= MAX_REPLY, key
    assert "banjir" in reply("report", tps="TPS 1", text="banjir " + long), "the start of the text is kept"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("081234567890", "+6281234567890"),
        ("0812-3456-7890", "+6281234567890"),
        ("+62 812 3456 7890", "+6281234567890"),
        ("+62 0812 3456 7890", "+6281234567890"),
        ("6281234567890", "+6281234567890"),
        ("(0812) 3456.7890", "+6281234567890"),
        ("81234567890", "+6281234567890"),
        ("0062 812 3456 7890", "+6281234567890"),
        ("+14155550123", "+14155550123"),
        ("", None),
        ("abc", None),
        ("12", None),
        ("+62 812 3456 7890 1234 5678", None),
    ],
)
def test_phone_numbers_become_e164(raw: str, e164: str | None) -> None:
    assert normalise_phone(raw) == e164


def test_routed_phones_are_the_sms_and_whatsapp_recipients_by_name() -> None:
    policy = {
        "alerts": {
            "recipients": [
                {"name": "kapolsek", "channel": "sms", "target": "+6281299990000", "levels": [1]},
                {"name": "kapolres", "channel": "whatsapp", "target": "+62 811 2222 3333", "levels": [2]},
                {"name": "ops", "channel": "telegram", "target": "-1001", "levels": [1]},
                {"name": "kapolsek-wa", "channel": "whatsapp", "target": "+6281299990000", "levels": [1]},
            ]
        }
    }
    assert routed_phones(policy) == {"+6281299990000": "kapolsek", "+6281122223333": "kapolres"}
    assert routed_phones(None) == {} and routed_phones({"alerts": None}) == {}
