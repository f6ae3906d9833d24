"""Dispatch's runtime: feeds the engine from the bus, the clock and the operators, one transaction at a time.

Every change runs as one database transaction through `SqlStore`; the messages it announces are
written to the outbox in that transaction, and the relay publishes them after the commit. So a
crash between the two loses nothing (the relay publishes them on restart), and a redelivered field
event changes nothing (its id is recorded in the same transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session, col, delete, select

from services.dispatch.classify import Classifier
from services.dispatch.engine import Engine, Received
from services.dispatch.policy import PolicyStore
from services.dispatch.store import SqlStore
from siaga import topics
from siaga.bus import BusUnavailable, ConsumerLoop, Record, TransientError
from siaga.events import BusEvent
from siaga.models import Outbox, Tps
from siaga.runtime import Context

log = logging.getLogger("siaga.dispatch")
T = TypeVar("T")

APPLIED = Counter("siaga_dispatch_events_total", "Field events applied by dispatch")
TICKS = Counter("siaga_dispatch_deadline_actions_total", "Deadline actions taken (escalations, reminders, silences)")
BATCH_SECONDS = Histogram("siaga_dispatch_batch_seconds", "Time to apply one batch of field events")
RELAYED = Counter("siaga_dispatch_relayed_total", "Outbox messages published", ["topic"])
SILENT_POSTS = Gauge(
    "siaga_dispatch_silent_posts", "TPS marked silent now: no check-in within the policy's silent_post_minutes"
)
SILENT_COUNT_INTERVAL_S = 15.0  # how often the tick loop counts them (one indexed query)


def parse_record(record: Record) -> Received:
    """A field-events record as the engine takes it; a malformed one raises (and goes to dead-letter)."""
    msg = BusEvent.model_validate_json(record.value)
    return Received(event=msg.event, device_id=msg.device_id, received_at=msg.received_at)


class OutboxRelay:
    """Publishes what transactions left in the outbox, in order, and removes what was published.

    The fast path: right after a commit, the transaction's own rows are published from memory and
    their ids are deleted by the next transaction (no extra round trips). When the bus cannot take
    them, the rows stay in the table and `flush()` publishes them from there once it can; until
    then every commit goes that way too, so order is kept.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = asyncio.Lock()
        self._published: list[int] = []  # ids published but not yet deleted
        self._backlog = True  # rows of an earlier run may wait in the table

    def take_published(self) -> list[int]:
        """Ids to delete in the caller's transaction (they are on the bus)."""
        ids, self._published = self._published, []
        return ids

    def give_back(self, ids: list[int]) -> None:
        """Ids taken for a transaction that did not commit: still to delete."""
        self._published[:0] = ids

    async def maintain(self) -> None:
        """Periodic care: publish a backlog, or delete what was published while nothing else committed."""
        if self._backlog:
            await self.flush()
        elif self._published:
            async with self._lock:
                done = self.take_published()
                await asyncio.to_thread(self._delete, done)

    async def after_commit(self, rows: list[Outbox]) -> None:
        if self._backlog:
            await self.flush()
            return
        async with self._lock:
            try:
                await self._publish(rows)
            except BusUnavailable as exc:
                log.warning("outbox: bus unavailable (%s); %d messages wait", exc, len(rows))
                self._backlog = True
                return
            self._published.extend(r.id for r in rows if r.id is not None)

    async def flush(self) -> int:
        """Publish everything the table holds, oldest first (the backlog lasts until it is empty)."""
        async with self._lock:
            done = self.take_published()
            if done:
                await asyncio.to_thread(self._delete, done)
            total = 0
            while True:
                rows = await asyncio.to_thread(self._take)
                if not rows:
                    self._backlog = False
                    return total
                try:
                    await self._publish(rows)
                except BusUnavailable as exc:
                    log.warning("outbox: bus unavailable (%s); %d messages wait", exc, len(rows))
                    self._backlog = True
                    return total
                await asyncio.to_thread(self._delete, [r.id for r in rows if r.id is not None])
                total += len(rows)

    def _take(self) -> list[Outbox]:
        with Session(self.ctx.engine) as s:
            return list(s.exec(select(Outbox).order_by(col(Outbox.id)).limit(1000)).all())

    def _delete(self, ids: list[int]) -> None:
        with Session(self.ctx.engine) as s:
            delete_outbox(s, ids)
            s.commit()

    async def _publish(self, rows: list[Outbox]) -> None:
        by_topic: dict[str, list[tuple[str | None, bytes]]] = {}
        for r in rows:
            by_topic.setdefault(r.topic, []).append((r.key, r.value))
        for topic, items in by_topic.items():
            await self.ctx.bus.publish_many(topic, items)
            RELAYED.labels(topic).inc(len(items))


