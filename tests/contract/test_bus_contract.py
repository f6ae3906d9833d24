"""The bus contract (siaga/bus/__init__.py), one suite run against MemoryBus and KafkaBus.

On Kafka every test gets its own topics and groups, created through the bus's partitions dict.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import orjson
import pytest

from siaga import topics
from siaga.bus import Bus, ConsumerLoop, ConsumerSource, Record
from siaga.bus.kafka import KafkaBus, KafkaConsumerSource
from siaga.bus.memory import MemoryBus, MemoryConsumer

PARTITIONS = 4
WAIT_S = 20.0  # upper bound for anything to arrive; tests finish as soon as it has


@dataclass
class Harness:
    """A started bus plus names that belong to this test alone."""

    bus: Bus
    prefix: str

    @property
    def topic(self) -> str:
        return f"{self.prefix}.a"

    def group(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    async def consumer(self, group: str | None, *, broadcast: bool = False, topic: str | None = None) -> ConsumerSource:
        source = self.bus.consumer([topic or self.topic], group, broadcast=broadcast)
        await source.start()
        return source


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    prefix = f"contract-{uuid.uuid4().hex[:10]}"
    partitions = {f"{prefix}.a": PARTITIONS, f"{prefix}.b": PARTITIONS, topics.DEAD_LETTER: 1}
    bus: Bus
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        bus = KafkaBus(bootstrap, partitions=partitions, client_id=prefix)
    else:
        bus = MemoryBus(partitions)
    await bus.start()
    try:
        yield Harness(bus, prefix)
    finally:
        await bus.stop()


def message(key: str, n: int) -> tuple[str, bytes]:
    return key, orjson.dumps({"key": key, "n": n})


async def fetch_until(source: ConsumerSource, count: int, *, commit: bool = False) -> list[Record]:
    """Fetch until `count` records arrived (or WAIT_S passed), committing each batch if asked."""
    out: list[Record] = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < count and time.monotonic() < deadline:
        batch = await source.fetch(500, 0.2)
        if commit and batch:
            await source.commit(batch)
        out.extend(batch)
    return out


async def fetch_quiet(source: ConsumerSource, seconds: float = 1.0) -> list[Record]:
    """What else arrives within `seconds`: used to show that nothing more comes."""
    out: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.extend(await source.fetch(500, 0.2))
    return out


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once `condition` holds, or after WAIT_S (the assertions that follow then fail)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)


def assignment(bus: Bus, source: ConsumerSource) -> set[tuple[str, int]]:
    if isinstance(source, KafkaConsumerSource):
        return source.assignment()
    assert isinstance(bus, MemoryBus) and isinstance(source, MemoryConsumer)
    return set(bus._assignment(source))


async def settle(bus: Bus, members: Sequence[ConsumerSource], partitions: set[tuple[str, int]]) -> None:
    """Wait until the group's members split `partitions` among them, each holding some."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        # Fetching keeps each Kafka member's group protocol (heartbeats, rejoin) moving.
        for m in members:
            assert await m.fetch(10, 0.05) == []
        held = [assignment(bus, m) for m in members]
        if all(held) and sum(len(h) for h in held) == len(partitions) and set().union(*held) == partitions:
            return
    raise AssertionError(f"group did not settle: {[assignment(bus, m) for m in members]}")


def values(records: Sequence[Record]) -> list[tuple[str | None, int]]:
    out = []
    for r in records:
        body = r.json()
        assert isinstance(body, dict)
        out.append((r.key, int(body["n"])))
    return out


async def test_publish_then_consume(harness: Harness) -> None:
    await harness.bus.publish(harness.topic, "tps-1", b'{"n": 1}')
    source = await harness.consumer(harness.group("g"))
    try:
        records = await fetch_until(source, 1)
    finally:
        await source.stop()
    assert len(records) == 1
    r = records[0]
    assert (r.topic, r.key, r.value) == (harness.topic, "tps-1", b'{"n": 1}')
    assert 0 <= r.partition < PARTITIONS
    assert r.offset == 0


