"""Choosing dead-letter entries to replay (siaga/deadletter.py), on the in-process bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlmodel import Session, select

from services.dispatch.notifier.store import DeliveryStore
from siaga import topics
from siaga.bus import Record, dead_letter_value
from siaga.bus.memory import MemoryBus
from siaga.db import create_schema, make_engine
from siaga.deadletter import DeadLetter, Outcome, Selection, UnreadableEntry, parse_time, replay_dead_letters
from siaga.models import AlertDelivery

NOW = datetime(2026, 4, 17, 3, 0, tzinfo=UTC)


def delivery_failure(recipient: str) -> bytes:
    """What the notifier files when one recipient of an alert intent could not be reached."""
    return orjson.dumps(
        {
            "topic": topics.ALERTS,
            "partition": 2,
            "offset": 40,
            "key": "INC-1",
            "consumer": "siaga-notifier",
            "reason": "telegram: HTTP 502",
            "failed_at": NOW.isoformat(),
            "value": '{"alert_id": "a1"}',
            "idempotency_key": f"a1:{recipient}",
        }
    )


def test_parse_time_takes_rfc3339_or_a_span_back() -> None:
    assert parse_time("2026-04-17T10:00:00+07:00") == NOW
    assert parse_time("2026-04-17T03:00:00Z") == NOW
    assert parse_time("90m", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_time("1d", now=NOW) == NOW - timedelta(days=1)
    with pytest.raises(ValueError, match="time zone"):
        parse_time("2026-04-17T10:00:00")


def test_an_entry_reads_back_the_original_message() -> None:
    value = dead_letter_value(Record(topics.FIELD_EVENTS, "T1", b'{"x": "\xc3\xa9"}', 4, 9), "boom", "dispatch")
    e = DeadLetter.from_record(Record(topics.DEAD_LETTER, "T1", value, 0, 12))
    assert (e.topic, e.key, e.value, e.consumer, e.reason) == (
        topics.FIELD_EVENTS,
        "T1",
        b'{"x": "\xc3\xa9"}',
        "dispatch",
        "boom",
    )
    assert (e.offset, e.original) == (12, (topics.FIELD_EVENTS, 4, 9))
    with pytest.raises(UnreadableEntry):
        DeadLetter.from_record(Record(topics.DEAD_LETTER, None, b'{"topic": 1}'))


def test_the_selection_filters_combine() -> None:
    e = DeadLetter(0, 5, topics.ALERTS, "INC-1", b"{}", "siaga-notifier", "Telegram: HTTP 502", NOW)
    assert Selection().chooses(e)
    assert Selection(topics=frozenset({topics.ALERTS}), reason="telegram", since=NOW, until=NOW + timedelta(1)).chooses(
        e
    )
    assert not Selection(consumers=frozenset({"dispatch"})).chooses(e)
    assert not Selection(since=NOW + timedelta(seconds=1)).chooses(e)
    assert not Selection(until=NOW).chooses(e)
    assert not Selection(from_offset=6).chooses(e)


async def test_failed_deliveries_of_one_intent_go_back_once_and_are_reopened_first() -> None:
    bus = MemoryBus()
    for recipient in ("polsek", "bawaslu"):
        await bus.publish(topics.DEAD_LETTER, "INC-1", delivery_failure(recipient))
    asked: list[list[str]] = []

    async def reopen(keys: list[str]) -> int:
        assert not await _read(bus, topics.ALERTS), "reopened before anything is published"
        asked.append(keys)
        return len(keys)

    report = await replay_dead_letters(bus, Selection(), reopen=reopen)
    assert asked == [["a1:polsek", "a1:bawaslu"]]
    assert (report.count(Outcome.REPLAYED), report.count(Outcome.DUPLICATE), report.reopened) == (1, 1, 2)
    assert [(r.key, r.value) for r in await _read(bus, topics.ALERTS)] == [("INC-1", b'{"alert_id": "a1"}')]


async def test_a_dry_run_publishes_and_reopens_nothing() -> None:
    bus = MemoryBus()
    await bus.publish(topics.DEAD_LETTER, "INC-1", delivery_failure("polsek"))
    seen: list[Outcome] = []

    async def reopen(keys: list[str]) -> int:
        raise AssertionError("a dry run reopens nothing")

    report = await replay_dead_letters(
        bus, Selection(), dry_run=True, reopen=reopen, on_entry=lambda e, o, why: seen.append(o)
    )
    assert seen == [Outcome.WOULD_REPLAY] and report.count(Outcome.WOULD_REPLAY) == 1
    assert await _read(bus, topics.ALERTS) == []


async def _read(bus: MemoryBus, topic: str) -> list[Record]:
    source = bus.consumer([topic], None, broadcast=True)
    await source.start()
    records = await source.fetch(1000, 0.01)
    await source.stop()
    return records


def test_reopening_makes_failed_deliveries_pending_and_leaves_sent_ones(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'deliveries.db'}")
    create_schema(engine)
    store = DeliveryStore(engine)
    with Session(engine) as s:
        for key, status in (("a1:polsek", "failed"), ("a1:bawaslu", "sent")):
            s.add(
                AlertDelivery(
                    key=key, incident_id="INC-1", channel="telegram", recipient=key, status=status, updated_at=NOW
                )
            )
        s.commit()
    later = NOW + timedelta(minutes=5)
    assert store.reopen_failed(["a1:polsek", "a1:bawaslu", "a1:unknown"], now=later) == 1
    assert store.reopen_failed(["a1:polsek"], now=later) == 0, "a second reopen changes nothing"
    with Session(engine) as s:
        assert {d.key: d.status for d in s.exec(select(AlertDelivery))} == {
            "a1:polsek": "pending",
            "a1:bawaslu": "sent",
        }
