"""Silences through the API (SPEC section 5), on the composed dev app on a ManualClock: a silence holds
a medium incident's alerts and shows it on the incident; ending it sends them once; a critical
incident is never held; what a silence may not be is refused with the field named. And the Telegram
`/silence <kecamatan> <minutes> <reason>` command, against a loopback Bot API.

Alerts are read on siaga.alerts, as the notifier reads them (operator_helpers.Tap).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.notifier.telegram import parse_silence
from siaga.clock import ManualClock
from tests.fakes.providers import FakeTelegram
from tests.integration.operator_helpers import Tap, clocked_rig, get_incident, own_tps, report, tick, z
from tests.security import TELEGRAM_CHAT, TELEGRAM_SECRET, Rig, running_rig, tps_csv

NOW = datetime(2024, 2, 14, 9, 0, tzinfo=UTC)
OWN_TPS = own_tps("SL", "Senyap", 4)  # kecamatan Senyap1..Senyap4, one TPS each
EQUIPMENT = {"category": "equipment", "description": "listrik padam, genset belum menyala"}
CLASH = {"category": "violence", "description": "bentrok dua kubu, satu orang dibacok celurit"}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    async with clocked_rig(tmp_path, NOW, OWN_TPS) as opened:
        yield opened


async def create(r: Rig, body: dict[str, Any], principal: str = "operator") -> Any:
    return await r.client.post("/v1/admin/silences", json=body, headers=r.headers(principal))


def power_cut(clock: ManualClock, minutes: float = 60, **match: str) -> dict[str, Any]:
    return {"match": match, "ends_at": z(clock.now() + timedelta(minutes=minutes)), "reason": "pemadaman PLN terjadwal"}


async def test_a_silence_holds_a_medium_incidents_alerts_and_ending_it_sends_them_once(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        made = await create(r, power_cut(clock, 120, kecamatan="Senyap1"))
        assert made.status_code == 201, made.text
        sil = made.json()
        assert (sil["state"], sil["created_by"]) == ("active", "operator:sec-operator")
        assert sil["match"] == {
            "provinsi": None,
            "kabupaten": None,
            "kecamatan": "Senyap1",
            "tps_id": None,
            "category": None,
        }
        iid = await report(r, token, "SL1", **EQUIPMENT)  # low: 30 minutes on site
        other = await report(r, token, "SL2", **EQUIPMENT)  # another kecamatan: not silenced
        clock.advance(minutes=31)
        await tick(r)
        doc = await get_incident(r, iid)
        assert (doc["status"], doc["level"]) == ("escalated", 1), "it still escalates and shows"
        assert (doc["held_alerts"], doc["silenced_by"]) == (1, [sil["id"]])
        held = [e for e in doc["timeline"] if e["action"] == "alert_silenced"]
        assert held and held[0]["detail"]["silence_id"] == sil["id"]
        assert held[0]["detail"]["silence_reason"] == "pemadaman PLN terjadwal"
        assert await alerts.of(iid) == [], "nothing paged for the silenced incident"
        assert [a["level"] for a in await alerts.of(other)] == [1], "the other kecamatan is paged"

        listed = await r.client.get("/v1/admin/silences?state=active", headers=r.headers("viewer"))
        assert listed.status_code == 403, "a viewer neither lists nor makes silences"
        listed = await r.client.get("/v1/admin/silences?state=active", headers=r.headers("operator"))
        assert [s["id"] for s in listed.json()] == [sil["id"]]

        ended = await r.client.delete(f"/v1/admin/silences/{sil['id']}", headers=r.headers("admin"))
        assert ended.status_code == 200, ended.text
        assert (ended.json()["state"], ended.json()["ended_by"]) == ("ended", "admin:sec-admin")
        await tick(r)
        sent = await alerts.of(iid)
        assert [(a["level"], a["audience"]) for a in sent] == [(1, "police")], "the held alert, once"
        doc = await get_incident(r, iid)
        assert (doc["held_alerts"], doc["silenced_by"]) == (0, [])
        assert any(e["action"] == "alerts_released" for e in doc["timeline"])
        clock.advance(seconds=5)
        await tick(r)
        assert len(await alerts.of(iid)) == 1, "released once"

        again = await r.client.delete(f"/v1/admin/silences/{sil['id']}", headers=r.headers("operator"))
        assert again.status_code == 409 and "ended at" in again.json()["detail"]
        missing = await r.client.delete("/v1/admin/silences/SIL-NOPE", headers=r.headers("operator"))
        assert missing.status_code == 404


async def test_a_silence_that_runs_out_releases_and_critical_is_never_held(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        assert (await create(r, power_cut(clock, 40, kecamatan="Senyap3"))).status_code == 201
        clash = await report(r, token, "SL3", **CLASH)
        assert (await get_incident(r, clash))["severity"] == "critical"
        assert sorted(a["level"] for a in await alerts.of(clash) if a["audience"] == "police") == [1, 2]

        assert (await create(r, power_cut(clock, 40, tps_id="SL4", category="equipment"))).status_code == 201
        iid = await report(r, token, "SL4", **EQUIPMENT)
        clock.advance(minutes=31)
        await tick(r)
        assert await alerts.of(iid) == []
        clock.advance(minutes=10)  # the silence's end passes, and level 1's acknowledgement time
        await tick(r)
        police = [a["level"] for a in await alerts.of(iid) if a["audience"] == "police"]
        assert police == [1, 2], "the held level 1 first, then level 2 as it falls due"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"match": {}}, "match", "a silence of everything is refused"),
        ({"match": {"kecamatan": "Atlantis"}}, "match.kecamatan", "not in the registry: Atlantis"),
        ({"match": {"tps_id": "NOPE9"}}, "match.tps_id", "not in the registry: NOPE9"),
        ({"match": {"tps_id": "SL1", "kecamatan": "Senyap2"}}, "match.tps_id", "is in kecamatan Senyap1, not Senyap2"),
        ({"match": {"kecamatan": "Senyap1"}, "minutes": 25 * 60}, "ends_at", "at most 24 hours"),
        ({"match": {"kecamatan": "Senyap1"}, "starts_in": 30, "minutes": -20}, "ends_at", "must be after starts_at"),
        ({"match": {"kecamatan": "Senyap1"}, "minutes": -5}, "ends_at", "must be after starts_at"),
        ({"match": {"kecamatan": "Senyap1"}, "starts_in": -60, "minutes": 30}, "ends_at", "already past"),
        ({"match": {"category": "meteor"}}, "match.category", ""),
        ({"match": {"kecamatan": "Senyap1"}, "reason": ""}, "reason", ""),
        ({"match": {"kecamatan": "Senyap1"}, "ends_at": "tomorrow"}, "ends_at", "RFC 3339"),
    ],
)
async def test_what_a_silence_may_not_be_is_refused_naming_the_field(
    rig: tuple[Rig, ManualClock, str], body: dict[str, Any], field: str, words: str
) -> None:
    r, clock, _ = rig
    starts = clock.now() + timedelta(minutes=body.pop("starts_in", 0))
    doc = {
        "reason": "uji",
        "starts_at": z(starts),
        "ends_at": z(starts + timedelta(minutes=body.pop("minutes", 60))),
    } | body
    got = await create(r, doc)
    assert got.status_code == 422, got.text
    problems = got.json()["detail"]
    assert any(p["field"].endswith(field) and words in p["message"] for p in problems), problems
    listed = await r.client.get("/v1/admin/silences", headers=r.headers("operator"))
    assert listed.json() == [], "nothing stored"


# -- the Telegram command -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("/silence Cikande 120 pemadaman listrik PLN", ("Cikande", 120, "pemadaman listrik PLN")),
        ("/silence@SiagaBot Pulo Ampel 90 genset servis", ("Pulo Ampel", 90, "genset servis")),
        ("/SILENCE  Anyar   30   uji\ncoba", ("Anyar", 30, "uji\ncoba")),
        ("/silence Cikande sembilan puluh uji", "usage"),
        ("/silence Cikande 120", "usage"),
        ("/silence", "usage"),
        ("/silenced Cikande 120 x", None),
        ("tolong silence Cikande", None),
    ],
)
def test_the_silence_command_is_parsed(text: str, parsed: tuple[str, int, str] | str | None) -> None:
    got = parse_silence(text)
    if parsed == "usage":
        assert isinstance(got, str) and got.startswith("usage: /silence <kecamatan> <minutes> <reason>")
    else:
        assert got == parsed


def chat_message(chat_id: str, text: str) -> dict[str, Any]:
    return {
        "update_id": 9,
        "message": {
            "message_id": 3,
            "date": 0,
            "chat": {"id": int(chat_id), "type": "group"},
            "from": {"id": 42, "is_bot": False, "first_name": "Sari", "username": "kasiops"},
            "text": text,
        },
    }


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()
    fake.start()
    yield fake
    fake.stop()


async def test_an_operator_chat_silences_a_kecamatan_with_a_telegram_command(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    clock = ManualClock(NOW)
    tps = [{**row, "kecamatan": "Pulo Ampel"} for row in own_tps("PA", "x", 2)]
    fake_api = {"telegram_api_base": telegram.url, "telegram_bot_token": telegram.token, "webhook_url": None}
    async with running_rig(tmp_path, clock=clock, with_incident=False, **fake_api) as r:
        await r.admin("POST", "/v1/admin/tps/import", content=tps_csv(tps), headers={"Content-Type": "text/csv"})
        hook = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}

        async def say(text: str, chat: str = TELEGRAM_CHAT) -> Any:
            return await r.client.post("/v1/telegram/webhook", json=chat_message(chat, text), headers=hook)

        made = await say("/silence Pulo Ampel 90 pemadaman listrik PLN")
        assert made.status_code == 200 and made.json()["ok"] is True, made.text
        sil = made.json()["silence"]
        assert (sil["match"]["kecamatan"], sil["reason"], sil["created_by"]) == (
            "Pulo Ampel",
            "pemadaman listrik PLN",
            "telegram:kasiops",
        )
        assert sil["ends_at"] == z(NOW + timedelta(minutes=90)) and sil["state"] == "active"
        listed = await r.client.get("/v1/admin/silences", headers=r.headers("operator"))
        assert [s["id"] for s in listed.json()] == [sil["id"]]

        for text, words in (
            ("/silence Pulo Ampel sembilan puluh", "usage: /silence"),
            ("/silence Atlantis 30 uji", "not in the registry: Atlantis"),
            ("/silence Pulo Ampel 2000 uji", "at most 24 hours"),
        ):
            refused = await say(text)
            assert refused.status_code == 200 and refused.json()["ok"] is False, refused.text
            assert words in refused.json()["refused"]
        stranger = await say("/silence Pulo Ampel 30 uji", chat="-999")
        assert stranger.status_code == 403 and "can_act" in stranger.json()["detail"]
        listed = await r.client.get("/v1/admin/silences", headers=r.headers("operator"))
        assert len(listed.json()) == 1, "nothing refused was stored"

    replies = [m["text"] for m in telegram.sent_messages()]
    assert replies[0].startswith(f"🔇 {sil['id']}: alert Kec. Pulo Ampel ditahan")
    assert any(t.startswith("usage: /silence") for t in replies)
    assert any("Silence ditolak" in t and "Atlantis" in t for t in replies)
    assert any("tidak berwenang" in t for t in replies), "the stranger chat is told no"
