"""Ballot-box escorts in the pure engine (services/dispatch/rules/escorts.py, SPEC section 9)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.dispatch.classify import Classifier
from services.dispatch.domain import Tps
from services.dispatch.engine import Engine, Received, tps_public
from services.dispatch.policy import DEFAULT_FILE, load_file
from services.dispatch.store import MemoryStore
from siaga import topics
from siaga.clock import ManualClock
from siaga.events import EscortDeparted, FieldEvent

NOW = datetime(2024, 11, 27, 19, 0, tzinfo=UTC)


def event(tps_id: str, type_: str, payload: dict[str, Any], at: datetime = NOW) -> Received:
    ev = FieldEvent(event_id=uuid.uuid4().hex, type=type_, tps_id=tps_id, occurred_at=at, payload=payload)
    return Received(event=ev, device_id="dev-1", received_at=at)


def departed(boxes: list[str], minutes: float = 30, at: datetime = NOW) -> Received:
    payload = {"box_ids": boxes, "to": "PPK Cikande", "personnel_ids": ["POL-1", "LIN-2"], "expected_minutes": minutes}
    return event("T1", "escort.departed", payload, at)


def arrived(boxes: list[str], at: datetime) -> Received:
    return event("T1", "escort.arrived", {"box_ids": boxes, "at": "PPK Cikande", "personnel_ids": ["PPK-9"]}, at)


@pytest.fixture
def engine() -> Engine:
    store = MemoryStore()
    store.tps_rows["T1"] = Tps(tps_id="T1", name="TPS 1", kecamatan="Cikande", lat=-6.2, lon=106.3)
    return Engine(store, load_file(DEFAULT_FILE), Classifier.default(), ManualClock(NOW))


def test_the_policy_file_says_the_grace_and_the_severity() -> None:
    policy = load_file(DEFAULT_FILE)
    assert policy.escort_grace_minutes == 15
    assert policy.severity.base["escort_overdue"] == "high"


def overdue(store: MemoryStore) -> list[Any]:
    return [i for i in store.incidents.values() if i.category == "escort_overdue"]


def test_an_escort_in_time_opens_nothing_and_leaves_its_custody_chain(engine: Engine) -> None:
    store, clock = engine.store, engine.clock
    assert isinstance(store, MemoryStore) and isinstance(clock, ManualClock)
    engine.apply(departed(["PPWP-1", "DPR-1"]))
    shown = tps_public(store.tps_rows["T1"], [], NOW)
    assert [(e.box_ids, e.to, e.overdue) for e in shown.escorts] == [(["PPWP-1", "DPR-1"], "PPK Cikande", False)]
    assert shown.escorts[0].expected_at == NOW + timedelta(minutes=30)
    clock.advance(minutes=44, seconds=59)  # 30 expected + 15 grace, less a second
    engine.tick()
    assert overdue(store) == []
    engine.apply(arrived(["PPWP-1", "DPR-1"], clock.now()))
    clock.advance(hours=2)
    engine.tick()
    assert overdue(store) == [], "arrived: no timer left"
    (chain,) = store.tps_rows["T1"].escorts
    assert chain["state"] == "arrived" and chain["personnel_ids"] == ["POL-1", "LIN-2"]
    assert (chain["from_tps"], chain["arrived_to"], chain["received_by"]) == ("T1", "PPK Cikande", ["PPK-9"])
    assert chain["departed_at"] < chain["arrived_at"]
    assert tps_public(store.tps_rows["T1"], [], clock.now()).escorts == [], "no longer in transit"


def test_a_late_escort_opens_escort_overdue_that_climbs_and_its_arrival_resolves_it(engine: Engine) -> None:
    store, clock = engine.store, engine.clock
    assert isinstance(store, MemoryStore) and isinstance(clock, ManualClock)
    engine.apply(departed(["PPWP-1", "DPD-1"], minutes=20))
    clock.advance(minutes=35)
    engine.tick()
    (inc,) = overdue(store)
    assert (inc.severity, inc.tps_id, inc.level, inc.status) == ("high", "T1", 0, "open")
    assert "PPWP-1" in inc.description and "PPK Cikande" in inc.description
    actions = [e.action for e in store.entries[inc.id]]
    assert actions == ["opened", "escort_departed", "stakeholders_told"]
    custody = store.entries[inc.id][1].detail
    assert custody["box_ids"] == ["PPWP-1", "DPD-1"] and custody["personnel_ids"] == ["POL-1", "LIN-2"]
    assert custody["to"] == "PPK Cikande" and custody["from_tps"] == "T1"
    told = [a for a in store.emitted(topics.ALERTS) if a["incident_id"] == inc.id and a["audience"] == "stakeholder"]
    assert {a["stakeholder"] for a in told} == {"kpu", "bawaslu"}, "opened at high: KPU and Bawaslu at once"
    engine.tick()
    assert len(overdue(store)) == 1, "one incident per late escort"
    assert tps_public(store.tps_rows["T1"], [inc], clock.now()).escorts[0].overdue

    clock.advance(minutes=6)  # past the 5-minute on-site window of high: it follows the ladder
    engine.tick()
    assert (inc.level, inc.status) == (1, "escalated")

    engine.apply(arrived(["PPWP-1"], clock.now()))
    assert inc.status == "escalated", "one box of two is not the escort"
    engine.apply(arrived(["DPD-1"], clock.now()))
    assert inc.status == "resolved" and "PPK Cikande" in (inc.resolution or "")
    actions = [e.action for e in store.entries[inc.id]]
    assert actions[-3:] == ["escort_partly_arrived", "escort_arrived", "resolved"]
    assert store.entries[inc.id][-2].detail["late_minutes"] == pytest.approx(21.0)


def test_a_redelivered_departure_is_one_escort(engine: Engine) -> None:
    store = engine.store
    assert isinstance(store, MemoryStore)
    once = departed(["B-1"])
    engine.apply(once)
    engine.apply(once)
    assert len(store.tps_rows["T1"].escorts) == 1


def test_boxes_arriving_with_no_departure_are_kept_as_a_gap_in_the_chain(engine: Engine) -> None:
    store = engine.store
    assert isinstance(store, MemoryStore)
    engine.apply(arrived(["X-9"], NOW))
    (chain,) = store.tps_rows["T1"].escorts
    assert chain["departed_at"] is None and "no departure" in chain["note"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"box_ids": [], "to": "PPK", "expected_minutes": 10}, "box_ids"),
        ({"box_ids": ["A"], "to": "PPK", "expected_minutes": -5}, "expected_minutes"),
        ({"box_ids": ["A"], "to": "PPK", "expected_minutes": 0}, "expected_minutes"),
        ({"box_ids": ["A", "A"], "to": "PPK", "expected_minutes": 10}, "box_ids"),
        ({"box_ids": ["A"], "to": "", "expected_minutes": 10}, "to"),
        ({"box_ids": ["A"], "expected_minutes": 10}, "to"),
    ],
)
def test_a_bad_escort_names_its_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        EscortDeparted.model_validate(payload)
    assert exc.value.errors()[0]["loc"][0] == field


def test_an_escort_is_reported_by_its_own_tps() -> None:
    payload = {"box_ids": ["A"], "to": "PPK", "expected_minutes": 10, "from_tps": "T2"}
    with pytest.raises(ValidationError, match="from_tps"):
        FieldEvent(event_id="e", type="escort.departed", tps_id="T1", occurred_at=NOW, payload=payload)
    FieldEvent(event_id="e", type="escort.departed", tps_id="T1", occurred_at=NOW, payload=payload | {"from_tps": "T1"})
