"""Ingest's logic, free of HTTP: judge field events, deduplicate, and put them on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import bindparam, insert, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlmodel import Session, select

from siaga.events import PAYLOADS, FieldEvent
from siaga.models import Device, SeenEvent, Tps
from siaga.service import describe_errors

log = logging.getLogger("siaga.ingest")


@dataclass(frozen=True)
class DeviceGrant:
    """What a device token allows: the TPS and kecamatan it may post for."""

    device_id: str
    tps_ids: frozenset[str]
    kecamatan: frozenset[str]


# The two queries of every request, built once: composing a SQLAlchemy select costs more than running it.
_DEVICE_SQL = text(
    f"SELECT device_id, tps_ids, kecamatan FROM {Device.__tablename__} "
    "WHERE token_hash = :token_hash AND revoked_at IS NULL"
)
_SEEN_SQL = text(f"SELECT event_id, content_hash FROM {SeenEvent.__tablename__} WHERE event_id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)


def _json_list(value: Any) -> list[str]:
    if isinstance(value, str | bytes):  # SQLite hands JSON columns back as text here
        value = orjson.loads(value)
    return list(value or ())


def device_grant(conn: Connection, token_hash: str) -> DeviceGrant | None:
    """The grant of an active device token (by its hash), or None. Read on every request: revocation is at once."""
    row = conn.execute(_DEVICE_SQL, {"token_hash": token_hash}).first()
    if row is None:
        return None
    return DeviceGrant(row[0], frozenset(_json_list(row[1])), frozenset(_json_list(row[2])))


@dataclass
class Rejection:
    event_id: str | None
    index: int
    field: str
    message: str
    status: int = 422

    def public(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "index": self.index, "field": self.field, "message": self.message}


@dataclass
class Judged:
    """One batch after judging: events to publish, duplicates, refusals."""

    fresh: list[tuple[FieldEvent, str]] = field(default_factory=list)  # (event, content hash)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def content_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


class TpsCache:
    """TPS id -> kecamatan, refreshed every few seconds (the registry changes rarely)."""

    def __init__(self, engine: Engine, ttl_s: float = 3.0) -> None:
        self.engine, self.ttl_s = engine, ttl_s
        self._map: dict[str, str] = {}
        self._loaded = 0.0

    def get(self, ids: Sequence[str]) -> dict[str, str]:
        missing = [i for i in ids if i not in self._map]
        if missing or time.monotonic() - self._loaded > self.ttl_s:
            with Session(self.engine) as s:
                rows = s.exec(select(Tps.tps_id, Tps.kecamatan)).all()
            self._map = {r[0]: r[1] for r in rows}
            self._loaded = time.monotonic()
        return {i: self._map[i] for i in ids if i in self._map}


MAX_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    """How deep the JSON value nests, counting no further than limit + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
        level = [x for x in level if isinstance(x, (dict, list))]
    return depth


def _validation_problem(raw: dict[str, Any]) -> FieldEvent | Rejection:
    """The valid event, or the first problem with the field that has it (payload fields as payload.x)."""
    if _depth(raw, MAX_DEPTH) > MAX_DEPTH:
        return Rejection(None, 0, "payload", f"nests deeper than {MAX_DEPTH} levels")
    try:
        ev = FieldEvent.model_validate(raw)
    except ValidationError as exc:
        first = describe_errors(exc.errors())[0]
        return Rejection(None, 0, first["field"], first["message"])
    try:
        PAYLOADS[ev.type].model_validate(ev.payload)
    except ValidationError as exc:
        first = describe_errors(exc.errors())[0]
        return Rejection(None, 0, f"payload.{first['field']}", first["message"])
    return ev


