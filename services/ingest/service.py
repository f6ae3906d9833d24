"""Ingest's logic, free of HTTP: judge field events, deduplicate, and put them on the bus."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from siaga.events import PAYLOADS, FieldEvent
from siaga.models import Device, SeenEvent, Tps
from siaga.service import describe_errors


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
    device: Device,
    tps: TpsCache,
    engine: Engine,
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
        with Session(engine) as s:
            for row in s.exec(select(SeenEvent).where(col(SeenEvent.event_id).in_(ids))).all():
                seen[row.event_id] = row.content_hash
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


def remember(engine: Engine, events: Sequence[tuple[FieldEvent, str]], *, device_id: str, now: datetime) -> None:
    """Record event ids the bus acknowledged, so a retry is answered as a duplicate."""
    if not events:
        return
    rows = [
        {"event_id": ev.event_id, "content_hash": h, "device_id": device_id, "received_at": now} for ev, h in events
    ]
    # Plain inserts: building 500 ORM objects costs more than judging the whole batch.
    table = SeenEvent.__table__  # type: ignore[attr-defined]
    try:
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
    except IntegrityError:
        # Another ingest instance took the same id at the same moment: store the rest one by one.
        for row in rows:
            try:
                with engine.begin() as conn:
                    conn.execute(insert(table), [row])
            except IntegrityError:
                pass


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
