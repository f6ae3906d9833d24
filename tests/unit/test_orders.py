"""Field orders in the pure engine (services/dispatch/rules/orders.py), on a MemoryStore and a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.classify import Classifier
from services.dispatch.domain import Incident, Personnel, Tps
from services.dispatch.engine import Engine, NotAllowed
from services.dispatch.policy import EscalationPolicy
from services.dispatch.rules.orders import UnknownPerson, haversine_km
from services.dispatch.store import MemoryStore
from siaga import topics
from siaga.clock import ManualClock

NOW = datetime(2024, 11, 27, 9, 0, tzinfo=UTC)


def test_haversine_knows_a_degree_of_latitude() -> None:
    assert haversine_km((0.0, 0.0), (1.0, 0.0)) == pytest.approx(111.2, abs=0.1)
    assert haversine_km((-6.2, 106.3), (-6.2, 106.3)) == 0.0


@pytest.fixture
def engine() -> Engine:
    store = MemoryStore()
    store.tps_rows = {
        "A": Tps(tps_id="A", name="TPS A", kecamatan="K", lat=-6.20, lon=106.30),
        "B": Tps(tps_id="B", name="TPS B", kecamatan="K", lat=-6.25, lon=106.30),
        "C": Tps(tps_id="C", name="TPS C", kecamatan="K", lat=-6.40, lon=106.30),
    }
    fresh = NOW - timedelta(minutes=10)
    for pid, tps_id, status in (("near", "B", "on_duty"), ("far", "C", "on_duty"), ("ill", "A", "unwell")):
        store.people[pid] = Personnel(pid, pid, role="pam_tps", tps_ids=[tps_id], status=status, last_checkin_at=fresh)
    store.incidents["I1"] = Incident(
        id="I1", kecamatan="K", category="violence", severity="high", opened_at=NOW, received_at=NOW,
        updated_at=NOW, tps_id="A", level=1, status="escalated",
    )  # fmt: skip
    return Engine(store, EscalationPolicy(order_ack_minutes=3), Classifier.default(), ManualClock(NOW))


def test_nearest_then_resend_once_then_unanswered(engine: Engine) -> None:
    store = engine.store
    assert isinstance(store, MemoryStore) and isinstance(engine.clock, ManualClock)
    assert [c.person.personnel_id for c in engine.candidates(store.incidents["I1"])] == ["near", "far"]
    order = engine.assign("I1", actor="operator:t", personnel_id=None, eta_minutes=7)
    assert order["personnel_id"] == "near"
    sent = store.emitted(topics.FIELD_ORDERS)
    assert [(m["kind"], m["target"]) for m in sent] == [
        ("assignment", {"kind": "person", "id": "near"}),
        ("help_on_the_way", {"kind": "tps", "id": "A"}),
    ]
    engine.clock.advance(minutes=3)
    engine.tick()
    assert store.incidents["I1"].orders[0]["state"] == "resent"
    assert [m["attempt"] for m in store.emitted(topics.FIELD_ORDERS) if m["kind"] == "assignment"] == [1, 2]
    engine.clock.advance(minutes=3)
    engine.tick()
    engine.clock.advance(minutes=30)
    engine.tick()
    assert store.incidents["I1"].orders[0]["state"] == "unanswered"
    assert len(store.emitted(topics.FIELD_ORDERS)) == 3, "never a third send"
    # The near one is taken now: the next nearest goes; then nobody is left.
    assert engine.assign("I1", actor="operator:t", personnel_id=None)["personnel_id"] == "far"
    with pytest.raises(NotAllowed, match="nobody"):
        engine.assign("I1", actor="operator:t", personnel_id=None)
    with pytest.raises(NotAllowed, match="unwell"):
        engine.assign("I1", actor="operator:t", personnel_id="ill")
    with pytest.raises(UnknownPerson):
        engine.assign("I1", actor="operator:t", personnel_id="ghost")
    engine.acknowledge_order("I1", order_id=order["order_id"], actor="device:d1")
    assert store.incidents["I1"].orders[0]["state"] == "acknowledged"
    assert [e.action for e in store.entries["I1"]].count("order_acknowledged") == 1
