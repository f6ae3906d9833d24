"""The partition owner's state (services/dispatch/state.py) on a real database, SQLite and PostgreSQL.

What the issue "Dispatch core at the speed of the bus" asks of it: a batch's changes in one
transaction with each changed row written once, the outbox coalesced per key (alerts never),
redelivery a no-op, deadlines and silent posts from timers (no scan), a failed write that leaves
nothing half-applied, registry imports that the owner's write-back does not undo, and two owners
on one group that split the kecamatan, apply operator commands, and take over each other's deadlines.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, func
from sqlalchemy.engine import Engine as SqlEngine
from sqlmodel import Session, select

from services.dispatch.service import Dispatch
from siaga import topics
from siaga.audit import verify
from siaga.bus import Record
from siaga.bus.memory import MemoryBus
from siaga.clock import ManualClock, iso
from siaga.keys import kecamatan_key
from siaga.models import CommandResult, Incident, Outbox, Personnel, ProcessedEvent, TimelineEntry, Tps
from siaga.runtime import Context, make_context
from siaga.settings import Settings

KECAMATAN = ["Kopo", "Cikande", "Baros", "Petir", "Anyer", "Ciruas", "Pontang", "Kragilan"]


class Rig:
    """One database, one in-process bus, a manual clock; as many dispatch processes as a test wants."""

    def __init__(self, db_url: str) -> None:
        self.clock = ManualClock()
        self.bus = MemoryBus({topics.FIELD_EVENTS: 4, topics.COMMANDS: 4})
        self.settings = Settings(database_url=db_url, tick_interval_s=0.05, command_timeout_s=5)
        self.ctx = self.context()
        self.offset = 0

    def context(self) -> Context:
        return make_context(self.settings, bus=self.bus, clock=self.clock)

    def dispatch(self) -> Dispatch:
        return Dispatch(self.context())

    def event(self, type_: str, tps_id: str, payload: dict[str, Any], *, event_id: str | None = None) -> bytes:
        ev = {
            "event_id": event_id or str(uuid.uuid4()),
            "type": type_,
            "tps_id": tps_id,
            "occurred_at": iso(self.clock.now()),
            "payload": payload,
        }
        return orjson.dumps({"event": ev, "device_id": "d1", "received_at": iso(self.clock.now())})

    def record(self, type_: str, tps_id: str, payload: dict[str, Any], **kw: Any) -> Record:
        self.offset += 1
        return Record(topics.FIELD_EVENTS, tps_id, self.event(type_, tps_id, payload, **kw), 0, self.offset)

    def seed(self, per_kecamatan: int = 2, kecamatan: list[str] = KECAMATAN) -> dict[str, str]:
        """TPS in each kecamatan, straight into the registry as an import leaves them; tps id -> kecamatan."""
        out: dict[str, str] = {}
        with Session(self.ctx.engine) as s:
            for k in kecamatan:
                for i in range(per_kecamatan):
                    tps_id = f"{k[:3].upper()}{i:02d}"
                    s.add(Tps(tps_id=tps_id, name=f"TPS {tps_id}", kecamatan=k, assigned=1))
                    out[tps_id] = k
            s.commit()
        return out

    def rows(self, model: type[Any]) -> list[Any]:
        with Session(self.ctx.engine) as s:
            return list(s.exec(select(model)).all())

    def count(self, model: type[Any]) -> int:
        with Session(self.ctx.engine) as s:
            return int(s.exec(select(func.count()).select_from(model)).one())

    def published(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for p in self.bus._topic(topic).partitions for r in p]

    @contextmanager
    def statements(self) -> Iterator[list[tuple[str, int]]]:
        """(SQL, rows it carried) of every statement the database gets meanwhile."""
        seen: list[tuple[str, int]] = []

        def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            rows = len(parameters) if executemany and isinstance(parameters, list | tuple) else 1
            seen.append((" ".join(statement.split()), rows))

        # Every engine: each dispatch of the rig has its own context, and so its own engine.
        event.listen(SqlEngine, "before_cursor_execute", record)
        try:
            yield seen
        finally:
            event.remove(SqlEngine, "before_cursor_execute", record)


def writes(seen: list[tuple[str, int]], table: str) -> list[tuple[str, int]]:
    return [(sql, n) for sql, n in seen if re.match(rf"(INSERT INTO|UPDATE|DELETE FROM) {table}\b", sql)]


async def test_a_batch_is_one_transaction_and_each_changed_row_is_written_once(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    checkins = [rig.record("checkin", "KOP00", {"personnel_id": "P1", "status": "on_duty"}) for _ in range(10)]
    report = rig.record("incident.reported", "KOP00", {"description": "genset mati", "category": "equipment"})
    merged = rig.record("incident.reported", "KOP00", {"description": "genset masih mati", "category": "equipment"})
    with rig.statements() as seen:
        await d.handle([*checkins, report, merged])
    tps_writes = writes(seen, "tps")
    assert len(tps_writes) == 1 and tps_writes[0][1] == 1, tps_writes  # ten check-ins, one row written once
    assert [n for _, n in writes(seen, "personnel")] == [1]
    assert [n for _, n in writes(seen, "incident")] == [1]  # opened, merged: one row
    assert sum(n for _, n in writes(seen, "processedevent")) == 12
    commits = [sql for sql, _ in seen if sql.startswith("COMMIT")]
    assert len(commits) <= 1  # the DB-API commits without a statement on some drivers
    [inc] = rig.rows(Incident)
    assert inc.reports == 2
    [tps] = [t for t in rig.rows(Tps) if t.tps_id == "KOP00"]
    assert tps.checkins["P1"]["status"] == "on_duty"


async def test_the_outbox_keeps_the_latest_update_per_key_and_every_alert(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    rig.bus.available = False  # the relay cannot publish: what the batch wrote stays in the outbox
    critical = {"description": "Bentrok, bawa golok, 2 orang luka", "category": "violence", "weapons": True}
    batch = [rig.record("incident.reported", "KOP00", critical), rig.record("incident.reported", "KOP00", critical)]
    await d.handle(batch)
    rows = rig.rows(Outbox)
    updates = [orjson.loads(r.value) for r in rows if r.topic == topics.INCIDENT_UPDATES]
    keys = [r.key for r in rows if r.topic == topics.INCIDENT_UPDATES]
    assert len(keys) == len(set(keys)), "one update per key"
    [inc] = rig.rows(Incident)
    [incident_update] = [u for u in updates if u["type"] == "incident"]
    assert incident_update["incident"]["version"] == inc.version and incident_update["incident"]["reports"] == 2
    alerts = [orjson.loads(r.value) for r in rows if r.topic == topics.ALERTS]
    police = sorted(a["level"] for a in alerts if a["audience"] == "police")
    assert police == [1, 2], "critical: level 2 and level 1 told, neither coalesced away"
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


async def test_a_redelivered_batch_is_a_no_op(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    batch = [
        rig.record("incident.reported", "KOP00", {"description": "genset mati", "category": "equipment"}),
        rig.record("checkin", "KOP01", {"personnel_id": "P2", "status": "on_duty"}),
    ]
    await d.handle(batch)
    before = (rig.count(TimelineEntry), rig.count(ProcessedEvent), rig.rows(Incident)[0].version)
    await d.handle(batch)  # the same records again, as after a crash before the offsets were committed
    fresh = rig.dispatch()  # and to a new owner, which remembers nothing
    await fresh.handle(batch)
    assert (rig.count(TimelineEntry), rig.count(ProcessedEvent), rig.rows(Incident)[0].version) == before


async def test_a_failed_write_leaves_nothing_half_applied_and_the_retry_applies_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    await d.handle([rig.record("checkin", "KOP00", {"personnel_id": "P1", "status": "on_duty"})])
    report = rig.record("incident.reported", "KOP00", {"description": "genset mati", "category": "equipment"})
    real_flush = d.state.flush
    calls = {"n": 0}

    def failing(s: Session, **kw: Any) -> Any:
        calls["n"] += 1
        out = real_flush(s, **kw)
        if calls["n"] == 1:
            raise RuntimeError("the database went away mid-commit")
        return out

    monkeypatch.setattr(d.state, "flush", failing)
    with pytest.raises(RuntimeError):
        await d.handle([report])
    assert rig.rows(Incident) == []
    await d.handle([report])  # the consumer loop's retry of the same batch
    [inc] = rig.rows(Incident)
    assert inc.reports == 1 and rig.count(TimelineEntry) == 1


async def test_deadlines_and_silent_posts_come_from_timers_not_from_scans(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    await d.handle(
        [
            rig.record(
                "incident.reported", "KOP00", {"description": "Kotak suara belum tiba", "category": "logistics"}
            ),
            rig.record("tps.status", "CIK00", {"phase": "voting"}),
        ]
    )
    await d.transact(lambda e: e.tick())  # the first tick may load the owned kecamatan
    with rig.statements() as seen:
        for _ in range(5):
            assert await d.transact(lambda e: e.tick()) == 0
    reads = [sql for sql, _ in seen if re.match(r"SELECT .* FROM (tps|incident)\b", sql)]
    assert reads == [], "a tick with nothing due reads no table"
    rig.clock.advance(minutes=31)  # the logistics window (medium: 15 min) and the silent post (30 min)
    assert await d.transact(lambda e: e.tick()) >= 2
    by_tps = {i.tps_id: i for i in rig.rows(Incident)}
    assert (by_tps["KOP00"].status, by_tps["KOP00"].level) == ("escalated", 1)
    assert by_tps["CIK00"].category == "silent_post"
    assert await d.transact(lambda e: e.tick()) == 0, "each fired once"


async def test_a_registry_import_is_not_undone_by_the_owners_write_back(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    await d.handle([rig.record("checkin", "KOP00", {"personnel_id": "P1", "status": "on_duty"})])
    with Session(rig.ctx.engine) as s:  # the admin API renames the TPS and sets its roster count
        tps = s.get(Tps, "KOP00")
        assert tps is not None
        tps.name, tps.assigned = "TPS 001 Kopo", 3
        s.merge(Personnel(personnel_id="P1", name="Bripka Ahmad", tps_ids=["KOP00"]))
        s.commit()
    # Before the owner hears of it, it writes the TPS and the person back (another check-in).
    await d.handle([rig.record("checkin", "KOP00", {"personnel_id": "P1", "status": "unwell"})])
    with Session(rig.ctx.engine) as s:
        after, someone = s.get(Tps, "KOP00"), s.get(Personnel, "P1")
        assert after is not None and someone is not None
        assert (after.name, after.assigned, after.checkins["P1"]["status"]) == ("TPS 001 Kopo", 3, "unwell")
        assert (someone.name, someone.status) == ("Bripka Ahmad", "unwell")
    await d.transact(lambda e: e.refresh_tps(["KOP00"]))  # the RefreshTps command's effect
    tps_updates = [m for m in rig.published(topics.INCIDENT_UPDATES) if m["type"] == "tps"]
    assert tps_updates[-1]["tps"]["name"] == "TPS 001 Kopo" and tps_updates[-1]["tps"]["assigned"] == 3


async def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_two_owners_split_the_kecamatan_apply_commands_and_take_over_deadlines(db_url: str) -> None:
    rig = Rig(db_url)
    tps = rig.seed()
    first, second = rig.dispatch(), rig.dispatch()
    await first.start()
    await second.start()
    try:
        partition_of = await rig.bus.partitioner(topics.FIELD_EVENTS)
        for tps_id, k in tps.items():
            if tps_id.endswith("00"):
                key = kecamatan_key(k)
                await rig.bus.publish(
                    topics.FIELD_EVENTS,
                    key,
                    rig.event("incident.reported", tps_id, {"description": "Kotak suara belum tiba"}),
                )
        await wait_for(lambda: rig.count(Incident) == len(KECAMATAN))
        await wait_for(lambda: bool(first.state.tps_rows) and bool(second.state.tps_rows))
        owned = [{t.kecamatan for t in d.state.tps_rows.values()} for d in (first, second)]
        assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(KECAMATAN)
        for d, mine in zip((first, second), owned, strict=True):
            assert all(d.owns(k) for k in mine) and not any(d.owns(k) for k in set(KECAMATAN) - mine)
            assert {partition_of(kecamatan_key(k)) for k in mine} <= d._owned
        # An operator's acknowledgement, sent from the process that does not own the incident.
        incidents = {i.kecamatan: i for i in rig.rows(Incident)}
        theirs = next(iter(owned[1]))
        await first.acknowledge(incidents[theirs].id, actor="operator:ops")
        [acked] = [i for i in rig.rows(Incident) if i.kecamatan == theirs]
        assert acked.status == "acknowledged"
        assert rig.count(CommandResult) == 1
        with pytest.raises(KeyError):
            await first.acknowledge("INC-NOPE", actor="operator:ops")
        # The first process goes away; its kecamatan's pending deadlines fire once, at the second.
        await first.stop()
        rig.clock.advance(minutes=16)
        mine = owned[0]
        await wait_for(
            lambda: all(i.level == 1 for i in rig.rows(Incident) if i.kecamatan in mine),
            timeout_s=20,
        )
        await asyncio.sleep(0.3)  # more ticks: nothing fires twice
        police = [a for a in rig.published(topics.ALERTS) if a["audience"] == "police"]
        fired = [a["incident_id"] for a in police if a["reason"] == "window_expired"]
        expected = {i.id for i in rig.rows(Incident) if i.kecamatan != theirs}
        assert sorted(fired) == sorted(expected), "every pending window fired once, the acknowledged one not"
    finally:
        await second.stop()
        await first.stop()


def test_the_engine_and_its_rules_import_no_sql_no_row_and_no_topic() -> None:
    dispatch = Path(__file__).resolve().parents[2] / "services" / "dispatch"
    sources = [dispatch / "engine.py", dispatch / "domain.py", *sorted((dispatch / "rules").glob("*.py"))]
    assert len(sources) > 5, "the rules live in their own modules"
    for source in sources:
        imports = [line for line in source.read_text().splitlines() if re.match(r"\s*(from|import) ", line)]
        for line in imports:
            for forbidden in ("sqlalchemy", "sqlmodel", "siaga.models", "siaga import topics", "siaga.topics"):
                assert forbidden not in line, f"{source.name}: {line.strip()}"


def test_the_timers_stay_one_entry_a_tps_however_often_it_checks_in() -> None:
    from datetime import UTC, datetime, timedelta

    from services.dispatch import domain
    from services.dispatch.state import OwnedState

    def no_database() -> Session:
        raise AssertionError("the timers need no database")

    state = OwnedState(no_database)
    start = datetime(2024, 11, 27, 7, 0, tzinfo=UTC)
    tps = domain.Tps(tps_id="T1", name="TPS 1", kecamatan="Kopo", phase="voting", assigned=2)
    for minute in range(5000):  # a check-in a minute for three and a half days
        tps.last_seen_at = start + timedelta(minutes=minute)
        state.save_tps(tps)
    assert len(state._quiet) == 1  # one entry, however many check-ins
    last = start + timedelta(minutes=4999)
    assert state.silent_candidates(["voting"], last - timedelta(minutes=1)) == []
    assert len(state._quiet) == 1  # the stale entry went back in at the last check-in, not twice
    assert state.silent_candidates(["voting"], last) == [tps]
    assert state._quiet == []  # found: out of the timers until it is saved again
    tps.last_seen_at = last + timedelta(minutes=30)
    state.save_tps(tps)
    assert state.silent_candidates(["voting"], last + timedelta(minutes=30)) == [tps]


async def test_closed_incidents_leave_memory_and_a_follow_up_still_chains_onto_their_timeline(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    d = rig.dispatch()
    report = rig.record("incident.reported", "KOP00", {"description": "genset mati", "category": "equipment"})
    await d.handle([report])
    report_id = orjson.loads(report.value)["event"]["event_id"]
    [inc] = rig.rows(Incident)
    assert inc.id in d.state.incidents
    await d.handle([rig.record("incident.resolved", "KOP00", {"report_id": report_id, "resolution": "diganti"})])
    assert inc.id not in d.state.incidents, "a resolved incident, once written, is not held in memory"
    # A late follow-up on the resolved incident: read back from the database, chained where it left off.
    await d.handle([rig.record("incident.update", "KOP00", {"report_id": report_id, "note": "genset cadangan tiba"})])
    entries = sorted((e for e in rig.rows(TimelineEntry) if e.incident_id == inc.id), key=lambda e: e.seq)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1)) and entries[-1].action == "note"
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert verify(rig.ctx.engine).ok
    assert inc.id not in d.state.incidents


async def test_an_escort_timer_is_rebuilt_by_a_new_owner_and_fires_once(db_url: str) -> None:
    rig = Rig(db_url)
    rig.seed()
    first = rig.dispatch()
    boxes = {"box_ids": ["PPWP-1", "DPR-1"], "to": "PPK Kopo", "personnel_ids": ["P1"], "expected_minutes": 20}
    await first.handle([rig.record("escort.departed", "KOP00", boxes)])
    [tps] = [t for t in rig.rows(Tps) if t.tps_id == "KOP00"]
    assert [(e["state"], e["box_ids"]) for e in tps.escorts] == [("in_transit", ["PPWP-1", "DPR-1"])]

    owner = rig.dispatch()  # the partition moved: this one knows the escort only from the database
    await owner.transact(lambda e: e.tick())  # loads the owned kecamatan
    with rig.statements() as seen:
        assert await owner.transact(lambda e: e.tick()) == 0
    assert [sql for sql, _ in seen if re.match(r"SELECT .* FROM tps\b", sql)] == [], "no scan for escorts"
    rig.clock.advance(minutes=36)  # 20 expected + 15 grace
    assert await owner.transact(lambda e: e.tick()) >= 1
    [late] = [i for i in rig.rows(Incident) if i.category == "escort_overdue"]
    assert (late.tps_id, late.severity) == ("KOP00", "high")
    assert await owner.transact(lambda e: e.tick()) == 0, "fired once"
    arrived = {"box_ids": ["PPWP-1", "DPR-1"], "at": "PPK Kopo"}
    await owner.handle([rig.record("escort.arrived", "KOP00", arrived)])
    [late] = [i for i in rig.rows(Incident) if i.category == "escort_overdue"]
    assert late.status == "resolved"
    actions = [e.action for e in rig.rows(TimelineEntry) if e.incident_id == late.id]
    assert "escort_departed" in actions and "escort_arrived" in actions
