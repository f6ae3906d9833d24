"""One bus interface, two adapters (Kafka, in-process), and the consumer loop both share.

Semantics the services rely on, guaranteed by both adapters and checked by one contract
test suite (tests/contract/test_bus_contract.py):

- `publish` returns only once the message is stored (Kafka: acked by the broker).
- Messages with the same key keep their order (same partition).
- Every consumer group sees every message; within a group partitions are shared.
- Offsets are committed only after the handler finished, so what a handler did not
  finish is redelivered to the group's next consumer (at least once).
- A `broadcast` consumer reads every partition from the beginning and commits nothing
  (the dashboards, which rebuild their picture from the compacted updates topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from prometheus_client import Counter, Gauge

from siaga import topics

log = logging.getLogger("siaga.bus")

CONSUMER_LAG = Gauge(
    "siaga_consumer_lag",
    "Records on the bus this consumer has not read yet (its assigned partitions, summed per topic)",
    ["consumer", "topic"],
)
DEAD_LETTERED = Counter(
    "siaga_dead_letter_total",
    "Messages sent to siaga.dead-letter, by the consumer that gave up and the original topic",
    ["consumer", "topic"],
)
LAG_INTERVAL_S = 10.0  # how often a consumer loop measures its lag


@dataclass(frozen=True)
class Record:
    """One message read from the bus."""

    topic: str
    key: str | None
    value: bytes
    partition: int = 0
    offset: int = 0
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    def json(self) -> object:
        return orjson.loads(self.value)


@dataclass(frozen=True)
class PartitionOffsets:
    """Where a consumer stands in one partition: the next offset it reads, and the partition's end."""

    position: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)


BatchHandler = Callable[[list[Record]], Awaitable[None]]
TopicPartition = tuple[str, int]


class PartitionListener(ABC):
    """Told when a group member's partitions change, so that it can load or write back their state.

    `revoked` is awaited before the partitions go to another member (Kafka: inside the rebalance),
    so a member that finishes its batch and writes back there hands over a consistent state.
    """

    @abstractmethod
    async def assigned(self, partitions: set[TopicPartition]) -> None: ...

    @abstractmethod
    async def revoked(self, partitions: set[TopicPartition]) -> None: ...


class BusUnavailable(Exception):
    """The bus could not take a message in time; callers answer 503 and retry later."""


class TransientError(Exception):
    """A handler could not finish for a reason outside the message (the database is down, say).

    The consumer loop waits and retries the same records for as long as it takes, and never
    dead-letters them: the message is fine, the infrastructure is not.
    """


class ConsumerSource(ABC):
    """A subscription: fetch records, commit what was handled."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]: ...

    @abstractmethod
    async def commit(self, records: Sequence[Record]) -> None:
        """Commit the offsets just past these records (per partition)."""

    @abstractmethod
    async def stop(self) -> None: ...

    async def offsets(self) -> dict[tuple[str, int], PartitionOffsets]:
        """Position and end of every partition assigned now, asked of the bus (not of what was fetched).

        An adapter that cannot tell returns nothing.
        """
        return {}


class Bus(ABC):
    """The bus as the services see it."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and create the topics (idempotent)."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes]], *, timeout_s: float | None = None
    ) -> None:
        """Store every (key, value) on the topic; return only once all are stored.

        Raises BusUnavailable when they could not all be stored in time (some may have been).
        """

    async def publish(self, topic: str, key: str | None, value: bytes, *, timeout_s: float | None = None) -> None:
        await self.publish_many(topic, [(key, value)], timeout_s=timeout_s)

    @abstractmethod
    def consumer(
        self,
        topics_: Sequence[str],
        group: str | None,
        *,
        broadcast: bool = False,
        listener: PartitionListener | None = None,
    ) -> ConsumerSource:
        """A consumer in `group`, or (broadcast=True) one that reads all partitions from the start.

        With a `listener`, the group's members get the same-numbered partitions of every topic they
        read (co-partitioned: a key's field events and commands reach the same member), and the
        listener hears of every change of this member's partitions.
        """

    @abstractmethod
    async def partitioner(self, topic: str) -> Callable[[str], int]:
        """The function that maps a key to its partition of `topic`, as publishing does."""

    @abstractmethod
    async def healthy(self) -> bool:
        """True when the bus can take messages now."""


async def publish_dead_letter(bus: Bus, key: str | None, value: bytes, *, consumer: str, topic: str) -> None:
    """File one message on siaga.dead-letter and count it (`consumer` gave up on a message of `topic`)."""
    await bus.publish(topics.DEAD_LETTER, key, value)
    DEAD_LETTERED.labels(consumer, topic).inc()


def dead_letter_value(record: Record, reason: str, consumer: str) -> bytes:
    """The body of a dead-letter message: where it came from, why, and the original bytes."""
    return orjson.dumps(
        {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
            "consumer": consumer,
            "reason": reason,
            "failed_at": datetime.now(UTC).isoformat(),
            "value": record.value.decode("utf-8", errors="replace"),
        }
    )


