"""The Kafka adapter of the bus (aiokafka), for production and the broker tests.

- `start()` creates the missing topics with the configured partition counts
  (siaga.incident-updates compacted) and starts one idempotent producer.
- `publish_many()` returns once the broker acked every message, else raises BusUnavailable
  after `publish_timeout_s`. The producer reconnects by itself when the broker comes back;
  one that keeps failing while the broker answers is replaced.
- `consumer()` gives a group consumer (manual commits after the handler) or a broadcast
  reader (every partition from the beginning, no group, no commits).

See docs/kafka.md for the local broker and what was checked against Kafka 4.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from siaga import topics
from siaga.bus import Bus, BusUnavailable, ConsumerSource, PartitionListener, PartitionOffsets, Record

log = logging.getLogger("siaga.bus.kafka")

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code

# Per-topic settings beyond the partition count; the updates topic keeps the latest state per key.
DEFAULT_TOPIC_CONFIGS: dict[str, dict[str, str]] = {topics.INCIDENT_UPDATES: {"cleanup.policy": "compact"}}

HEALTH_CACHE_S = 1.0
STUCK_AFTER_S = 15.0  # publishes timing out this long (broker answering) mean a stuck producer


class KafkaBus(Bus):
    """The bus on an Apache Kafka cluster.

    Timeouts are short by default (a few seconds) so that an outage is seen quickly; raise
    `request_timeout_s` for a slow or remote cluster.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        partitions: Mapping[str, int],
        client_id: str = "siaga",
        publish_timeout_s: float = 5.0,
        replication_factor: int = 1,
        topic_configs: Mapping[str, Mapping[str, str]] | None = None,
        request_timeout_s: float = 5.0,
        linger_ms: int = 5,
        max_batch_bytes: int = 256 * 1024,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
    ) -> None:
        self.bootstrap = bootstrap
        self.partitions = dict(partitions)
        self.client_id = client_id
        self.publish_timeout_s = publish_timeout_s
        self.replication_factor = replication_factor
        configs = DEFAULT_TOPIC_CONFIGS if topic_configs is None else topic_configs
        self.topic_configs = {k: dict(v) for k, v in configs.items()}
        self.request_timeout_s = request_timeout_s
        self.linger_ms = linger_ms
        self.max_batch_bytes = max_batch_bytes
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self._probe: asyncio.Task[None] | None = None
        self._failing_since: float | None = None  # start of the current run of failed publishes
        self._health: tuple[float, bool] = (float("-inf"), False)

    @property
    def _request_timeout_ms(self) -> int:
        return int(self.request_timeout_s * 1000)

    # -- lifecycle

    async def start(self) -> None:
        """Create the missing topics and start the producer.

        Raises BusUnavailable when the broker cannot be reached within the request timeout.
        """
        try:
            await asyncio.wait_for(self.ensure_topics(self.partitions), self.request_timeout_s * 2)
            await self._ensure_producer()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BusUnavailable(f"Kafka at {self.bootstrap} is not reachable: {exc!r}") from exc

    async def stop(self) -> None:
        """Flush what is pending and close every connection."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close_producer(producer)
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _admin_client(self) -> AIOKafkaAdminClient:
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id=f"{self.client_id}-admin",
                    request_timeout_ms=self._request_timeout_ms,
                )
                try:
                    await admin.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await admin.close()
                    raise
                self._admin = admin
            return self._admin

    async def ensure_topics(self, partitions: Mapping[str, int]) -> None:
        """Create those of `partitions` (name -> partition count) that do not exist yet."""
        admin = await self._admin_client()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=self.replication_factor,
                topic_configs=self.topic_configs.get(name, {}),
            )
            for name, count in partitions.items()
            if name not in existing
        ]
        present = [name for name in partitions if name in existing]
        if present:
            # Existing topics are left alone (changing partitions would move keys between them).
            for described in await admin.describe_topics(present):
                name = described["topic"]
                if name in partitions and len(described["partitions"]) != partitions[name]:
                    log.warning(
                        "topic %s has %d partitions, configured %d: left as it is",
                        name,
                        len(described["partitions"]),
                        partitions[name],
                    )
        if not missing:
            return
        response = await admin.create_topics(missing, timeout_ms=self._request_timeout_ms)
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            # Another process may have created it between our list and create: that is fine.
            if code not in (0, TOPIC_ALREADY_EXISTS):
                message = topic_error[2] if len(topic_error) > 2 else ""
                raise KafkaError(f"could not create topic {name}: error {code} {message}")
        log.info("created topics %s", ", ".join(t.name for t in missing))
        await self._await_leaders([t.name for t in missing])

    async def _await_leaders(self, names: list[str]) -> None:
        """Wait (briefly) until every partition of new topics has a leader.

        Right after CreateTopics the broker may still answer NOT_LEADER for a moment; the
        producer would retry, but the first publish is faster and quieter without that.
        """
        admin = await self._admin_client()
        deadline = time.monotonic() + self.request_timeout_s
        while time.monotonic() < deadline:
            described = await admin.describe_topics(names)
            if len(described) == len(names) and all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.05)

    async def partitions_of(self, topic: str) -> list[int]:
        """The partition numbers of an existing topic (empty when it does not exist)."""
        admin = await self._admin_client()
        for described in await admin.describe_topics([topic]):
            if described["topic"] == topic and described["error_code"] == 0:
                return sorted(p["partition"] for p in described["partitions"])
        return []

    # -- producing

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_idempotence=True,  # implies acks=all; retries cannot duplicate or reorder
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=self.max_batch_bytes,
            request_timeout_ms=self._request_timeout_ms,
            retry_backoff_ms=100,
        )

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is not None and _sender_died(self._producer):
                log.warning("Kafka producer's sender task ended: replacing the producer")
                self._retire_producer(self._producer)
            if self._producer is None:
                producer = self._new_producer()
                try:
                    await producer.start()
                except BaseException:
                    # start() failed half way (broker down): release what it opened.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), self.request_timeout_s)
                    raise
                self._producer = producer
            return self._producer

    async def _close_producer(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self.request_timeout_s * 2)
        except Exception:
            log.warning("Kafka producer did not close cleanly", exc_info=True)

    def _retire_producer(self, producer: AIOKafkaProducer) -> None:
        """Replace a producer that no longer delivers; the old one closes in the background."""
        if self._producer is producer:
            self._producer = None
            task = asyncio.create_task(self._close_producer(producer), name="kafka-producer-close")
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes]], *, timeout_s: float | None = None
    ) -> None:
        """Send every (key, value) and wait for all acks; BusUnavailable if not all acked in time."""
        if not items:
            return
        timeout = self.publish_timeout_s if timeout_s is None else timeout_s
        producer = self._producer
        try:
            async with asyncio.timeout(timeout):
                if producer is None or _sender_died(producer):
                    producer = await self._ensure_producer()
                if len(items) == 1:
                    key, value = items[0]
                    await (await producer.send(topic, value=value, key=None if key is None else key.encode()))
                else:
                    await asyncio.gather(*await _send_batched(producer, topic, items))
        # A timeout cancels the futures awaited here, not the messages: the producer skips cancelled
        # futures and still delivers what it holds once the broker is back (the caller was told
        # BusUnavailable and retries; handlers are idempotent). Any failure of a send is the bus's.
        except Exception as exc:
            self._after_failure(producer, exc)
            raise BusUnavailable(f"Kafka did not take messages for {topic} within {timeout}s: {exc!r}") from exc
        self._failing_since = None

    def _after_failure(self, producer: AIOKafkaProducer | None, exc: Exception) -> None:
        """After a failed publish: keep the producer through an outage or a load peak, replace it if
        it is stuck.

        aiokafka's producer reconnects by itself when the broker returns and still delivers what it
        holds. One that fails although the broker answers (a fenced producer id, a wedged
        connection) would never recover: it is replaced. A timeout alone is not enough: a broker
        that answers slowly under load times some sends out, and replacing the producer then would
        fail everything it holds. Timeouts count only once they have lasted STUCK_AFTER_S without a
        success. The check runs in the background so that the caller hears BusUnavailable in time.
        """
        self._health = (float("-inf"), False)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        timed_out = isinstance(exc, TimeoutError | KafkaTimeoutError)
        if producer is None or self._probe is not None or (timed_out and now - self._failing_since < STUCK_AFTER_S):
            return
        self._probe = asyncio.create_task(self._replace_if_stuck(producer), name="kafka-producer-probe")

    async def _replace_if_stuck(self, producer: AIOKafkaProducer) -> None:
        try:
            if await self._broker_answers():
                log.warning("Kafka producer failed while the broker answers: replacing it")
                self._retire_producer(producer)
        finally:
            self._probe = None

    # -- consuming

    def consumer(
        self,
        topics_: Sequence[str],
        group: str | None,
        *,
        broadcast: bool = False,
        listener: PartitionListener | None = None,
    ) -> ConsumerSource:
        """A member of `group`, or (broadcast=True or no group) a reader of all partitions from the start."""
        return KafkaConsumerSource(self, list(topics_), None if broadcast else group, listener)

    async def partitioner(self, topic: str) -> Callable[[str], int]:
        """Kafka's default partitioner (murmur2 of the key) over the topic's partitions, as send() uses."""
        partitions = await self.partitions_of(topic)
        if not partitions:
            raise BusUnavailable(f"topic {topic} does not exist (yet)")
        default = DefaultPartitioner()
        return lambda key: int(default(key.encode(), partitions, partitions))

    # -- health

    async def _broker_answers(self) -> bool:
        try:
            admin = await asyncio.wait_for(self._admin_client(), self.request_timeout_s)
            cluster = await asyncio.wait_for(admin.describe_cluster(), min(2.0, self.request_timeout_s))
        except Exception:
            return False
        return bool(cluster.get("brokers"))

    async def healthy(self) -> bool:
        """Whether the broker answers now (checked at most once a second)."""
        checked_at, ok = self._health
        now = time.monotonic()
        if now - checked_at < HEALTH_CACHE_S:
            return ok
        ok = await self._broker_answers()
        self._health = (time.monotonic(), ok)
        return ok


async def _send_batched(
    producer: AIOKafkaProducer, topic: str, items: Sequence[tuple[str | None, bytes]]
) -> list[asyncio.Future[Any]]:
    """Queue many messages as one record batch per partition: one future per batch, not per message.

    `send()` costs a coroutine, a metadata check, a partitioner call and a future for every
    message, a third of ingest's CPU on a batch of 500 (docs/benchmarks.md). Partitions are chosen
    exactly as `send()` chooses them (the default partitioner over the same partition list), so a
    key lands on the same partition whichever way it was sent, and order within a key is kept.

    aiokafka holds one submitted batch per partition until its sender takes it: a second
    `send_batch` waits for that, and with many requests in flight gives up (KafkaTimeoutError).
    Where a batch is already waiting, messages go by `send()` instead, which appends them to it.
    """
    partitions = await producer.partitions_for(topic)
    all_partitions, partitioner = list(partitions), DefaultPartitioner()
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    partition_of: dict[str | None, int] = {}  # a batch is mostly one TPS: hash each key once
    for key, value in items:
        p = partition_of.get(key)
        key_bytes = None if key is None else key.encode()
        if p is None:
            p = partition_of[key] = partitioner(key_bytes, all_partitions, all_partitions)
        by_partition.setdefault(p, []).append((key_bytes, value))
    waiting = getattr(getattr(producer, "_message_accumulator", None), "_batches", None)  # aiokafka 0.14
    futures: list[asyncio.Future[Any]] = []
    for p, messages in by_partition.items():
        if waiting is None or waiting.get(TopicPartition(topic, p)):
            futures += [await producer.send(topic, value=v, key=k, partition=p) for k, v in messages]
            continue
        builder = producer.create_batch()
        for key_bytes, value in messages:
            if builder.append(key=key_bytes, value=value, timestamp=None) is None:  # full: send it, start another
                futures.append(await producer.send_batch(builder, topic, partition=p))
                builder = producer.create_batch()
                builder.append(key=key_bytes, value=value, timestamp=None)  # an empty batch takes any one message
        futures.append(await producer.send_batch(builder, topic, partition=p))
    return futures


def _sender_died(producer: AIOKafkaProducer) -> bool:
    """Whether the producer's background sender ended (after an unexpected error it never restarts).

    aiokafka has no public way to ask; without the attribute we assume it is alive and rely on
    the probe after a failed publish.
    """
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return isinstance(task, asyncio.Task) and task.done()


class _RebalanceLog(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs rebalances and tells the member's listener. Commits need nothing here: the loop commits
    after every batch, and what was fetched but not committed when a partition moves is redelivered
    to its new owner."""

    def __init__(self, name: str, listener: PartitionListener | None = None) -> None:
        self.name, self.listener = name, listener

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("consumer %s: partitions revoked: %s", self.name, sorted(map(tuple, revoked)))
        if self.listener is not None and revoked:
            await self.listener.revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("consumer %s: partitions assigned: %s", self.name, sorted(map(tuple, assigned)))
        if self.listener is not None and assigned:
            await self.listener.assigned({(tp.topic, tp.partition) for tp in assigned})


