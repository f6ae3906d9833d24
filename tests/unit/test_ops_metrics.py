"""The metrics the alert rules of infra/prometheus stand on: consumer lag, dead letters, silent posts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY
from sqlmodel import Session

from services.dispatch.service import Dispatch
from siaga import topics
from siaga.bus import ConsumerLoop, PrefixedBus, Record
from siaga.bus.kafka import KafkaBus
from siaga.bus.memory import MemoryBus
from siaga.models import Tps
from siaga.runtime import make_bus, make_context
from siaga.settings import Settings


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_lag_counts_what_the_group_has_not_read_yet() -> None:
    bus = MemoryBus({topics.FIELD_EVENTS: 3})
    await bus.publish_many(topics.FIELD_EVENTS, [(f"tps-{i}", b"{}") for i in range(7)])
    handled = asyncio.Event()

    async def handler(records: list[Record]) -> None:
        handled.set()

    loop = ConsumerLoop(bus, bus.consumer([topics.FIELD_EVENTS], "lag-test"), handler, name="lag-test")
    await loop.source.start()  # started by hand: nothing is read yet
    assert await loop.measure_lag() == {topics.FIELD_EVENTS: 7}
    assert sample("siaga_consumer_lag", consumer="lag-test", topic=topics.FIELD_EVENTS) == 7
    await loop.source.stop()

    await loop.start()
    await asyncio.wait_for(handled.wait(), 5)
    for _ in range(100):
        if loop.handled == 7:
            break
        await asyncio.sleep(0.01)
    assert await loop.measure_lag() == {topics.FIELD_EVENTS: 0}
    assert sample("siaga_consumer_lag", consumer="lag-test", topic=topics.FIELD_EVENTS) == 0
    await loop.stop()


async def test_a_prefixed_bus_reports_the_lag_under_the_logical_topic() -> None:
    bus = PrefixedBus(MemoryBus(), "run1.")
    await bus.publish(topics.ALERTS, "INC-1", b"{}")
    source = bus.consumer([topics.ALERTS], "notifier")
    await source.start()
    offsets = await source.offsets()
    assert {topic for topic, _ in offsets} == {topics.ALERTS}
    assert sum(o.lag for o in offsets.values()) == 1
    await source.stop()


async def test_a_message_given_up_on_is_counted_by_consumer_and_original_topic() -> None:
    bus = MemoryBus()
    before = sample("siaga_dead_letter_total", consumer="dl-test", topic=topics.FIELD_EVENTS)

    async def handler(records: list[Record]) -> None:
        raise ValueError("poison")

    loop = ConsumerLoop(bus, bus.consumer([topics.FIELD_EVENTS], "dl-test"), handler, name="dl-test", attempts=1)
    await bus.publish(topics.FIELD_EVENTS, "tps-1", b"not json")
    await loop.start()
    for _ in range(200):
        if loop.dead_lettered:
            break
        await asyncio.sleep(0.01)
    await loop.stop()
    assert loop.dead_lettered == 1
    assert sample("siaga_dead_letter_total", consumer="dl-test", topic=topics.FIELD_EVENTS) == before + 1


def test_dispatch_counts_the_silent_posts(tmp_path: Path) -> None:
    ctx = make_context(Settings(database_url=f"sqlite:///{tmp_path / 'silent.db'}"), bus=MemoryBus())
    with Session(ctx.engine) as s:
        for i, silent in enumerate([True, False, True, True]):
            s.add(Tps(tps_id=f"TPS-{i}", name=f"TPS {i}", kecamatan="Serang", silent=silent))
        s.commit()
    assert Dispatch(ctx).count_silent_posts() == 3
    assert sample("siaga_dispatch_silent_posts") == 3


def test_the_topics_get_the_configured_replication_factor() -> None:
    bus = make_bus(Settings(kafka_bootstrap="kafka1:9092", kafka_replication_factor=3))
    assert isinstance(bus, KafkaBus) and bus.replication_factor == 3