async def test_order_is_kept_per_key(harness: Harness) -> None:
    keys = [f"tps-{i}" for i in range(20)]
    total = 0
    for round_ in range(10):  # several calls: order must hold across publishes, not just within one
        await harness.bus.publish_many(harness.topic, [message(k, round_ * 10 + j) for k in keys for j in range(10)])
        total += len(keys) * 10
    source = await harness.consumer(harness.group("g"))
    try:
        records = await fetch_until(source, total)
    finally:
        await source.stop()
    assert len(records) == total
    seen: dict[str | None, list[int]] = defaultdict(list)
    partition_of: dict[str | None, set[int]] = defaultdict(set)
    for r, (key, n) in zip(records, values(records), strict=True):
        seen[key].append(n)
        partition_of[key].add(r.partition)
    assert set(seen) == set(keys)
    for key in keys:
        assert seen[key] == list(range(100)), key
        assert len(partition_of[key]) == 1, "one key, one partition"
    assert len({p for ps in partition_of.values() for p in ps}) > 1, "keys spread over partitions"


async def test_every_group_sees_everything(harness: Harness) -> None:
    sent = [message(f"tps-{i % 7}", i) for i in range(50)]
    await harness.bus.publish_many(harness.topic, sent)
    g1 = await harness.consumer(harness.group("one"))
    g2 = await harness.consumer(harness.group("two"))
    try:
        got1, got2 = await asyncio.gather(fetch_until(g1, 50, commit=True), fetch_until(g2, 50, commit=True))
    finally:
        await g1.stop()
        await g2.stop()
    expected = Counter((k, orjson.loads(v)["n"]) for k, v in sent)
    assert Counter(values(got1)) == expected
    assert Counter(values(got2)) == expected


async def test_one_group_shares_partitions_without_duplicates(harness: Harness) -> None:
    group = harness.group("shared")
    a = await harness.consumer(group)
    b = await harness.consumer(group)
    try:
        await settle(harness.bus, [a, b], {(harness.topic, p) for p in range(PARTITIONS)})
        sent = [message(f"tps-{i % 40}", i) for i in range(200)]
        await harness.bus.publish_many(harness.topic, sent)
        got: dict[str, list[Record]] = {"a": [], "b": []}
        deadline = time.monotonic() + WAIT_S
        while len(got["a"]) + len(got["b"]) < len(sent) and time.monotonic() < deadline:
            for name, source in (("a", a), ("b", b)):
                batch = await source.fetch(500, 0.1)
                await source.commit(batch)
                got[name].extend(batch)
        got["a"] += await fetch_quiet(a, 0.5)
        got["b"] += await fetch_quiet(b, 0.5)
    finally:
        await a.stop()
        await b.stop()
    assert got["a"] and got["b"], "both members got a share"
    assert {r.partition for r in got["a"]}.isdisjoint({r.partition for r in got["b"]})
    both = values(got["a"]) + values(got["b"])
    assert len(both) == len(sent), "no record twice, none lost"
    assert Counter(both) == Counter((k, orjson.loads(v)["n"]) for k, v in sent)


async def test_uncommitted_records_come_again_committed_do_not(harness: Harness) -> None:
    group = harness.group("crashy")
    await harness.bus.publish_many(harness.topic, [message(f"tps-{i % 5}", i) for i in range(30)])

    first = await harness.consumer(group)
    handled = await fetch_until(first, 30)
    await first.stop()  # a crash: nothing committed
    assert len(handled) == 30

    second = await harness.consumer(group)
    again = await fetch_until(second, 30, commit=True)
    assert sorted(values(again)) == sorted(values(handled)), "the uncommitted records are redelivered"
    await harness.bus.publish_many(harness.topic, [message("tps-new", i) for i in range(100, 105)])
    fresh = await fetch_until(second, 5, commit=True)
    await second.stop()  # everything it fetched was committed

    third = await harness.consumer(group)
    try:
        # Once it holds every partition, it would have been given anything uncommitted.
        await settle(harness.bus, [third], {(harness.topic, p) for p in range(PARTITIONS)})
        more = await fetch_quiet(third, 1.0)
    finally:
        await third.stop()
    assert sorted(values(fresh)) == [("tps-new", n) for n in range(100, 105)]
    assert more == [], "committed records are not delivered again"