class KafkaConsumerSource(ConsumerSource):
    """A group member with manual commits, or (group None) a broadcast reader of every partition."""

    def __init__(
        self, bus: KafkaBus, topics_: list[str], group: str | None, listener: PartitionListener | None = None
    ) -> None:
        self.bus, self.topics, self.group, self.listener = bus, topics_, group, listener
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def broadcast(self) -> bool:
        return self.group is None

    async def start(self) -> None:
        """Join the group (or assign every partition, from the beginning, when broadcast)."""
        bus = self.bus
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap,
            client_id=f"{bus.client_id}-{self.group or 'broadcast'}",
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=bus._request_timeout_ms,
            session_timeout_ms=bus.session_timeout_ms,
            heartbeat_interval_ms=bus.heartbeat_interval_ms,
            retry_backoff_ms=100,
            # With a listener: partition p of every topic to one member (field events and commands of a
            # key meet at one owner). The range assignor does that; the default round robin does not.
            **({"partition_assignment_strategy": (RangePartitionAssignor,)} if self.listener is not None else {}),
        )
        await consumer.start()
        try:
            if self.broadcast:
                assignment = [TopicPartition(t, p) for t in self.topics for p in await bus.partitions_of(t)]
                consumer.assign(assignment)
                await consumer.seek_to_beginning(*assignment)
            else:
                consumer.subscribe(
                    self.topics, listener=_RebalanceLog(f"{self.group}:{','.join(self.topics)}", self.listener)
                )
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this consumer reads now (changes with rebalances)."""
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        return self._consumer

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout_s` when none are ready."""
        batches = await self._require().getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Record] = []
        for messages in batches.values():
            for m in messages:
                out.append(
                    Record(
                        topic=m.topic,
                        key=None if m.key is None else m.key.decode("utf-8", errors="replace"),
                        value=b"" if m.value is None else m.value,  # a tombstone has no value
                        partition=m.partition,
                        offset=m.offset,
                        headers=tuple((k, v) for k, v in (m.headers or ())),
                    )
                )
        return out

    async def offsets(self) -> dict[tuple[str, int], PartitionOffsets]:
        """Position and end of each assigned partition; the ends are asked of the broker now."""
        consumer = self._require()
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        timeout = self.bus.request_timeout_s
        ends = await asyncio.wait_for(consumer.end_offsets(assigned), timeout)
        out: dict[tuple[str, int], PartitionOffsets] = {}
        for tp in assigned:
            position = await asyncio.wait_for(consumer.position(tp), timeout)
            out[tp.topic, tp.partition] = PartitionOffsets(position=position, end=ends[tp])
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        """Commit offset+1 of the last record per partition still assigned to this member."""
        if self.broadcast or not records:
            return
        consumer = self._require()
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        # A partition moved away by a rebalance belongs to another member now, which
        # starts from the last commit: committing it here would fail forever.
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The membership changed under us: the new owner redelivers from the last commit.
            log.warning("consumer %s: commit skipped after a rebalance: %r", self.group, exc)

    async def stop(self) -> None:
        """Leave the group and close; nothing is committed here (the loop committed what it handled)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), self.bus.request_timeout_s * 2)
            except Exception:
                log.warning("Kafka consumer did not close cleanly", exc_info=True)