def delete_outbox(s: Session, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        s.exec(delete(Outbox).where(col(Outbox.id).in_(ids[i : i + 500])))


class Dispatch:
    """The running dispatch: engine transactions, the field-event consumer, the deadline ticker."""

    def __init__(self, ctx: Context, *, classifier: Classifier | None = None) -> None:
        self.ctx = ctx
        self.policies = PolicyStore(ctx.engine, file=ctx.settings.policy_file)
        self.classifier = classifier or Classifier.default()
        self.relay = OutboxRelay(ctx)
        self._lock = asyncio.Lock()
        self._consumer: ConsumerLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ transactions
    def _run(self, fn: Callable[[Engine], T], published: list[int]) -> tuple[T, list[Outbox]]:
        policy = self.policies.current()
        with Session(self.ctx.engine, expire_on_commit=False) as s:
            store = SqlStore(s)
            engine = Engine(store, policy, self.classifier, self.ctx.clock)
            result = fn(engine)
            engine.finish()
            delete_outbox(s, published)  # what earlier transactions put on the bus
            s.commit()
            return result, store.outbox

    async def transact(self, fn: Callable[[Engine], T], *, attempts: int = 5) -> T:
        """Run fn on an engine in one transaction (retried when another writer won a race), then publish."""
        for attempt in range(attempts):
            published = self.relay.take_published()
            try:
                async with self._lock:
                    result, rows = await asyncio.to_thread(self._run, fn, published)
                    await self.relay.after_commit(rows)  # in the lock: messages go out in commit order
                break
            except (StaleDataError, OperationalError) as exc:
                self.relay.give_back(published)  # not deleted after all: next time
                if attempt == attempts - 1:
                    raise
                log.info("transaction lost a race (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.05 * (attempt + 1))
            except BaseException:
                self.relay.give_back(published)
                raise
        return result

    # ------------------------------------------------------------------ the bus
    async def handle(self, records: list[Record]) -> None:
        received = [parse_record(r) for r in records]

        def apply_all(engine: Engine) -> None:
            if isinstance(engine.store, SqlStore):
                engine.store.preload_processed([r.event.event_id for r in received])
            for r in received:
                engine.apply(r)

        try:
            with BATCH_SECONDS.time():
                await self.transact(apply_all)
        except (OperationalError, InterfaceError, StaleDataError) as exc:
            raise TransientError(f"database unavailable or contended: {type(exc).__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise TransientError("database connection lost") from exc
            raise
        APPLIED.inc(len(received))

    async def start(self) -> None:
        self.policies.current()  # fail at start, not at the first event, on a bad policy
        await self.relay.flush()  # what a previous run committed but did not publish
        source = self.ctx.bus.consumer([topics.FIELD_EVENTS], "siaga-dispatch")
        self._consumer = ConsumerLoop(self.ctx.bus, source, self.handle, name="dispatch")
        await self._consumer.start()
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="dispatch:tick"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._consumer:
            await self._consumer.stop()

    def count_silent_posts(self) -> int:
        """How many TPS are silent now; also sets siaga_dispatch_silent_posts."""
        with Session(self.ctx.engine) as s:
            count = s.exec(select(func.count()).select_from(Tps).where(col(Tps.silent))).one()
        SILENT_POSTS.set(count)
        return int(count)

    async def _tick_loop(self) -> None:
        counted_at = float("-inf")
        while True:
            await asyncio.sleep(self.ctx.settings.tick_interval_s)
            try:
                n = await self.transact(lambda e: e.tick())
                if n:
                    TICKS.inc(n)
                await self.relay.maintain()
                if time.monotonic() - counted_at >= SILENT_COUNT_INTERVAL_S:
                    counted_at = time.monotonic()
                    await asyncio.to_thread(self.count_silent_posts)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("deadline tick failed; trying again next tick")

    # ------------------------------------------------------------------ actions (operators, notifier)
    async def acknowledge(self, incident_id: str, *, actor: str) -> None:
        await self.transact(lambda e: e.acknowledge(incident_id, actor=actor))

    async def resolve(self, incident_id: str, *, actor: str, resolution: str) -> None:
        await self.transact(lambda e: e.resolve(incident_id, actor=actor, resolution=resolution))

    async def delivery(
        self, incident_id: str, *, key: str, channel: str, recipient: str, outcome: str, detail: str
    ) -> None:
        await self.transact(
            lambda e: e.record_delivery(
                incident_id, key=key, channel=channel, recipient=recipient, outcome=outcome, detail=detail
            )
        )