async def test_broadcast_reads_everything_from_the_beginning(harness: Harness) -> None:
    sent = [message(f"tps-{i % 9}", i) for i in range(40)]
    await harness.bus.publish_many(harness.topic, sent)
    expected = Counter((k, orjson.loads(v)["n"]) for k, v in sent)

    first = await harness.consumer(None, broadcast=True)
    try:
        got = await fetch_until(first, 40)
        await first.commit(got)  # a no-op for broadcast readers
        await harness.bus.publish(harness.topic, "tps-late", orjson.dumps({"n": 99}))
        late = await fetch_until(first, 1)
    finally:
        await first.stop()
    assert Counter(values(got)) == expected
    assert values(late) == [("tps-late", 99)], "a broadcast reader follows new records too"

    second = await harness.consumer("ignored-group", broadcast=True)
    try:
        again = await fetch_until(second, 41)
    finally:
        await second.stop()
    assert Counter(values(again)) == expected + Counter({("tps-late", 99): 1})


async def test_consumer_loop_dead_letters_a_poison_record_and_goes_on(harness: Harness) -> None:
    handled: list[int] = []

    async def handler(records: list[Record]) -> None:
        for r in records:
            body = r.json()
            assert isinstance(body, dict)
            if body.get("poison"):
                raise ValueError(f"cannot handle record {body['n']}")
        handled.extend(int(body["n"]) for body in (r.json() for r in records) if isinstance(body, dict))

    source = harness.bus.consumer([harness.topic], harness.group("loop"))
    loop = ConsumerLoop(harness.bus, source, handler, name=harness.group("loop"), attempts=2)
    await loop.start()
    try:
        # One key: one partition, so the poison record sits between the two good ones.
        await harness.bus.publish_many(
            harness.topic,
            [("tps-1", b'{"n": 1}'), ("tps-1", b'{"n": 2, "poison": true}'), ("tps-1", b'{"n": 3}')],
        )
        await eventually(lambda: loop.dead_lettered >= 1 and len(handled) >= 2)
        await harness.bus.publish(harness.topic, "tps-1", b'{"n": 4}')
        await eventually(lambda: len(handled) >= 3)
    finally:
        await loop.stop()
    assert handled == [1, 3, 4]
    assert loop.dead_lettered == 1

    # The dead-letter topic is shared (on Kafka, by every test): find this test's entry.
    reader = await harness.consumer(None, broadcast=True, topic=topics.DEAD_LETTER)
    try:
        letters: list[dict[str, object]] = []
        deadline = time.monotonic() + WAIT_S
        while not letters and time.monotonic() < deadline:
            for r in await reader.fetch(500, 0.2):
                body = r.json()
                if isinstance(body, dict) and body.get("topic") == harness.topic:
                    assert r.key == "tps-1"
                    letters.append(body)
    finally:
        await reader.stop()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["reason"] == "ValueError: cannot handle record 2"
    assert letter["consumer"] == harness.group("loop")
    assert orjson.loads(str(letter["value"])) == {"n": 2, "poison": True}


async def test_publish_many_of_500(harness: Harness) -> None:
    sent = [message(f"tps-{i % 50}", i) for i in range(500)]
    await harness.bus.publish_many(harness.topic, sent)  # raises BusUnavailable if not all acked in time
    source = await harness.consumer(harness.group("bulk"))
    try:
        got = await fetch_until(source, 500)
    finally:
        await source.stop()
    assert Counter(values(got)) == Counter((k, orjson.loads(v)["n"]) for k, v in sent)


