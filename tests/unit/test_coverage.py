"""Coverage of a TPS by its personnel (services/dispatch/rules/duty.py, SPEC section 9)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.classify import Classifier
from services.dispatch.domain import Incident, Personnel, Tps
from services.dispatch.engine import Engine, Received
from services.dispatch.policy import DEFAULT_FILE, load_file
from services.dispatch.rules.presence import hours_on_duty, record_duty
from services.dispatch.store import MemoryStore
from siaga.clock import ManualClock
from siaga.events import FieldEvent

NOW = datetime(2024, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def engine() -> Engine:
    store = MemoryStore()
    store.tps_rows = {
        "T1": Tps(tps_id="T1", name="TPS 1", kecamatan="K", lat=-6.20, lon=106.30, phase="voting", assigned=3),
        "T2": Tps(tps_id="T2", name="TPS 2", kecamatan="K", lat=-6.21, lon=106.31, phase="voting", assigned=2),
        "T3": Tps(tps_id="T3", name="TPS 3", kecamatan="K", lat=-6.50, lon=106.60, phase="voting", assigned=1),
    }
    for pid, role, tps_id in (
        ("P1", "pam_tps", "T1"),
        ("L1", "linmas", "T1"),
        ("L2", "linmas", "T1"),
        ("R1", "reserve", "T2"),
        ("P2", "pam_tps", "T2"),
        ("R2", "reserve", "T3"),
    ):
        store.people[pid] = Personnel(pid, f"Name {pid}", role=role, tps_ids=[tps_id])
    return Engine(store, load_file(DEFAULT_FILE), Classifier.default(), ManualClock(NOW))


def tps(engine: Engine, tps_id: str) -> Tps:
    found = engine.store.tps(tps_id)
    assert found is not None
    return found


def checkin(engine: Engine, tps_id: str, pid: str, status: str) -> None:
    ev = FieldEvent(
        event_id=uuid.uuid4().hex,
        type="checkin",
        tps_id=tps_id,
        occurred_at=engine.clock.now(),
        payload={"personnel_id": pid, "status": status},
    )
    engine.apply(Received(event=ev, device_id="d", received_at=engine.clock.now()))


def coverage_incidents(engine: Engine) -> list[Incident]:
    store = engine.store
    assert isinstance(store, MemoryStore)
    return [i for i in store.incidents.values() if i.category == "coverage"]


def test_an_unwell_officer_leaves_the_tps_short_then_a_return_covers_it(engine: Engine) -> None:
    for tps_id, pid in (("T1", "P1"), ("T1", "L1"), ("T1", "L2"), ("T2", "R1"), ("T2", "P2"), ("T3", "R2")):
        checkin(engine, tps_id, pid, "on_duty")
    assert coverage_incidents(engine) == []
    assert engine.on_duty_at(tps(engine, "T1")) == (1, 3)

    checkin(engine, "T1", "P1", "unwell")  # two Linmas left: people 2, police 0
    (inc,) = coverage_incidents(engine)
    assert (inc.tps_id, inc.severity, inc.status) == ("T1", "medium", "open")
    facts = inc.facts
    assert (facts["on_duty"], facts["police_on_duty"]) == (2, 0)
    assert facts["dropped_out"]["personnel_id"] == "P1"
    suggested = [r["personnel_id"] for r in facts["replacements"]]
    assert suggested[:2] == ["R1", "R2"], "reserves first, nearest first; nobody of T1 itself"
    assert "P1" not in suggested and "L1" not in suggested

    checkin(engine, "T1", "L1", "off_duty")
    assert len(coverage_incidents(engine)) == 1, "one coverage incident while it stays short"
    checkin(engine, "T1", "L1", "on_duty")
    assert inc.status == "open", "people back to 3, police still 0"
    checkin(engine, "T1", "P1", "on_duty")
    assert inc.status == "resolved" and "covered again" in (inc.resolution or "")


def test_a_stale_check_in_does_not_count_and_the_start_of_the_day_opens_nothing(engine: Engine) -> None:
    checkin(engine, "T2", "R1", "on_duty")  # alone so far: short, but nobody dropped out
    assert coverage_incidents(engine) == []
    assert isinstance(engine.clock, ManualClock)
    engine.clock.advance(minutes=61)
    checkin(engine, "T2", "P2", "on_duty")
    assert engine.on_duty_at(tps(engine, "T2")) == (1, 1), "R1's hour-old check-in is stale"


def test_off_duty_after_the_tps_closed_is_the_end_of_the_day_not_a_gap(engine: Engine) -> None:
    for pid in ("P1", "L1", "L2"):
        checkin(engine, "T1", pid, "on_duty")
    tps(engine, "T1").phase = "closed"
    assert isinstance(engine.clock, ManualClock)
    engine.clock.advance(minutes=5)
    for pid in ("P1", "L1", "L2"):
        checkin(engine, "T1", pid, "off_duty")
    assert coverage_incidents(engine) == []


def stretches_of(points: list[tuple[float, str]]) -> list[list[str]]:
    """Stretches after check-ins at (hours after NOW, status), in order."""
    out: list[list[str]] = []
    was = False
    for hours, status in points:
        out = record_duty(out, on_duty=status == "on_duty", was_on_duty=was, at=NOW + timedelta(hours=hours))
        was = status == "on_duty"
    return out


def test_hours_on_duty_count_the_stretches_between_check_ins() -> None:
    every_quarter = [(h / 4, "on_duty") for h in range(0, 4 * 17 + 1)]  # 17 hours, every 15 minutes
    assert hours_on_duty(stretches_of(every_quarter), NOW + timedelta(hours=17)) == pytest.approx(17.0)
    sick = stretches_of([(0, "on_duty"), (1, "on_duty"), (1.5, "unwell"), (2.5, "on_duty"), (3.5, "on_duty")])
    assert hours_on_duty(sick, NOW + timedelta(hours=4)) == pytest.approx(2.0), "the unwell hour is not duty"
    gap = stretches_of([(0, "on_duty"), (1, "on_duty"), (3, "on_duty"), (4, "on_duty")])
    assert hours_on_duty(gap, NOW + timedelta(hours=4)) == pytest.approx(2.0), "two silent hours are not duty"
    assert hours_on_duty(stretches_of(every_quarter), NOW + timedelta(hours=40)) == pytest.approx(1.0), "24 h only"
    later = record_duty(stretches_of(every_quarter), on_duty=True, was_on_duty=False, at=NOW + timedelta(hours=50))
    assert len(later) == 1, "stretches over a day old are dropped"


def test_a_fatigued_person_is_flagged_and_sent_only_after_the_rested(engine: Engine) -> None:
    assert isinstance(engine.clock, ManualClock)
    for _ in range(4 * 17):  # R2 (T3, far) and R1 (T2, near) both on duty; R1 since 17 hours
        checkin(engine, "T2", "R1", "on_duty")
        engine.clock.advance(minutes=15)
    checkin(engine, "T2", "R1", "on_duty")
    checkin(engine, "T3", "R2", "on_duty")
    checkin(engine, "T1", "P1", "on_duty")
    checkin(engine, "T1", "L1", "on_duty")
    checkin(engine, "T1", "P1", "unwell")  # T1 short: a coverage incident with suggestions
    (inc,) = coverage_incidents(engine)
    ranked = engine.candidates(inc)
    by_id = {c.person.personnel_id: c for c in ranked}
    assert by_id["R1"].fatigued and by_id["R1"].hours_on_duty == pytest.approx(17.0)
    assert not by_id["R2"].fatigued
    assert [c.person.personnel_id for c in ranked].index("R2") < [c.person.personnel_id for c in ranked].index("R1")
    assert by_id["R1"].public(engine.clock.now())["fatigued"] is True
    order = engine.assign(inc.id, actor="operator:t", personnel_id=None)
    assert order["personnel_id"] != "R1", "nearest skips the fatigued while someone rested is free"


def test_someone_who_goes_silent_while_the_others_check_in_leaves_the_tps_short(engine: Engine) -> None:
    assert isinstance(engine.clock, ManualClock)
    for pid in ("P1", "L1", "L2"):
        checkin(engine, "T1", pid, "on_duty")
    for _ in range(4):  # the Linmas keep checking in every 15 minutes; the officer P1 does not
        engine.clock.advance(minutes=15)
        engine.tick()
        checkin(engine, "T1", "L1", "on_duty")
        checkin(engine, "T1", "L2", "on_duty")
    assert coverage_incidents(engine) == [], "P1 is stale only after 60 minutes"
    engine.clock.advance(minutes=1)
    engine.tick()
    (inc,) = coverage_incidents(engine)
    assert inc.tps_id == "T1" and inc.status == "open"
    assert inc.facts["dropped_out"]["personnel_id"] == "P1" and inc.facts["dropped_out"]["status"] == "silent"
    assert (inc.facts["police_on_duty"], inc.facts["on_duty"]) == (0, 2)
    assert "P1 went silent" in inc.why[0]
    assert tps(engine, "T1").checkins["P1"]["lapsed"] is True
    engine.clock.advance(minutes=5)
    engine.tick()
    assert len(coverage_incidents(engine)) == 1, "a lapse is acted on once"

    checkin(engine, "T1", "P1", "on_duty")  # back: covered again
    assert inc.status == "resolved"
    assert "lapsed" not in tps(engine, "T1").checkins["P1"]


def test_a_post_where_everyone_falls_silent_is_a_silent_post_not_a_coverage_gap(engine: Engine) -> None:
    assert isinstance(engine.clock, ManualClock)
    for pid in ("P1", "L1", "L2"):
        checkin(engine, "T1", pid, "on_duty")
    engine.clock.advance(minutes=61)
    engine.tick()
    assert coverage_incidents(engine) == []
    assert all(info.get("lapsed") for info in tps(engine, "T1").checkins.values())


def test_the_tps_frame_counts_unwell_off_duty_fatigued_lapsed_and_days_on_duty(engine: Engine) -> None:
    from services.dispatch.rules.base import tps_public

    assert isinstance(engine.clock, ManualClock)
    checkin(engine, "T1", "P1", "on_duty")  # 17:00 WIB on the 27th
    engine.clock.advance(hours=24)
    for _ in range(4 * 17):  # from 17:00 WIB on the 28th, P1 is on duty for 17 hours, past midnight
        checkin(engine, "T1", "P1", "on_duty")
        engine.clock.advance(minutes=15)
    checkin(engine, "T1", "P1", "on_duty")
    checkin(engine, "T1", "L1", "unwell")
    checkin(engine, "T1", "L2", "off_duty")
    t1 = tps(engine, "T1")
    now = engine.clock.now()
    frame = tps_public(t1, [], now)
    assert (frame.unwell, frame.off_duty, frame.fatigued, frame.lapsed) == (1, 1, 1, 0)
    assert frame.duty_days == 3, "P1 checked in on duty on three dates (WIB)"
    assert engine.store.personnel("P1").duty_days == ["2024-11-27", "2024-11-28", "2024-11-29"]  # type: ignore[union-attr]
    later = tps_public(t1, [], now + timedelta(minutes=61))
    assert (later.fatigued, later.lapsed) == (0, 1), "an hour later P1 is no longer checked in: lapsed"
    assert "lapsed" not in tps_public(tps(engine, "T3"), [], now).model_dump(mode="json"), "zeros are left out"
