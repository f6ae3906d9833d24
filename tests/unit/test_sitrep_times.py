"""When scheduled sitreps fall due, and the short message they make (services/dispatch/notifier/sitreps.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.dispatch.notifier.routing import AlertRouting, Recipient
from services.dispatch.notifier.sitreps import WIB, due_moments, sitrep_id, sitrep_message

TIMES = ["10:00", "13:00", "17:00", "21:00"]


def wib(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 11, day, hour, minute, tzinfo=WIB)


def test_due_moments_are_the_times_in_the_window_in_wib_across_midnight() -> None:
    assert due_moments(TIMES, wib(27, 9, 59), wib(27, 10)) == [wib(27, 10)]
    assert due_moments(TIMES, wib(27, 10), wib(27, 12, 59)) == [], "the window's start is excluded"
    assert due_moments(TIMES, wib(27, 20), wib(28, 13)) == [wib(27, 21), wib(28, 10), wib(28, 13)]
    # 02:59 UTC is 09:59 WIB: the times are local, whatever the clock's zone.
    assert due_moments(TIMES, datetime(2024, 11, 27, 2, 59, tzinfo=UTC), wib(27, 10, 1)) == [wib(27, 10)]
    assert sitrep_id(datetime(2024, 11, 27, 3, 0, tzinfo=UTC)) == "2024-11-27T10:00+07:00"


def test_sitrep_times_default_to_the_spec_and_must_be_times_of_day() -> None:
    assert AlertRouting().sitrep_times == TIMES
    assert AlertRouting(sitrep_times=["21:00", "07:30", "21:00"]).sitrep_times == ["07:30", "21:00"]
    for bad in ("24:00", "7:30", "10:60", "noon", "10:00:00"):
        with pytest.raises(ValidationError, match="not a time of day"):
            AlertRouting(sitrep_times=[bad])


def test_a_recipient_may_get_only_sitreps_but_not_nothing() -> None:
    only = Recipient(name="bawaslu", channel="webhook", target="https://example.org/h", sitrep=True)
    assert AlertRouting(recipients=[only]).sitrep_recipients() == [only]
    with pytest.raises(ValidationError, match="gets nothing"):
        Recipient(name="idle", channel="webhook", target="https://example.org/h")


def doc(**totals: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tps": {"total": 12, "by_state": {"normal": 9, "open": 2, "escalated": 1, "silent": 0, "closed": 0}},
        "incidents": {"total": 7, "by_status": {"open": 2, "escalated": 1, "acknowledged": 1, "resolved": 3}},
        "resolved_on_site": 2,
        "median_ack_s": 240.0,
        "median_resolve_s": 1320.0,
        "coverage": {"assigned": 24, "checked_in": 23, "share": 0.958},
        "escorts_in_transit": 0,
    }
    base.update(totals)
    escalation = {"id": "INC-1", "code": "K7Q2", "category": "violence", "kecamatan": "Ciruas", "age_s": 2100}
    return {"at": "2024-11-27T03:00:00Z", "totals": base, "open_escalations": [escalation]}


def test_the_message_says_the_moment_the_figures_and_the_oldest_escalation() -> None:
    m = sitrep_message(doc(), language="id", public_url="https://siaga.example", where=None)
    text = m.plain()
    assert text.splitlines()[0] == "SITREP 10:00 WIB 27-11-2024 · semua wilayah"
    assert "TPS: 12 (9 normal, 2 terbuka, 1 eskalasi)" in text
    assert "Insiden terbuka: 4 (eskalasi 1) dari 7" in text
    assert "Selesai: 3 (di tempat 2)" in text and "Median tanggap / selesai: 4 mnt / 22 mnt" in text
    assert "Cakupan personel: 96% (23/24)" in text and "Kotak suara" not in text
    assert "K7Q2 Kekerasan Ciruas 35 mnt" in text
    assert m.link == "https://siaga.example/v1/reports/sitrep?at=2024-11-27T03%3A00%3A00Z&by=kabupaten&format=pdf"
    assert m.sms_text().startswith("SITREP 10:00 WIB") and "K7Q2" in m.sms_text() and len(m.sms_text()) <= 320
    assert len(m.whatsapp_values) == 5 and all("\n" not in v for v in m.whatsapp_values)
    en = sitrep_message(doc(escorts_in_transit=3), language="en", public_url="", where="Ciruas").plain()
    assert en.startswith("SITREP 10:00 WIB 27-11-2024 · Ciruas") and "Ballot boxes in transit: 3" in en
    assert "Full report" not in en, "no public URL: no link"
