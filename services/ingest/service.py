"""Ingest's logic, free of HTTP: judge field events, deduplicate, and put them on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from siaga.events import PAYLOADS, FieldEvent, ReplyTo
from siaga.models import Device, SeenEvent, Tps
from siaga.service import describe_errors

log = logging.getLogger("siaga.ingest")


@dataclass(frozen=True)
class DeviceGrant:
    """What a device token allows: the TPS and kecamatan it may post for."""

    device_id: str
    tps_ids: frozenset[str]
    kecamatan: frozenset[str]


def _json_list(value: str | None) -> list[str]:
    return list(orjson.loads(value) or ()) if value else []


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
    kecamatan: dict[str, str] = field(default_factory=dict)  # tps_id -> kecamatan, for the bus key
    duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def content_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


SeenRow = tuple[str, str, str, datetime]  # event_id, content hash, device_id, received_at

# SQLite: page cache of the event loop's connection (KiB; SQLite's default is 2 MiB). A million
# seen ids take ~50 MB of index.
SQLITE_CACHE_KIB = 65_536


class IngestDb:
    """Ingest's statements, run on the DB-API connection itself.

    Every request reads its device's grant and the ids of its events. Composing and executing these
    through SQLAlchemy's Connection cost several times the indexed lookups themselves (a third of a
    single event's CPU; docs/benchmarks.md), so they are plain SQL on the driver's cursor.

    SQLite: the reads and the group commits run inline on one connection of the event-loop thread's
    own (a read in WAL mode sees every commit made before it, so a revoked token is refused at
    once). One, so that the seen-id index pages a request reads are still in its page cache when
    its ids are written: SQLite empties a connection's cache whenever another connection has
    written. Other databases: a pooled connection per request, in a worker thread (see
    `Ingest._in_db`); writes by `record`, on a pooled connection in a worker thread.
    """

    def __init__(self, engine: Engine, *, tps_ttl_s: float = 3.0) -> None:
        self.engine, self.tps_ttl_s = engine, tps_ttl_s
        self.inline = engine.dialect.name == "sqlite"
        dbapi = engine.dialect.loaded_dbapi
        # The driver's own errors, and SQLAlchemy's wrapping of them when the pool cannot connect.
        self.errors: tuple[type[Exception], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
            OperationalError,
            InterfaceError,
        )
        self._p = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        p = self._p
        self._device_sql = (  # the JSON lists as text on every database: a row is then a cache key
            f"SELECT device_id, CAST(tps_ids AS TEXT), CAST(kecamatan AS TEXT) FROM {Device.__tablename__} "
            f"WHERE token_hash = {p} AND revoked_at IS NULL"
        )
        self._seen_sql = f"SELECT event_id, content_hash FROM {SeenEvent.__tablename__} WHERE event_id IN"
        self._tps_sql = f"SELECT tps_id, kecamatan FROM {Tps.__tablename__}"
        self._grants: dict[tuple[Any, ...], DeviceGrant] = {}  # by the row read (revoked rows are not read)
        self._insert_sql = (
            f"INSERT INTO {SeenEvent.__tablename__} (event_id, content_hash, device_id, received_at) "
            f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (event_id) DO NOTHING"
        )
        self._prune_sql = (
            f"DELETE FROM {SeenEvent.__tablename__} WHERE event_id IN (SELECT event_id FROM "
            f"{SeenEvent.__tablename__} WHERE received_at < {p} LIMIT {{limit}})"
        )
        received_at = SeenEvent.__table__.c.received_at.type  # type: ignore[attr-defined]
        bind = received_at.dialect_impl(engine.dialect).bind_processor(engine.dialect)  # as SQLAlchemy stores it
        self._received_at: Callable[[datetime], Any] = bind or (lambda v: v)
        self._own: sqlite3.Connection | None = None  # SQLite: the event-loop thread's connection
        self._busy_ms = 0  # SQLite: its busy timeout for reads, as the engine set it
        self._tps: dict[str, str] = {}
        self._tps_loaded = float("-inf")
        self.tps_version = 0  # changes when what the registry says changes: a key for what is derived from it

    def _loop_connection(self) -> sqlite3.Connection:
        """SQLite: the event-loop thread's connection, out of the pool, with its own settings."""
        if self._own is None:
            proxied = self.engine.raw_connection()
            conn: sqlite3.Connection = proxied.driver_connection  # type: ignore[assignment]
            proxied.detach()
            conn.isolation_level = None  # reads on their own, writes between BEGIN and COMMIT
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see record_inline
            conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            self._busy_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
            self._own = conn
        return self._own

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A cursor for one request's reads; a connection that failed is dropped, not reused."""
        if self.inline:
            own = self._loop_connection()
            cur = own.cursor()
            try:
                yield cur
            except self.errors:
                self._own = None
                own.close()
                raise
            finally:
                cur.close()  # ends the read: a statement left unfinished would hold its snapshot
            return
        with self._pooled() as conn:
            yield conn.cursor()

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Any]:
        """A pooled connection for one piece of work; one that failed is dropped, not reused."""
        conn = self.engine.raw_connection()
        try:
            yield conn
        except self.errors:
            conn.invalidate()
            raise
        finally:
            conn.close()

    def device(self, cur: Any, token_hash: str) -> DeviceGrant | None:
        """The grant of an active device token (by its hash), or None. Read on every request."""
        row = cur.execute(self._device_sql, (token_hash,)).fetchone()
        if row is None:
            return None
        grant = self._grants.get(row)  # parsing a gateway's TPS list costs more than the read
        if grant is None:
            if len(self._grants) > 10_000:
                self._grants.clear()
            grant = self._grants[row] = DeviceGrant(
                row[0], frozenset(_json_list(row[1])), frozenset(_json_list(row[2]))
            )
        return grant

    def seen(self, cur: Any, ids: Sequence[str]) -> dict[str, str]:
        """event_id -> content hash of those among ids already accepted."""
        if not ids:
            return {}
        cur.execute(f"{self._seen_sql} ({self._marks(len(ids))})", ids)
        return {row[0]: row[1] for row in cur.fetchall()}

    def kecamatan_of(self, cur: Any, tps_ids: Collection[str]) -> dict[str, str]:
        """TPS id -> kecamatan for the known ones. The registry is kept for a few seconds (it changes
        rarely); an id not in it is looked up on its own, so a TPS imported a moment ago is known."""
        self.refresh_registry(cur)
        missing = [i for i in tps_ids if i not in self._tps]
        if missing:
            cur.execute(f"{self._tps_sql} WHERE tps_id IN ({self._marks(len(missing))})", missing)
            found = cur.fetchall()
            if found:
                self._tps.update(found)
                self.tps_version += 1
        return {i: self._tps[i] for i in tps_ids if i in self._tps}

    def refresh_registry(self, cur: Any) -> None:
        """Read the TPS registry again when the copy is older than tps_ttl_s."""
        if time.monotonic() - self._tps_loaded > self.tps_ttl_s:
            cur.execute(self._tps_sql)
            registry = dict(cur.fetchall())
            if registry != self._tps:
                self._tps = registry
                self.tps_version += 1
            self._tps_loaded = time.monotonic()

    @property
    def param(self) -> str:
        """The driver's placeholder for one parameter (`?` or `%s`)."""
        return self._p

    def _marks(self, n: int) -> str:
        return ", ".join([self._p] * n)

    def _params(self, rows: Sequence[SeenRow]) -> list[tuple[str, str, str, Any]]:
        stored: dict[datetime, Any] = {}  # one time per request: convert each once
        params = []
        for event_id, digest, device_id, t in rows:
            if t not in stored:
                stored[t] = self._received_at(t)
            params.append((event_id, digest, device_id, stored[t]))
        return params

    def record(self, rows: Sequence[SeenRow]) -> None:
        """Store accepted (event_id, content hash, device_id, received_at), in one transaction, on a
        pooled connection (call it in a worker thread). An id another ingest instance stored a moment
        before is kept as it is."""
        with self._pooled() as conn:
            conn.cursor().executemany(self._insert_sql, self._params(rows))
            conn.commit()

    def record_inline(self, rows: Sequence[SeenRow]) -> bool:
        """SQLite: store rows on the calling thread if the write lock is free at once; False if another
        connection holds it (then `record` them in a worker thread, which waits its turn).

        For the event loop's group commits: no thread hop, and no wait for the GIL between
        SQLite calls. This connection never checkpoints the WAL itself (that syncs the file, too
        slow for the loop): `checkpoint` does, in a worker thread, after every CHECKPOINT_ROWS rows.
        """
        conn = self._loop_connection()
        conn.execute("PRAGMA busy_timeout=0")  # the lock now or never: SeenWriter polls
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                return False
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        try:
            conn.executemany(self._insert_sql, self._params(rows))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return True

    def prune(self, received_before: datetime, *, limit: int) -> int:
        """Delete up to `limit` seen ids received before the given time (call it in a worker thread);
        how many. A short transaction each, so that group commits wait little for the lock."""
        with self._pooled() as conn:
            cur = conn.cursor()
            cur.execute(self._prune_sql.format(limit=int(limit)), (self._received_at(received_before),))
            deleted = int(cur.rowcount)
            conn.commit()
        return deleted

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the whole WAL back into the database file, so that the next write starts it again from
        its beginning (call it in a worker thread). SQLite's (busy, frames in the WAL, frames copied).

        A passive checkpoint alone copies what was written before it began, and with two writers (two
        `--workers`, or dispatch beside ingest) there is always more by the time it ends, so the WAL
        was never started again: it grew to 4 GB in a minute of batches, and every page read looks
        through its index (docs/benchmarks.md). So a passive one copies the bulk while writers go
        on, and RESTART copies the rest, holding writers off until it is done (the event loop's
        writer meanwhile finds the lock busy and polls).

        RESTART also waits, holding the write lock, for readers of older snapshots to finish: a long
        read elsewhere (dispatch, a dashboard) would stall every writer for as long. It waits at
        most CHECKPOINT_BUSY_MS, then gives up (busy 1) until the next checkpoint.
        """
        with self._pooled() as conn:
            cur = conn.cursor()
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the bulk, while writers go on
            usual_ms = int(cur.execute("PRAGMA busy_timeout").fetchone()[0])
            cur.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
            try:
                busy, frames, copied = cur.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                cur.execute(f"PRAGMA busy_timeout={usual_ms}")  # a pooled connection: as it was
        return int(busy), int(frames), int(copied)


MAX_DEPTH = 32  # levels of a whole event; its payload may nest one level less


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether a JSON value nests more than `limit` levels of objects and arrays (itself level 1).

    Checked before validation: the payload is free-form, and a deep one would reach Python's
    recursion limit when serialized. A flat payload costs one pass over its values.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


_validate_event = FieldEvent.__pydantic_validator__.validate_python  # model_validate without its wrapper


def _validation_problem(raw: dict[str, Any]) -> FieldEvent | Rejection:
    """The valid event, or the first problem with the field that has it (payload fields as payload.x)."""
    payload = raw.get("payload")
    if isinstance(payload, dict | list) and nests_deeper(payload, MAX_DEPTH - 1):
        return Rejection(None, 0, "payload", f"nests deeper than {MAX_DEPTH} levels")
    try:
        ev: FieldEvent = _validate_event(raw)
    except ValidationError as exc:
        first = describe_errors(exc.errors())[0]
        return Rejection(None, 0, first["field"], first["message"])
    try:
        PAYLOADS[ev.type].__pydantic_validator__.validate_python(ev.payload)
    except ValidationError as exc:
        first = describe_errors(exc.errors())[0]
        return Rejection(None, 0, f"payload.{first['field']}", first["message"])
    return ev


def judge(
    raws: Sequence[Any],
    *,
    device: DeviceGrant,
    kecamatan_of: Callable[[Collection[str]], Mapping[str, str]],
    seen: Callable[[Sequence[str]], Mapping[str, str]],
    now: datetime,
    future_skew_s: int,
    max_age_s: int,
) -> Judged:
    """Validate each event on its own, check the device may post for its TPS, and sort out duplicates.

    `kecamatan_of` maps TPS ids to their kecamatan (unknown ones left out); `seen` maps event ids
    already accepted to their content hash.
    """
    out = Judged()
    candidates: list[tuple[int, FieldEvent, str]] = []
    newest = now + timedelta(seconds=future_skew_s)
    oldest = now - timedelta(seconds=max_age_s)
    for index, raw in enumerate(raws):
        if not isinstance(raw, dict):
            out.rejected.append(Rejection(None, index, "event", "must be a JSON object"))
            continue
        problem = _validation_problem(raw)
        if isinstance(problem, Rejection):
            event_id = raw.get("event_id")
            problem.event_id, problem.index = event_id if isinstance(event_id, str) else None, index
            out.rejected.append(problem)
            continue
        ev = problem
        if ev.occurred_at > newest:
            message = f"is more than {future_skew_s // 60} minutes ahead of the server clock"
            out.rejected.append(Rejection(ev.event_id, index, "occurred_at", message))
            continue
        if ev.occurred_at < oldest:
            message = f"is more than {max_age_s // 3600} hours old"
            out.rejected.append(Rejection(ev.event_id, index, "occurred_at", message))
            continue
        candidates.append((index, ev, content_hash(raw)))

    known = kecamatan_of({ev.tps_id for _, ev, _ in candidates}) if candidates else {}
    out.kecamatan = dict(known)
    allowed: list[tuple[int, FieldEvent, str]] = []
    for index, ev, digest in candidates:
        kec = known.get(ev.tps_id)
        if kec is None:
            out.rejected.append(Rejection(ev.event_id, index, "tps_id", f"unknown TPS {ev.tps_id!r}", 404))
        elif ev.tps_id not in device.tps_ids and kec not in device.kecamatan:
            message = f"this device is not assigned to TPS {ev.tps_id!r}"
            out.rejected.append(Rejection(ev.event_id, index, "tps_id", message, 403))
        else:
            allowed.append((index, ev, digest))

    prior_of = seen([ev.event_id for _, ev, _ in allowed]) if allowed else {}
    in_batch: dict[str, str] = {}
    for index, ev, digest in allowed:
        prior = prior_of.get(ev.event_id) or in_batch.get(ev.event_id)
        if prior is None:
            in_batch[ev.event_id] = digest
            out.fresh.append((ev, digest))
        elif prior == digest:
            out.duplicates.append(ev.event_id)
        else:
            message = "was already used for an event with different content"
            out.rejected.append(Rejection(ev.event_id, index, "event_id", message, 409))
    return out


# SQLite: group commits run on the event loop (~20 µs a row: a batch of 500 costs about a third more
# than judging it, and no thread hop or GIL hand-offs), this many rows at a time; a lock that stays
# busy goes to a worker thread.
INLINE_ROWS = 1000
INLINE_TRIES = 1000  # 2 ms polls (2 s) for a busy lock before a worker thread takes over
# Rows written inline between two WAL checkpoints. Random keys dirty about a page a row; the less
# often, the more of those pages a checkpoint copies once for several writes, and the fewer bytes
# go to disk (two workers wrote ~200 MB/s at 10,000). 10,000 → 40,000 → 100,000 gave two workers
# +12 % and +8 % batch throughput (A/B, docs/benchmarks.md); at 50,000 the WAL of two workers stays
# under ~500 MB and a checkpoint holds writers off for well under a second.
CHECKPOINT_ROWS = 50_000
SLOW_CHECKPOINT_S = 1.0  # log a checkpoint that took longer
CHECKPOINT_BUSY_MS = 1000  # longest a checkpoint waits for the write lock and for older readers


class SeenWriter:
    """Records accepted event ids, many requests' worth per transaction (a group commit).

    One writer, so concurrent requests never queue on the database's write lock (SQLite's busy wait
    sleeps for milliseconds). A request waits for its ids to be recorded before it answers, so a
    retry is answered as a duplicate; if the database is slow or down it answers after `wait_s`
    anyway (the events are on the bus, and a copy is dropped downstream by its event_id).
    """

    def __init__(self, db: IngestDb, *, max_rows: int = 2000, wait_s: float = 2.0, retry_s: float = 1.0) -> None:
        self.db, self.wait_s, self.retry_s = db, wait_s, retry_s
        self.chunk = INLINE_ROWS if db.inline else max_rows  # rows a transaction
        self._since_checkpoint = 0  # rows written inline since the last WAL checkpoint
        self._pending: list[SeenRow] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (rows pending before it + its rows, future)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Task[None] | None = None

    async def record(self, events: Sequence[tuple[FieldEvent, str]], *, device_id: str, now: datetime) -> None:
        if not events:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.extend([(ev.event_id, h, device_id, now) for ev, h in events])
        self._waiters.append((len(self._pending), done))
        self._wake.set()
        if self._task is None:  # not started (a test without lifespan): write now
            await self.flush()
        timer = asyncio.get_running_loop().call_later(self.wait_s, _release, done)
        try:
            await done
        finally:
            timer.cancel()

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
            n = min(len(self._pending), self.chunk)
            rows = sorted(self._pending[:n])  # in key order: neighbouring index pages, a fifth quicker
            try:
                inline = self.db.inline and await self._record_inline(rows)
                if not inline:
                    await asyncio.to_thread(self.db.record, rows)
            except self.db.errors:
                log.warning("could not record %d event ids as seen; retrying", len(rows))
                await asyncio.sleep(self.retry_s)
                continue
            del self._pending[:n]
            if inline:  # pooled connections checkpoint by themselves
                self._since_checkpoint += n
            if self._since_checkpoint >= CHECKPOINT_ROWS and self._checkpoint is None:
                self._since_checkpoint = 0
                self._checkpoint = asyncio.create_task(self._checkpoint_wal(), name="ingest:checkpoint")
            # Requests whose last row is now stored can answer; the others' counts move down.
            waiters, self._waiters = self._waiters, []
            for upto, done in waiters:
                if upto <= n:
                    _release(done)
                else:
                    self._waiters.append((upto - n, done))

    async def _record_inline(self, rows: list[SeenRow]) -> bool:
        """Try the inline write every 2 ms while another process holds the lock (two `siaga ingest
        --workers`, or dispatch, on one file): SQLite's own busy wait sleeps up to 100 ms at a time
        and misses the moment the lock is free. False if it stays busy for INLINE_TRIES polls."""
        for _ in range(INLINE_TRIES):
            if self.db.record_inline(rows):
                return True
            await asyncio.sleep(0.002)
        return False

    async def _checkpoint_wal(self) -> None:
        started = time.monotonic()
        try:
            busy, frames, copied = await asyncio.to_thread(self.db.checkpoint)
            if busy and frames >= 0:  # (-1: another process was checkpointing, which does the job)
                log.info(
                    "WAL checkpoint copied %d of %d frames; readers of older snapshots kept it from restarting the WAL",
                    copied,
                    frames,
                )
        except self.db.errors:
            log.warning("could not checkpoint the WAL; the next write will retry", exc_info=True)
        finally:
            self._checkpoint = None
        took = time.monotonic() - started
        if took > SLOW_CHECKPOINT_S:
            log.warning("WAL checkpoint took %.1f s; group commits waited for it", took)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()


def _release(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def bus_value(
    ev: FieldEvent,
    *,
    device_id: str,
    received_at: datetime,
    channel: str = "field",
    reply_to: ReplyTo | None = None,
) -> bytes:
    """The record on siaga.field-events (a BusEvent), serialized by orjson: the same bytes as
    pydantic's JSON of the model (tests/integration/test_ingest.py checks), at a third of the cost.
    `channel` is the gateway's (sms, whatsapp) and `reply_to` its sender; a field device's are left
    out, as BusEvent does."""
    event = {
        "event_id": ev.event_id,
        "type": ev.type,
        "tps_id": ev.tps_id,
        "occurred_at": ev.occurred_at,
        "payload": ev.payload,
    }
    doc: dict[str, Any] = {"event": event, "device_id": device_id, "received_at": received_at}
    if channel != "field":
        doc["channel"] = channel
    if reply_to is not None:
        doc["reply_to"] = reply_to.model_dump()
    return orjson.dumps(doc, option=orjson.OPT_UTC_Z)


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
