"""Replaying siaga.dead-letter: read its entries, pick some, publish their original messages again.

A dead-letter entry (siaga.bus.dead_letter_value, or the notifier's richer one) carries the
original topic, partition, offset, key and value, the consumer that gave up and why. Replaying
publishes the value again under its key to its original topic, where the consumers treat it as
any redelivery: dispatch applies a field event at most once (by event_id), the notifier sends
to a recipient at most once (by idempotency key). A replay of something already applied is
therefore harmless, and running the same replay twice is too.

What is never replayed: entries of siaga.incident-updates (the topic is compacted; an old
copy published now would become the incident's latest state and hide the newer one), entries
naming a topic that is not Siaga's, and entries that cannot be read. The replay reads up to the
end the topic had when it started, so entries a replayed message produces (it failed again)
wait for the next replay instead of looping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import orjson

from siaga import topics
from siaga.bus import Bus, Record

REPLAYABLE = (topics.FIELD_EVENTS, topics.ALERTS)
"""Topics whose dead letters may go back: their consumers dedupe what they already applied."""

PUBLISH_CHUNK = 100


class Outcome(StrEnum):
    """What the replay did with one dead-letter entry."""

    REPLAYED = "replayed"
    WOULD_REPLAY = "would replay"  # --dry-run
    FILTERED = "filtered"  # not chosen by the filters
    DUPLICATE = "duplicate"  # the same original message was already chosen in this run
    NOT_REPLAYABLE = "not replayable"
    UNREADABLE = "unreadable"


class UnreadableEntry(ValueError):
    """A dead-letter record that is not a dead-letter entry (wrong shape, not JSON)."""


@dataclass(frozen=True)
class DeadLetter:
    """One entry of siaga.dead-letter, as read back."""

    partition: int  # where the entry itself sits on siaga.dead-letter
    offset: int
    topic: str  # the original message's
    key: str | None
    value: bytes
    consumer: str
    reason: str
    failed_at: datetime | None
    original_partition: int | None = None
    original_offset: int | None = None
    idempotency_key: str | None = None  # the notifier's: one alert delivery that failed for good

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        """Parse a dead-letter record; UnreadableEntry when it is not one."""
        try:
            body = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            raise UnreadableEntry(f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise UnreadableEntry("not a JSON object")
        topic, value, key = body.get("topic"), body.get("value"), body.get("key")
        if not isinstance(topic, str) or not isinstance(value, str):
            raise UnreadableEntry("no original topic and value")
        if key is not None and not isinstance(key, str):
            raise UnreadableEntry("the original key is not a string")
        failed_at = None
        if isinstance(body.get("failed_at"), str):
            try:
                failed_at = parse_time(body["failed_at"])
            except ValueError:
                failed_at = None
        partition, offset, delivery = body.get("partition"), body.get("offset"), body.get("idempotency_key")
        return cls(
            partition=record.partition,
            offset=record.offset,
            topic=topic,
            key=key,
            value=value.encode("utf-8"),
            consumer=str(body.get("consumer") or ""),
            reason=str(body.get("reason") or ""),
            failed_at=failed_at,
            original_partition=partition if isinstance(partition, int) else None,
            original_offset=offset if isinstance(offset, int) else None,
            idempotency_key=delivery if isinstance(delivery, str) else None,
        )

    @property
    def original(self) -> tuple[object, ...]:
        """What identifies the original message: several entries may name the same one (N dashboards,
        or one failed delivery per recipient of one alert intent)."""
        if self.original_partition is not None and self.original_offset is not None:
            return (self.topic, self.original_partition, self.original_offset)
        return (self.topic, self.key, self.value)


@dataclass(frozen=True)
class Selection:
    """Which entries to replay. Empty sets and None mean no restriction."""

    topics: frozenset[str] = frozenset()
    consumers: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None  # a substring of the reason, any case
    from_offset: int = 0  # entries at this dead-letter offset or later
    limit: int | None = None

    def chooses(self, entry: DeadLetter) -> bool:
        if entry.offset < self.from_offset:
            return False
        if self.topics and entry.topic not in self.topics:
            return False
        if self.consumers and entry.consumer not in self.consumers:
            return False
        if self.since is not None and (entry.failed_at is None or entry.failed_at < self.since):
            return False
        if self.until is not None and (entry.failed_at is None or entry.failed_at >= self.until):
            return False
        return self.reason is None or self.reason.lower() in entry.reason.lower()


@dataclass
class ReplayReport:
    """What one replay read and did."""

    read: int = 0
    counts: dict[Outcome, int] = field(default_factory=dict)
    reopened: int = 0  # failed alert deliveries made pending again

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def count(self, outcome: Outcome) -> int:
        return self.counts.get(outcome, 0)

    def summary(self) -> str:
        parts = [f"{n} {o.value}" for o in Outcome if (n := self.count(o))]
        if self.reopened:
            parts.append(f"{self.reopened} failed deliveries reopened")
        return f"read {self.read} dead-letter entries: " + (", ".join(parts) or "nothing to do")


OnEntry = Callable[[DeadLetter | Record, Outcome, str], None]
OnProgress = Callable[[int, int], None]
Reopen = Callable[[list[str]], Awaitable[int]]


class ReplayStalled(Exception):
    """The dead-letter topic stopped giving records before its end was reached."""


async def replay_dead_letters(
    bus: Bus,
    selection: Selection,
    *,
    dry_run: bool = False,
    on_entry: OnEntry | None = None,
    on_progress: OnProgress | None = None,
    reopen: Reopen | None = None,
    stall_timeout_s: float = 30.0,
) -> ReplayReport:
    """Read siaga.dead-letter up to its current end and publish the chosen originals again.

    `on_entry(entry, outcome, why)` hears of every entry read (a Record when it was unreadable);
    `on_progress(done, total)` of every chunk published. `reopen(keys)`, when given, is called
    before anything is published with the idempotency keys of the chosen failed alert deliveries
    (the notifier never sends a delivery recorded as failed again, unless it is reopened first).
    The bus must be started.
    """
    report = ReplayReport()
    chosen: list[DeadLetter] = []
    seen: set[tuple[object, ...]] = set()
    deliveries: list[str] = []
    for record in await read_dead_letters(bus, stall_timeout_s=stall_timeout_s):
        report.read += 1
        outcome, why, entry = _judge(record, selection, seen, len(chosen))
        if entry is not None and entry.idempotency_key and outcome in (Outcome.WOULD_REPLAY, Outcome.DUPLICATE):
            deliveries.append(entry.idempotency_key)  # one entry per failed recipient of one intent
        if outcome is Outcome.WOULD_REPLAY and entry is not None:
            seen.add(entry.original)
            chosen.append(entry)
            if not dry_run:
                continue  # reported once published
        report.add(outcome)
        if on_entry:
            on_entry(entry or record, outcome, why)
    if dry_run:
        return report
    if reopen is not None and deliveries:
        report.reopened = await reopen(deliveries)
    done = 0
    for chunk in _chunks_by_topic(chosen):
        await bus.publish_many(chunk[0].topic, [(e.key, e.value) for e in chunk])
        for e in chunk:
            report.add(Outcome.REPLAYED)
            if on_entry:
                on_entry(e, Outcome.REPLAYED, f"to {e.topic}")
        done += len(chunk)
        if on_progress:
            on_progress(done, len(chosen))
    return report


def _judge(
    record: Record, selection: Selection, seen: set[tuple[object, ...]], chosen: int
) -> tuple[Outcome, str, DeadLetter | None]:
    try:
        entry = DeadLetter.from_record(record)
    except UnreadableEntry as exc:
        return Outcome.UNREADABLE, str(exc), None
    if entry.topic == topics.INCIDENT_UPDATES:
        return Outcome.NOT_REPLAYABLE, "the updates topic is compacted: an old copy would hide newer state", entry
    if entry.topic not in REPLAYABLE:
        return Outcome.NOT_REPLAYABLE, f"{entry.topic!r} is not a topic Siaga replays", entry
    if not selection.chooses(entry) or (selection.limit is not None and chosen >= selection.limit):
        return Outcome.FILTERED, "", entry
    if entry.original in seen:
        return Outcome.DUPLICATE, "the same original message is already chosen", entry
    return Outcome.WOULD_REPLAY, f"to {entry.topic}", entry


def _chunks_by_topic(entries: Sequence[DeadLetter]) -> list[list[DeadLetter]]:
    """Consecutive entries of one topic, at most PUBLISH_CHUNK together: the original order is kept."""
    chunks: list[list[DeadLetter]] = []
    for e in entries:
        if chunks and chunks[-1][0].topic == e.topic and len(chunks[-1]) < PUBLISH_CHUNK:
            chunks[-1].append(e)
        else:
            chunks.append([e])
    return chunks


async def read_dead_letters(bus: Bus, *, stall_timeout_s: float = 30.0) -> list[Record]:
    """Every record of siaga.dead-letter up to the end it has now, in offset order per partition."""
    source = bus.consumer([topics.DEAD_LETTER], None, broadcast=True)
    await source.start()
    try:
        ends = {p: o.end for (_, p), o in (await source.offsets()).items() if o.end > o.position}
        out: list[Record] = []
        last_progress = time.monotonic()
        while ends:
            records = await source.fetch(500, 1.0)
            for r in records:
                end = ends.get(r.partition)
                if end is None or r.offset >= end:
                    continue  # filed after the replay started
                out.append(r)
                if r.offset + 1 >= end:
                    del ends[r.partition]
            if records:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise ReplayStalled(
                    f"no dead-letter records for {stall_timeout_s:g}s with partitions {sorted(ends)} unread"
                )
            await asyncio.sleep(0)
        out.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        await source.stop()


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An RFC 3339 time (2026-04-17T09:30:00+07:00, or Z), or with `now` a span back from it: 90m, 2h, 1d."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if now is not None and text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +07:00")
    return when