def judge(
    raws: Sequence[Any],
    *,
    device: DeviceGrant,
    tps: TpsCache,
    conn: Connection,
    now: datetime,
    future_skew_s: int,
    max_age_s: int,
) -> Judged:
    """Validate each event on its own, check the device may post for its TPS, and sort out duplicates."""
    out = Judged()
    candidates: list[tuple[int, FieldEvent, str]] = []
    for index, raw in enumerate(raws):
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
        if not isinstance(raw, dict):
            out.rejected.append(Rejection(None, index, "event", "must be a JSON object"))
            continue
        problem = _validation_problem(raw)
        if isinstance(problem, Rejection):
            problem.event_id, problem.index = event_id, index
            out.rejected.append(problem)
            continue
        ev = problem
        if ev.occurred_at > now + timedelta(seconds=future_skew_s):
            out.rejected.append(
                Rejection(
                    ev.event_id,
                    index,
                    "occurred_at",
                    f"is more than {future_skew_s // 60} minutes ahead of the server clock",
                )
            )
            continue
        if ev.occurred_at < now - timedelta(seconds=max_age_s):
            out.rejected.append(
                Rejection(ev.event_id, index, "occurred_at", f"is more than {max_age_s // 3600} hours old")
            )
            continue
        candidates.append((index, ev, content_hash(raw)))

    known = tps.get(list({ev.tps_id for _, ev, _ in candidates}))
    allowed: list[tuple[int, FieldEvent, str]] = []
    for index, ev, digest in candidates:
        kec = known.get(ev.tps_id)
        if kec is None:
            out.rejected.append(Rejection(ev.event_id, index, "tps_id", f"unknown TPS {ev.tps_id!r}", 404))
        elif ev.tps_id not in device.tps_ids and kec not in device.kecamatan:
            out.rejected.append(
                Rejection(ev.event_id, index, "tps_id", f"this device is not assigned to TPS {ev.tps_id!r}", 403)
            )
        else:
            allowed.append((index, ev, digest))

    ids = [ev.event_id for _, ev, _ in allowed]
    seen: dict[str, str] = {}
    if ids:
        seen = {row[0]: row[1] for row in conn.execute(_SEEN_SQL, {"ids": ids})}
    in_batch: dict[str, str] = {}
    for index, ev, digest in allowed:
        prior = seen.get(ev.event_id) or in_batch.get(ev.event_id)
        if prior is None:
            in_batch[ev.event_id] = digest
            out.fresh.append((ev, digest))
        elif prior == digest:
            out.duplicates.append(ev.event_id)
        else:
            out.rejected.append(
                Rejection(ev.event_id, index, "event_id", "was already used for an event with different content", 409)
            )
    return out


class SeenWriter:
    """Records accepted event ids, many requests' worth per transaction (a group commit).

    One writer, so concurrent requests never queue on the database's write lock (SQLite's busy wait
    sleeps for milliseconds). A request waits for its ids to be recorded before it answers, so a
    retry is answered as a duplicate; if the database is slow or down it answers after `wait_s`
    anyway (the events are on the bus, and a copy is dropped downstream by its event_id).
    """

    def __init__(self, engine: Engine, *, max_rows: int = 2000, wait_s: float = 2.0) -> None:
        self.engine, self.max_rows, self.wait_s = engine, max_rows, wait_s
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def record(self, events: Sequence[tuple[FieldEvent, str]], *, device_id: str, now: datetime) -> None:
        if not events:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for ev, h in events:
            row = {"event_id": ev.event_id, "content_hash": h, "device_id": device_id, "received_at": now}
            self._pending.append((row, done))
        self._wake.set()
        if self._task is None:  # not started (a test without lifespan): write now
            await self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), self.wait_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest:seen-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_rows], self._pending[self.max_rows :]
            try:
                await asyncio.to_thread(_record, self.engine, [row for row, _ in batch])
            except (OperationalError, InterfaceError):
                log.warning("could not record %d event ids as seen; retrying", len(batch))
                self._pending[:0] = batch
                await asyncio.sleep(1.0)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()


def _record(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    by_id = {row["event_id"]: row for row in rows}
    table = SeenEvent.__table__  # type: ignore[attr-defined]
    try:
        with engine.begin() as conn:
            conn.execute(insert(table), list(by_id.values()))
    except IntegrityError:
        # Another ingest instance recorded some of them at the same moment: store the rest one by one.
        for row in by_id.values():
            with contextlib.suppress(IntegrityError), engine.begin() as conn:
                conn.execute(insert(table), [row])


def bus_value(ev: FieldEvent, *, device_id: str, received_at: datetime) -> bytes:
    return orjson.dumps(
        {
            "event": ev.model_dump(mode="json"),
            "device_id": device_id,
            "received_at": received_at.isoformat().replace("+00:00", "Z"),
        }
    )


class TokenBuckets:
    """Per-device rate limits (events a second with a burst), in this ingest instance."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, n: int, now: float) -> float:
        """Take n tokens; 0.0 when allowed, else seconds to wait. A batch costs at most one burst."""
        n = min(n, self.burst)
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= n:
            self._state[key] = (tokens - n, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (n - tokens) / self.rate
