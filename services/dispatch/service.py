"""Dispatch's runtime: feeds the engine from the bus and the clock, one transaction a batch.

Dispatch owns partitions (SPEC section 3, "Scaling out"). Field events and commands are keyed by
kecamatan and co-partitioned, so the owner of partition p decides every kecamatan that maps to p:
it holds their working state in memory (`OwnedState`), loaded when p is assigned and dropped when
it is revoked, applies each consumer batch there, and writes the batch back in one transaction:
the changed rows, the timeline, the outbox, the applied event and command ids, the command results.
The relay publishes the outbox after the commit, and only then does the consumer loop commit the
offsets. So a crash anywhere loses nothing (the relay publishes on restart; the batch comes again)
and doubles nothing (a redelivered event or command finds its id applied).

Operator actions are commands: `acknowledge()` and the rest put one on siaga.commands and wait,
bounded, for the owner's result, whichever process that is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import Session, col, delete, select

from services.dispatch.classify import Classifier
from services.dispatch.commands import Outcome, apply_command, confirm
from services.dispatch.domain import SilenceRule
from services.dispatch.engine import Engine, NotAllowed, Received
from services.dispatch.inbox import inbox_row, insert_inbox
from services.dispatch.policy import PolicyStore
from services.dispatch.state import OutboxMessage, OwnedState, insert_outbox
from siaga import topics
from siaga.bus import BusUnavailable, ConsumerLoop, PartitionListener, Record, TopicPartition, TransientError
from siaga.clock import as_utc
from siaga.contracts import (
    COMMAND,
    Acknowledge,
    AddNote,
    Assign,
    Broadcast,
    Classify,
    CommandBase,
    DeliveryOutcome,
    Escalate,
    KecamatanKey,
    OrderTarget,
    Priority,
    RecordDelivery,
    RefreshTps,
    ReportFromCommandPost,
    Resolve,
)
from siaga.events import BusEvent, Category, EventType, Severity
from siaga.keys import kecamatan_key
from siaga.models import CommandResult, Incident, Outbox, Silence, Tps
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
# How often the owner reads the silences again: one created in another process holds within this.
SILENCE_REFRESH_S = 1.0


def parse_record(record: Record) -> Received:
    """A field-events record as the engine takes it; a malformed one raises (and goes to dead-letter)."""
    msg = BusEvent.model_validate_json(record.value)
    return Received(
        event=msg.event,
        device_id=msg.device_id,
        received_at=msg.received_at,
        channel=msg.channel,
        reply_to=msg.reply_to,
    )


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

    def mark_backlog(self) -> None:
        """Rows were written to the outbox outside `transact` (a broadcast): publish from the table."""
        self._backlog = True

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

    async def after_commit(self, messages: list[OutboxMessage], ids: list[int]) -> None:
        """Publish what a transaction just committed to the outbox (its rows' `ids`, in any order)."""
        if self._backlog:
            await self.flush()
            return
        async with self._lock:
            try:
                await self._publish(messages)
            except BusUnavailable as exc:
                log.warning("outbox: bus unavailable (%s); %d messages wait", exc, len(messages))
                self._backlog = True
                return
            self._published.extend(ids)

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
                    await self._publish([(r.topic, r.key, r.value) for r in rows])
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

    async def _publish(self, messages: list[OutboxMessage]) -> None:
        by_topic: dict[str, list[tuple[str | None, bytes]]] = {}
        for topic, key, value in messages:
            by_topic.setdefault(topic, []).append((key, value))
        for topic, items in by_topic.items():
            await self.ctx.bus.publish_many(topic, items)
            RELAYED.labels(topic).inc(len(items))


def delete_outbox(s: Session, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        s.exec(delete(Outbox).where(col(Outbox.id).in_(ids[i : i + 500])))


class NoOwner(Exception):
    """No partition owner applied a command in time (dispatch restarting, rebalancing, or down): 503."""


class Dispatch:
    """The running dispatch: the owner of its partitions' state, their consumer, the deadline ticker.

    Also the sender of commands: a process that only sends them (the notifier alone, say) never
    starts the consumer and holds no state.
    """

    def __init__(self, ctx: Context, *, classifier: Classifier | None = None) -> None:
        self.ctx = ctx
        self.policies = PolicyStore(ctx.engine, file=ctx.settings.policy_file)
        self.classifier = classifier or Classifier.default()
        self.relay = OutboxRelay(ctx)
        self.state = OwnedState(lambda: Session(ctx.engine, expire_on_commit=False))
        self._lock = asyncio.Lock()  # one batch, tick or hand-over at a time: the state is not shared
        self._consumer: ConsumerLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Ownership: until the consumer starts, this process owns everything (tools and tests that
        # drive `transact` directly); then what the group assigned it.
        self._partition_of: Callable[[str], int] | None = None
        self._owned: set[int] = set()
        self._loaded = False  # whether every owned kecamatan is in memory (and in the timers)
        self._waiters: dict[str, asyncio.Future[Outcome]] = {}
        self._silences_read = float("-inf")  # monotonic time the silences were last read

    # ------------------------------------------------------------------ ownership
    def owns(self, kecamatan: str) -> bool:
        """Whether this process decides the kecamatan (its partition is assigned here)."""
        if self._partition_of is None:
            return True
        return self._partition_of(kecamatan_key(kecamatan)) in self._owned

    def _load_owned(self) -> None:
        """Every owned kecamatan into memory, so that its deadlines and silent posts are in the timers."""
        names = self.state.kecamatan_names()
        n = self.state.load([k for k in names if self.owns(k)])
        self._loaded = True
        if n:
            log.info("dispatch: loaded %d TPS of %d owned partitions", n, len(self._owned) or 1)

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            self._owned |= {p for t, p in partitions if t == topics.FIELD_EVENTS}
            self._loaded = False  # the next batch or tick loads them (here, not inside the rebalance)

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        # The lock: a batch in flight finishes and writes back before the partitions go.
        async with self._lock:
            self._owned -= {p for t, p in partitions if t == topics.FIELD_EVENTS}
            self.state.drop(keep=self.owns)

    # ------------------------------------------------------------------ silences (SPEC section 5)
    def silences_changed(self) -> None:
        """A silence was created or ended here: the next transaction reads them again."""
        self._silences_read = float("-inf")

    def _read_silences(self) -> None:
        if time.monotonic() - self._silences_read < SILENCE_REFRESH_S:
            return
        now = self.ctx.clock.now()
        with Session(self.ctx.engine) as s:
            rows = s.exec(select(Silence).where(col(Silence.ends_at) > now)).all()
        self.state.silence_rules = [
            SilenceRule(
                id=r.id,
                starts_at=as_utc(r.starts_at),
                ends_at=as_utc(r.ends_at),
                reason=r.reason,
                kecamatan=r.kecamatan,
                tps_id=r.tps_id,
                category=r.category,
                kabupaten=r.kabupaten,
                provinsi=r.provinsi,
            )
            for r in rows
        ]
        self._silences_read = time.monotonic()

    # ------------------------------------------------------------------ transactions
    def _run(
        self, fn: Callable[[Engine], T], published: list[int]
    ) -> tuple[T, tuple[list[OutboxMessage], list[int]], list[CommandResult]]:
        try:
            if not self._loaded:
                self._load_owned()
            self._read_silences()
            engine = Engine(self.state, self.policies.current(), self.classifier, self.ctx.clock)
            result = fn(engine)
            engine.finish()
            with Session(self.ctx.engine, expire_on_commit=False) as s:
                rows, results = self.state.flush(s, created_at=self.ctx.clock.now())
                delete_outbox(s, published)  # what earlier transactions put on the bus
                s.commit()
        except BaseException:
            # Memory may hold the half-applied batch: drop it; the database has the truth.
            self.state.discard()
            self._loaded = False
            raise
        return result, rows, results

    async def transact(self, fn: Callable[[Engine], T], *, attempts: int = 5) -> T:
        """Run fn on the engine over the owned state, write the changes back in one transaction, publish.

        Retried from a fresh state when the database refused the write (SQLite busy, say).
        """
        for attempt in range(attempts):
            published = self.relay.take_published()
            try:
                async with self._lock:
                    result, rows, results = await asyncio.to_thread(self._run, fn, published)
                    await self.relay.after_commit(*rows)  # in the lock: messages go out in commit order
                break
            except OperationalError as exc:
                self.relay.give_back(published)  # not deleted after all: next time
                if attempt == attempts - 1:
                    raise
                log.info("transaction failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.05 * (attempt + 1))
            except BaseException:
                self.relay.give_back(published)
                raise
        for r in results:  # senders waiting in this process hear at once
            waiter = self._waiters.get(r.command_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(Outcome(r.status, r.incident_id, r.detail))
        return result

    # ------------------------------------------------------------------ the bus
    async def handle(self, records: list[Record]) -> None:
        """Apply a batch of field events and commands, in order, as one transaction."""
        items: list[Received | CommandBase] = []
        for r in records:
            if r.topic == topics.COMMANDS:
                items.append(COMMAND.validate_json(r.value))
            else:
                items.append(parse_record(r))
        partitions = {(r.topic, r.partition) for r in records}

        def apply_all(engine: Engine) -> None:
            # Records of a partition revoked since they were fetched belong to its new owner, which
            # reads them again from the last commit (and this member cannot commit them).
            if self._partition_of is not None and any(p not in self._owned for _, p in partitions):
                keep = [(r, i) for r, i in zip(records, items, strict=True) if r.partition in self._owned]
            else:
                keep = list(zip(records, items, strict=True))
            state = self.state
            state.preload_processed([_item_id(i) for _, i in keep])
            state.preload_personnel(
                str(i.event.payload.get("personnel_id"))
                for _, i in keep
                if isinstance(i, Received) and i.event.type is EventType.CHECKIN and i.event.payload.get("personnel_id")
            )
            now = self.ctx.clock.now()
            for _, item in keep:
                if isinstance(item, Received):
                    engine.apply(item)
                elif not state.processed(item.command_id):
                    outcome = apply_command(engine, item)
                    confirm(engine, item, outcome)
                    state.mark_processed(item.command_id, now)
                    state.record_result(
                        item.command_id,
                        status=outcome.status,
                        incident_id=outcome.incident_id,
                        detail=outcome.detail,
                        at=now,
                    )

        try:
            with BATCH_SECONDS.time():
                await self.transact(apply_all)
        except (OperationalError, InterfaceError) as exc:
            raise TransientError(f"database unavailable or contended: {type(exc).__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise TransientError("database connection lost") from exc
            raise
        APPLIED.inc(sum(isinstance(i, Received) for i in items))

    async def start(self) -> None:
        self.policies.current()  # fail at start, not at the first event, on a bad policy
        await self.relay.flush()  # what a previous run committed but did not publish
        self._partition_of = await self.ctx.bus.partitioner(topics.FIELD_EVENTS)
        self.state.partition_of = self._partition_of  # which block of short codes (siaga.short_codes)
        source = self.ctx.bus.consumer(
            [topics.FIELD_EVENTS, topics.COMMANDS], "siaga-dispatch", listener=_Ownership(self)
        )
        self._consumer = ConsumerLoop(
            self.ctx.bus, source, self.handle, name="dispatch", max_records=self.ctx.settings.dispatch_batch
        )
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

    # ------------------------------------------------------------------ commands (operators, notifier)
    async def command(self, command: CommandBase, *, wait: bool = True) -> Outcome | None:
        """Send a command to its kecamatan's owner; with `wait`, its outcome (NoOwner when none came).

        Raises BusUnavailable when the bus does not take it.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Outcome] = loop.create_future()
        if wait:
            self._waiters[command.command_id] = waiter
        try:
            await self.ctx.bus.publish(topics.COMMANDS, command.bus_key(), command.to_bytes())
            if not wait:
                return None
            deadline = loop.time() + self.ctx.settings.command_timeout_s
            while True:
                # The owner in this process answers through the waiter; another's through the database.
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(waiter), min(0.05, deadline - loop.time()))
                found = await asyncio.to_thread(self._stored_outcome, command.command_id)
                if found is not None:
                    return found
                if loop.time() >= deadline:
                    raise NoOwner(f"no dispatch applied command {command.command_id} in time")
        finally:
            self._waiters.pop(command.command_id, None)

    def _stored_outcome(self, command_id: str) -> Outcome | None:
        with Session(self.ctx.engine) as s:
            r = s.get(CommandResult, command_id)
            return None if r is None else Outcome(r.status, r.incident_id, r.detail)

    def _kecamatan_of(self, incident_id: str) -> KecamatanKey:
        with Session(self.ctx.engine) as s:
            inc = s.get(Incident, incident_id)
            if inc is None:
                raise KeyError(incident_id)
            return KecamatanKey(kecamatan=inc.kecamatan)

    def _envelope(self, incident_id: str, actor: str) -> dict[str, Any]:
        return {
            "command_id": uuid.uuid4().hex,
            "kecamatan": self._kecamatan_of(incident_id),
            "actor": actor,
            "issued_at": self.ctx.clock.now(),
            "incident_id": incident_id,
        }

    async def _act(self, command: CommandBase) -> Outcome:
        outcome = await self.command(command)
        assert outcome is not None
        if outcome.status == 404:
            raise KeyError(outcome.detail)
        if outcome.status == 409:
            raise NotAllowed(outcome.detail)
        if outcome.status >= 400:
            raise RuntimeError(f"command {command.command_id}: {outcome.status} {outcome.detail}")
        return outcome

    async def acknowledge(self, incident_id: str, *, actor: str) -> None:
        """Raises KeyError (no such incident), NotAllowed (resolved), NoOwner, BusUnavailable."""
        env = await asyncio.to_thread(self._envelope, incident_id, actor)
        await self._act(Acknowledge(**env))

    async def escalate(self, incident_id: str, *, actor: str, note: str = "") -> None:
        env = await asyncio.to_thread(self._envelope, incident_id, actor)
        await self._act(Escalate(**env, note=note))

    async def resolve(self, incident_id: str, *, actor: str, resolution: str) -> None:
        env = await asyncio.to_thread(self._envelope, incident_id, actor)
        await self._act(Resolve(**env, resolution=resolution))

    async def note(self, incident_id: str, *, actor: str, text: str) -> None:
        env = await asyncio.to_thread(self._envelope, incident_id, actor)
        await self._act(AddNote(**env, text=text))

    async def classify(
        self,
        incident_id: str,
        *,
        actor: str,
        category: Category | None,
        severity: Severity | None,
        reason: str,
    ) -> None:
        """An operator's correction of category and/or severity. Raises as `acknowledge` does."""
        env = await asyncio.to_thread(self._envelope, incident_id, actor)
        await self._act(Classify(**env, category=category, severity=severity, reason=reason))

    async def report(self, *, actor: str, tps_id: str, **fields: Any) -> str:
        """A report taken at the command post, for its TPS's owner; returns the incident it opened or
        joined. Raises KeyError (no such TPS), NoOwner, BusUnavailable."""
        kecamatan = await asyncio.to_thread(self._kecamatan_of_tps, tps_id)
        command = ReportFromCommandPost(
            command_id=uuid.uuid4().hex,
            kecamatan=kecamatan,
            actor=actor,
            issued_at=self.ctx.clock.now(),
            tps_id=tps_id,
            **fields,
        )
        outcome = await self._act(command)
        assert outcome.incident_id is not None
        return outcome.incident_id

    def _kecamatan_of_tps(self, tps_id: str) -> KecamatanKey:
        with Session(self.ctx.engine) as s:
            tps = s.get(Tps, tps_id)
            if tps is None:
                raise KeyError(tps_id)
            return KecamatanKey(kecamatan=tps.kecamatan)

    async def assign(
        self,
        incident_id: str,
        *,
        actor: str,
        personnel_id: str | None,
        note: str = "",
        eta_minutes: int | None = None,
    ) -> str:
        """Send a responder (None: the nearest available); returns the order id.

        Raises KeyError (no such incident or person: its text says which), NotAllowed (nobody
        available, the person unavailable, the incident resolved), NoOwner, BusUnavailable.
        """
        env = await asyncio.to_thread(self._envelope, incident_id, actor)
        command = Assign(
            **env, personnel_id=personnel_id, nearest=personnel_id is None, note=note, eta_minutes=eta_minutes
        )
        return (await self._act(command)).detail

    async def broadcast(
        self, targets: list[OrderTarget], *, text: str, priority: Priority, actor: str
    ) -> list[Broadcast]:
        """An operator's message to field devices: one inbox item per target (SPEC section 9).

        A message belongs to no kecamatan's owner, so it is written here: the inbox rows and the
        outbox rows in one transaction, then the relay publishes them (nothing lost, nothing twice
        in the inbox).
        """
        now = self.ctx.clock.now()
        stem = uuid.uuid4().hex[:12].upper()
        items = [
            Broadcast(order_id=f"MSG-{stem}-{n}", target=t, actor=actor, issued_at=now, text=text, priority=priority)
            for n, t in enumerate(targets, 1)
        ]

        def write() -> None:
            with Session(self.ctx.engine) as s:
                insert_inbox(s, [inbox_row(m, kecamatan=None, at=now) for m in items])
                insert_outbox(s, [(m.TOPIC, m.bus_key(), m.to_bytes()) for m in items], now)
                s.commit()

        await asyncio.to_thread(write)
        self.relay.mark_backlog()
        await self.relay.flush()
        return items

    async def delivery(
        self, incident_id: str, *, key: str, channel: str, recipient: str, outcome: str, detail: str
    ) -> None:
        """The notifier's word on a delivery, for the timeline (sent; not waited for)."""
        try:
            env = await asyncio.to_thread(self._envelope, incident_id, f"notifier:{channel}")
        except KeyError:
            return  # an incident this database does not know (nothing to record it on)
        # One id per delivery and outcome: the notifier telling twice records it once.
        env["command_id"] = f"delivery:{key}:{outcome}"
        command = RecordDelivery(
            **env, key=key, channel=channel, recipient=recipient, outcome=DeliveryOutcome(outcome), detail=detail
        )
        await self.command(command, wait=False)

    async def refresh_tps(self, tps: list[Tps], *, actor: str) -> int:
        """Tell the owners that the registry changed these TPS, one command per kecamatan, and wait
        (bounded) until they took them and announced them; returns how many kecamatan did not answer
        in time (their owners take the change when they apply the command, later)."""
        by_kecamatan: dict[str, list[str]] = {}
        for t in tps:
            by_kecamatan.setdefault(t.kecamatan, []).append(t.tps_id)
        now = self.ctx.clock.now()
        commands = [
            RefreshTps(
                command_id=uuid.uuid4().hex,
                kecamatan=KecamatanKey(kecamatan=kecamatan),
                actor=actor,
                issued_at=now,
                tps_ids=ids[i : i + 1000],
            )
            for kecamatan, ids in sorted(by_kecamatan.items())
            for i in range(0, len(ids), 1000)
        ]
        answers = await asyncio.gather(*(self.command(c) for c in commands), return_exceptions=True)
        late = [a for a in answers if isinstance(a, BaseException)]
        for a in late:
            if not isinstance(a, NoOwner | BusUnavailable):
                raise a
        if late:
            log.warning("registry change: %d of %d kecamatan owners did not answer in time", len(late), len(commands))
        return len(late)


def _item_id(item: Received | CommandBase) -> str:
    return item.event.event_id if isinstance(item, Received) else item.command_id


class _Ownership(PartitionListener):
    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        await self.dispatch._assigned(partitions)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        await self.dispatch._revoked(partitions)