class ConsumerLoop:
    """Runs a handler over a subscription: at least once, with poison messages dead-lettered.

    A batch whose handler raises is retried record by record; a record that still fails after
    `attempts` tries goes to siaga.dead-letter with the reason, and the loop goes on.
    """

    def __init__(
        self,
        bus: Bus,
        source: ConsumerSource,
        handler: BatchHandler,
        *,
        name: str,
        attempts: int = 3,
        max_records: int = 500,
        commit: bool = True,
    ) -> None:
        self.bus, self.source, self.handler, self.name = bus, source, handler, name
        self.attempts, self.max_records, self.commit = attempts, max_records, commit
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._lag_topics: set[str] = set()
        self._stopping = False
        self.handled = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        await self.source.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.name}")
        self._lag_task = asyncio.create_task(self._measure_lag(), name=f"consumer-lag:{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._lag_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.source.stop()

    async def measure_lag(self) -> dict[str, int]:
        """Set siaga_consumer_lag for this consumer's topics from the bus; returns the lag per topic."""
        per_topic: dict[str, int] = {}
        for (topic, _), offsets in (await self.source.offsets()).items():
            per_topic[topic] = per_topic.get(topic, 0) + offsets.lag
        for topic in self._lag_topics - per_topic.keys():
            per_topic[topic] = 0  # its partitions moved to another member
        for topic, lag in per_topic.items():
            CONSUMER_LAG.labels(self.name, topic).set(lag)
        self._lag_topics = set(per_topic)
        return per_topic

    async def _measure_lag(self) -> None:
        # Its own task: a handler stuck retrying (the database down) is when the lag matters most.
        while not self._stopping:
            try:
                await self.measure_lag()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("consumer %s: lag not measured: %r", self.name, exc)
            await asyncio.sleep(LAG_INTERVAL_S)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                records = await self.source.fetch(self.max_records, 0.2)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s: fetch failed; retrying", self.name, exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if not records:
                continue
            await self._handle(records)
            if self.commit:
                await self._commit(records)
            self.handled += len(records)

    async def _commit(self, records: list[Record]) -> None:
        while True:
            try:
                await self.source.commit(records)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s: commit failed; retrying", self.name, exc_info=True)
                await asyncio.sleep(1.0)

    async def _handle(self, records: list[Record]) -> None:
        delay = 0.2
        while True:
            try:
                await self.handler(records)
                return
            except asyncio.CancelledError:
                raise
            except TransientError as exc:
                log.warning("consumer %s: %s; retrying the batch in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:
                failure = exc
                break
        if len(records) > 1:
            log.warning("consumer %s: batch of %d failed (%r); retrying one by one", self.name, len(records), failure)
        for record in records:
            await self._handle_one(record)

    async def _handle_one(self, record: Record) -> None:
        reason = ""
        attempt = 0
        while attempt < self.attempts:
            try:
                await self.handler([record])
                return
            except asyncio.CancelledError:
                raise
            except TransientError as exc:
                log.warning("consumer %s: %s; retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue  # not the message's fault: does not count as an attempt
            except Exception as exc:  # the reason goes with the message to dead-letter
                attempt += 1
                reason = f"{type(exc).__name__}: {exc}"[:2000]
                await asyncio.sleep(0.05 * (attempt + 1))
        log.error(
            "consumer %s: %s[%d]@%d to dead-letter: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        while True:
            try:
                value = dead_letter_value(record, reason, self.name)
                await publish_dead_letter(self.bus, record.key, value, consumer=self.name, topic=record.topic)
                self.dead_lettered += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s: dead-letter publish failed; retrying", self.name)
                await asyncio.sleep(1.0)


class PrefixedBus(Bus):
    """A bus whose topics and groups carry a prefix: several deployments (or test runs) on one broker.

    The services keep using the logical names of siaga.topics; the broker sees `<prefix><name>`.
    """

    def __init__(self, inner: Bus, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def healthy(self) -> bool:
        return await self.inner.healthy()

    async def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes]], *, timeout_s: float | None = None
    ) -> None:
        await self.inner.publish_many(self.prefix + topic, items, timeout_s=timeout_s)

    def consumer(
        self,
        topics_: Sequence[str],
        group: str | None,
        *,
        broadcast: bool = False,
        listener: PartitionListener | None = None,
    ) -> ConsumerSource:
        inner = self.inner.consumer(
            [self.prefix + t for t in topics_],
            None if group is None else self.prefix + group,
            broadcast=broadcast,
            listener=None if listener is None else _UnprefixedListener(listener, self.prefix),
        )
        return _UnprefixedSource(inner, self.prefix)

    async def partitioner(self, topic: str) -> Callable[[str], int]:
        return await self.inner.partitioner(self.prefix + topic)


class _UnprefixedListener(PartitionListener):
    def __init__(self, inner: PartitionListener, prefix: str) -> None:
        self.inner, self.cut = inner, len(prefix)

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        await self.inner.assigned({(t[self.cut :], p) for t, p in partitions})

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        await self.inner.revoked({(t[self.cut :], p) for t, p in partitions})


class _UnprefixedSource(ConsumerSource):
    """Hands out records under their logical topic names; commits under the real ones."""

    def __init__(self, inner: ConsumerSource, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        out = await self.inner.fetch(max_records, timeout_s)
        cut = len(self.prefix)
        return [Record(r.topic[cut:], r.key, r.value, r.partition, r.offset, r.headers) for r in out]

    async def offsets(self) -> dict[tuple[str, int], PartitionOffsets]:
        cut = len(self.prefix)
        return {(topic[cut:], p): o for (topic, p), o in (await self.inner.offsets()).items()}

    async def commit(self, records: Sequence[Record]) -> None:
        last: dict[tuple[str, int], Record] = {}  # only the newest offset of a partition is committed
        for r in records:
            held = last.get((r.topic, r.partition))
            if held is None or r.offset > held.offset:
                last[(r.topic, r.partition)] = r
        await self.inner.commit(
            [Record(self.prefix + r.topic, r.key, r.value, r.partition, r.offset, r.headers) for r in last.values()]
        )
