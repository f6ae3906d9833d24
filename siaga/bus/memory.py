"""The in-process bus: the embedded default for a one-process developer run.

Same semantics as Kafka where the services rely on them: partitions by key hash, per-key
order, consumer groups with committed offsets and partitions shared among members,
redelivery from the last commit, broadcast readers from the start.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from siaga.bus import Bus, ConsumerSource, PartitionListener, PartitionOffsets, Record, TopicPartition

DEFAULT_PARTITIONS = 4


def partition_for(key: str | None, partitions: int, counter: int) -> int:
    if key is None:
        return counter % partitions
    return zlib.crc32(key.encode()) % partitions


@dataclass
class _Topic:
    name: str
    partitions: list[list[Record]]
    counter: int = 0


@dataclass
class _Group:
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)


class MemoryBus(Bus):
    def __init__(self, partitions: dict[str, int] | None = None) -> None:
        self._partitions = partitions or {}
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        # Set (and replaced by a fresh one) on every publish. Not a Condition: on Python 3.11,
        # wait_for(condition.wait()) cancelled by its timeout can leave the condition's lock held, and
        # every publisher then blocks for ever on it (a hang seen in CI). An Event wait has no lock.
        self._published = asyncio.Event()
        self.available = True  # tests flip this to play a bus outage

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            n = self._partitions.get(name, DEFAULT_PARTITIONS)
            t = self._topics[name] = _Topic(name, [[] for _ in range(n)])
        return t

    async def start(self) -> None:
        for name in self._partitions:
            self._topic(name)

    async def stop(self) -> None:
        return None

    async def healthy(self) -> bool:
        return self.available

    async def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes]], *, timeout_s: float | None = None
    ) -> None:
        from siaga.bus import BusUnavailable

        if not self.available:
            raise BusUnavailable("in-process bus marked unavailable")
        t = self._topic(topic)
        for key, value in items:
            p = partition_for(key, len(t.partitions), t.counter)
            t.counter += 1
            log_ = t.partitions[p]
            log_.append(Record(topic, key, bytes(value), p, len(log_)))
        woken, self._published = self._published, asyncio.Event()
        woken.set()

    def consumer(
        self,
        topics_: Sequence[str],
        group: str | None,
        *,
        broadcast: bool = False,
        listener: PartitionListener | None = None,
    ) -> ConsumerSource:
        return MemoryConsumer(self, list(topics_), None if broadcast else group, listener)

    async def partitioner(self, topic: str) -> Callable[[str], int]:
        n = len(self._topic(topic).partitions)
        return lambda key: partition_for(key, n, 0)

    # -- group bookkeeping
    def _join(self, c: MemoryConsumer) -> None:
        if c.group is not None:
            self._groups.setdefault(c.group, _Group()).members.append(c)

    def _leave(self, c: MemoryConsumer) -> None:
        if c.group is not None and c.group in self._groups:
            g = self._groups[c.group]
            if c in g.members:
                g.members.remove(c)

    def _assignment(self, c: MemoryConsumer) -> list[tuple[str, int]]:
        all_tp = [(name, p) for name in c.topics for p in range(len(self._topic(name).partitions))]
        if c.group is None:
            return all_tp
        members = self._groups[c.group].members
        i = members.index(c)
        if c.listener is not None:  # co-partitioned: partition p of every topic to the same member
            return [tp for tp in all_tp if tp[1] % len(members) == i]
        return [tp for n, tp in enumerate(all_tp) if n % len(members) == i]


class MemoryConsumer(ConsumerSource):
    def __init__(
        self, bus: MemoryBus, topics_: list[str], group: str | None, listener: PartitionListener | None = None
    ) -> None:
        self.bus, self.topics, self.group, self.listener = bus, topics_, group, listener
        self._positions: dict[tuple[str, int], int] = {}
        self._owned: set[TopicPartition] = set()

    async def start(self) -> None:
        self.bus._join(self)

    async def stop(self) -> None:
        self.bus._leave(self)
        if self.listener is not None and self._owned:
            owned, self._owned = self._owned, set()
            await self.listener.revoked(owned)

    async def _rebalance(self) -> None:
        """Tell the listener what changed since the last fetch (members joined or left)."""
        if self.listener is None:
            return
        now = set(self.bus._assignment(self))
        gone, new = self._owned - now, now - self._owned
        if gone:
            self._owned -= gone
            await self.listener.revoked(gone)
        if new:
            self._owned |= new
            await self.listener.assigned(new)

    def _position(self, tp: tuple[str, int]) -> int:
        if tp not in self._positions:
            if self.group is None:
                self._positions[tp] = 0
            else:
                self._positions[tp] = self.bus._groups[self.group].committed.get(tp, 0)
        return self._positions[tp]

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        assigned = self.bus._assignment(self)
        # A partition handed over by a rebalance restarts from the group's commit.
        for tp in list(self._positions):
            if tp not in assigned:
                del self._positions[tp]
        for tp in assigned:
            part = self.bus._topic(tp[0]).partitions[tp[1]]
            pos = self._position(tp)
            if pos < len(part):
                chunk = part[pos : pos + max_records - len(out)]
                out.extend(chunk)
                self._positions[tp] = pos + len(chunk)
            if len(out) >= max_records:
                break
        return out

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        await self._rebalance()
        published = self.bus._published  # taken before looking, so a publish after the look wakes us
        records = self._take(max_records)
        if records:
            return records
        try:
            await asyncio.wait_for(published.wait(), timeout_s)
        except TimeoutError:
            return []
        await self._rebalance()
        return self._take(max_records)

    async def offsets(self) -> dict[tuple[str, int], PartitionOffsets]:
        return {
            tp: PartitionOffsets(position=self._position(tp), end=len(self.bus._topic(tp[0]).partitions[tp[1]]))
            for tp in self.bus._assignment(self)
        }

    async def commit(self, records: Sequence[Record]) -> None:
        if self.group is None:
            return
        committed = self.bus._groups[self.group].committed
        for r in records:
            tp = (r.topic, r.partition)
            committed[tp] = max(committed.get(tp, 0), r.offset + 1)
