"""Dispatch on a real database (SQLite and PostgreSQL): transactions, outbox, restarts, poison, audit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlmodel import Session, select

from services.dispatch import domain
from services.dispatch.service import Dispatch
from siaga import topics
from siaga.audit import verify
from siaga.bus import Record
from siaga.bus.memory import MemoryBus
from siaga.clock import ManualClock, iso
from siaga.models import Incident, Outbox
from siaga.runtime import Context, make_context
from siaga.settings import Settings


class Rig:
    def __init__(self, db_url: str) -> None:
        self.clock = ManualClock()
        self.bus = MemoryBus()
        self.db_url = db_url
        self.ctx = self.context()
        self.offset = 0

    def context(self) -> Context:
        return make_context(Settings(database_url=self.db_url), bus=self.bus, clock=self.clock)

    def dispatch(self) -> Dispatch:
        return Dispatch(self.context())

    def record(
        self, type_: str, tps_id: str, payload: dict[str, Any], *, event_id: str | None = None, ago_min: float = 0
    ) -> Record:
        self.offset += 1
        ev = {
            "event_id": event_id or str(uuid.uuid4()),
            "type": type_,
            "tps_id": tps_id,
            "occurred_at": iso(self.clock.now() - timedelta(minutes=ago_min)),
            "payload": payload,
        }
        value = orjson.dumps({"event": ev, "device_id": "d1", "received_at": iso(self.clock.now())})
        return Record(topics.FIELD_EVENTS, tps_id, value, 0, self.offset)

    def incidents(self) -> list[Incident]:
        with Session(self.ctx.engine) as s:
            return list(s.exec(select(Incident)).all())

    def published(self, topic: str) -> list[dict[str, Any]]:
        parts = self.bus._topic(topic).partitions
        return [orjson.loads(r.value) for p in parts for r in p]


async def _seed(d: Dispatch, *ids: str) -> None:
    def add(engine: Any) -> None:
        for t in ids:
            engine.announce_tps(domain.Tps(tps_id=t, name=f"TPS {t}", kecamatan="Kopo", lat=-6.1, lon=106.2))

    await d.transact(add)


async def test_report_is_stored_and_announced_through_the_outbox(db_url: str) -> None:
    rig = Rig(db_url)
    d = rig.dispatch()
    await _seed(d, "T1")
    await d.handle([rig.record("incident.reported", "T1", {"description": "Kotak suara rusak"})])
    [inc] = rig.incidents()
    assert (inc.tps_id, inc.category, inc.severity, inc.level) == ("T1", "logistics", "medium", 0)
    updates = [m for m in rig.published(topics.INCIDENT_UPDATES) if m["type"] == "incident"]
    assert updates[-1]["incident"]["id"] == inc.id and updates[-1]["incident"]["version"] == inc.version
    await d.relay.maintain()  # published rows are deleted by the next transaction, or by this
    with Session(rig.ctx.engine) as s:
        assert s.exec(select(Outbox)).all() == []


async def test_redelivered_event_changes_nothing(db_url: str) -> None:
    rig = Rig(db_url)
    d = rig.dispatch()
    await _seed(d, "T1")
    rec = rig.record("incident.reported", "T1", {"description": "genset mati", "category": "equipment"})
    await d.handle([rec])
    version = rig.incidents()[0].version
    await d.handle([rec])
    [inc] = rig.incidents()
    assert inc.reports == 1 and inc.version == version


async def test_pending_deadline_survives_a_restart_and_fires_once(db_url: str) -> None:
    rig = Rig(db_url)
    first = rig.dispatch()
    await _seed(first, "T1")
    await first.handle(
        [rig.record("incident.reported", "T1", {"description": "Kotak suara belum tiba", "category": "logistics"})]
    )
    del first  # the process is gone; only the database remains
    rig.clock.advance(minutes=16)
    second = rig.dispatch()
    await second.transact(lambda e: e.tick())
    await second.transact(lambda e: e.tick())
    [inc] = rig.incidents()
    assert (inc.status, inc.level) == ("escalated", 1)
    police = [a for a in rig.published(topics.ALERTS) if a["audience"] == "police"]
    assert [(a["level"], a["reason"]) for a in police] == [(1, "window_expired")]


async def test_committed_but_unpublished_messages_go_out_after_a_crash(db_url: str) -> None:
    rig = Rig(db_url)
    d = rig.dispatch()
    await _seed(d, "T1")
    rig.bus.available = False  # the bus is down: the change commits, its announcement waits in the outbox
    await d.handle([rig.record("incident.reported", "T1", {"description": "genset mati", "category": "equipment"})])
    with Session(rig.ctx.engine) as s:
        waiting = len(s.exec(select(Outbox)).all())
    assert waiting > 0
    rig.bus.available = True
    restarted = rig.dispatch()
    await restarted.relay.flush()
    with Session(rig.ctx.engine) as s:
        assert s.exec(select(Outbox)).all() == []
    assert any(m["type"] == "incident" for m in rig.published(topics.INCIDENT_UPDATES))


async def test_poison_message_goes_to_dead_letter_and_the_consumer_goes_on(db_url: str) -> None:
    rig = Rig(db_url)
    d = rig.dispatch()
    await _seed(d, "T1")
    await d.start()
    try:
        await rig.bus.publish(topics.FIELD_EVENTS, "T1", b"{not an event")
        await rig.bus.publish(
            topics.FIELD_EVENTS, "T1", rig.record("incident.resolved", "T1", {"report_id": "never-seen"}).value
        )
        good = rig.record("incident.reported", "T1", {"description": "genset mati", "category": "equipment"})
        await rig.bus.publish(topics.FIELD_EVENTS, "T1", good.value)
        for _ in range(100):
            if rig.incidents() and len(rig.published(topics.DEAD_LETTER)) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await d.stop()
    dead = rig.published(topics.DEAD_LETTER)
    assert len(dead) == 2
    assert "ValidationError" in dead[0]["reason"] and dead[0]["value"] == "{not an event"
    assert "never-seen" in dead[1]["reason"]
    assert len(rig.incidents()) == 1


async def test_audit_chain_detects_a_modified_row(db_url: str) -> None:
    rig = Rig(db_url)
    d = rig.dispatch()
    await _seed(d, "T1")
    rid = str(uuid.uuid4())
    await d.handle(
        [rig.record("incident.reported", "T1", {"description": "genset mati", "category": "equipment"}, event_id=rid)]
    )
    await d.handle([rig.record("incident.update", "T1", {"report_id": rid, "note": "teknisi datang"})])
    iid = rig.incidents()[0].id
    await d.start()  # an operator's action is a command: the running owner applies it
    try:
        await d.acknowledge(iid, actor="operator:ops")
    finally:
        await d.stop()
    assert verify(rig.ctx.engine).ok
    with rig.ctx.engine.begin() as c:
        c.execute(
            text(
                "UPDATE timelineentry SET actor = 'operator:someone-else' "
                "WHERE incident_id = :i AND action = 'acknowledged'"
            ),
            {"i": iid},
        )
    result = verify(rig.ctx.engine)
    assert not result.ok and iid in result.message and "acknowledged" in result.message


async def test_each_message_goes_out_once_and_the_outbox_drains(db_url: str) -> None:
    rig = Rig(db_url)
    d = rig.dispatch()
    await _seed(d, "T1", "T2")
    for t in ("T1", "T2", "T1"):
        await d.handle([rig.record("incident.reported", t, {"description": "genset mati", "category": "equipment"})])
        await d.relay.maintain()
    sent = [
        (
            m["type"],
            (m.get("incident") or m.get("tps") or {}).get("version"),
            (m.get("incident") or {}).get("id") or (m.get("tps") or {}).get("tps_id"),
        )
        for m in rig.published(topics.INCIDENT_UPDATES)
    ]
    assert len(sent) == len(set(sent)), "a message was published twice"
    with Session(rig.ctx.engine) as s:
        assert s.exec(select(Outbox)).all() == []