async def test_concurrent_publishes_all_land_one_partition_per_key(harness: Harness) -> None:
    """Many batches and single messages in flight at once (ingest under load): every one is acked and
    stored, a key stays on one partition whichever way it was sent, and each publisher's order holds."""

    async def publisher(n: int) -> None:
        for round_ in range(5):
            if n % 4 == 0:  # single messages, like POST /v1/events
                for j in range(20):
                    await harness.bus.publish_many(harness.topic, [message(f"p{n}", round_ * 20 + j)])
            else:
                await harness.bus.publish_many(harness.topic, [message(f"p{n}", round_ * 20 + j) for j in range(20)])

    await asyncio.gather(*(publisher(n) for n in range(16)))
    source = await harness.consumer(harness.group("many"))
    try:
        records = await fetch_until(source, 16 * 100)
    finally:
        await source.stop()
    by_key: dict[str | None, list[int]] = defaultdict(list)
    partition_of: dict[str | None, set[int]] = defaultdict(set)
    for r, (key, n) in zip(records, values(records), strict=True):
        by_key[key].append(n)
        partition_of[key].add(r.partition)
    assert len(records) == 16 * 100
    assert all(ns == list(range(100)) for ns in by_key.values()), "each publisher's order kept"
    assert all(len(ps) == 1 for ps in partition_of.values()), partition_of


# -- partition ownership: the listener and the partitioner ---------------------------------------
class Told:
    """A listener that records what it was told, and what the member holds after each call."""

    def __init__(self) -> None:
        self.owned: set[tuple[str, int]] = set()
        self.calls: list[tuple[str, set[tuple[str, int]]]] = []

    async def assigned(self, partitions: set[tuple[str, int]]) -> None:
        assert not partitions & self.owned, "assigned a partition it already holds"
        self.owned |= partitions
        self.calls.append(("assigned", set(partitions)))

    async def revoked(self, partitions: set[tuple[str, int]]) -> None:
        assert partitions <= self.owned, "revoked a partition it did not hold"
        self.owned -= partitions
        self.calls.append(("revoked", set(partitions)))


async def test_the_partitioner_names_the_partition_publish_uses(harness: Harness) -> None:
    keys = [f"kecamatan-{i}" for i in range(40)]
    await harness.bus.publish_many(harness.topic, [message(k, 0) for k in keys])
    reader = await harness.consumer(None, broadcast=True)
    try:
        got = await fetch_until(reader, len(keys))
    finally:
        await reader.stop()
    partition_of = await harness.bus.partitioner(harness.topic)
    assert {r.key: r.partition for r in got} == {k: partition_of(k) for k in keys}
    assert len({partition_of(k) for k in keys}) == PARTITIONS, "40 keys spread over every partition"


async def test_a_listener_hears_its_partitions_and_members_get_the_same_numbers_of_every_topic(
    harness: Harness,
) -> None:
    from siaga.bus import PartitionListener

    other = f"{harness.prefix}.b"
    both = {(t, p) for t in (harness.topic, other) for p in range(PARTITIONS)}
    group = harness.group("owners")
    told = [Told(), Told()]

    def listener(t: Told) -> PartitionListener:
        class Adapter(PartitionListener):
            async def assigned(self, partitions: set[tuple[str, int]]) -> None:
                await t.assigned(partitions)

            async def revoked(self, partitions: set[tuple[str, int]]) -> None:
                await t.revoked(partitions)

        return Adapter()

    first = harness.bus.consumer([harness.topic, other], group, listener=listener(told[0]))
    await first.start()
    try:
        await settle(harness.bus, [first], both)
        await eventually(lambda: told[0].owned == both)
        assert told[0].owned == both
        second = harness.bus.consumer([harness.topic, other], group, listener=listener(told[1]))
        await second.start()
        try:
            await settle(harness.bus, [first, second], both)
            await eventually(lambda: told[0].owned | told[1].owned == both and bool(told[1].owned))
            assert told[0].owned == assignment(harness.bus, first) and told[1].owned == assignment(harness.bus, second)
            for t in told:  # co-partitioned: a member holds partition p of both topics or of neither
                numbers = {p for _, p in t.owned}
                assert t.owned == {(topic, p) for topic in (harness.topic, other) for p in numbers}
            assert any(kind == "revoked" for kind, _ in told[0].calls), "the first member gave partitions up"
        finally:
            await second.stop()
        await settle(harness.bus, [first], both)
        await eventually(lambda: told[0].owned == both)
        assert told[0].owned == both
    finally:
        await first.stop()
