"""Bootstrap: the one place that wires real or fake adapters into a running context."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from siaga import topics
from siaga.bus import Bus, PrefixedBus
from siaga.clock import Clock, SystemClock
from siaga.db import create_schema, make_engine
from siaga.settings import Settings

log = logging.getLogger("siaga")


@dataclass
class Context:
    """What every service gets: settings, the bus, the database and a clock."""

    settings: Settings
    bus: Bus
    engine: Engine
    clock: Clock
    extras: dict[str, Any] = field(default_factory=dict)


def make_bus(settings: Settings) -> Bus:
    """Kafka when SIAGA_KAFKA_BOOTSTRAP is set, else the in-process bus."""
    prefix = settings.topic_prefix
    partitions = {
        prefix + topics.FIELD_EVENTS: settings.field_events_partitions,
        # Co-partitioned with the field events: a kecamatan's commands reach the owner of its events.
        prefix + topics.COMMANDS: settings.field_events_partitions,
        prefix + topics.INCIDENT_UPDATES: settings.updates_partitions,
        prefix + topics.ALERTS: settings.alerts_partitions,
        prefix + topics.REPLIES: settings.alerts_partitions,
        prefix + topics.DEAD_LETTER: 1,
    }
    bus: Bus
    if settings.kafka_bootstrap:
        from siaga.bus.kafka import KafkaBus

        bus = KafkaBus(
            settings.kafka_bootstrap,
            partitions=partitions,
            client_id=settings.kafka_client_id,
            publish_timeout_s=settings.kafka_publish_timeout_s,
            replication_factor=settings.kafka_replication_factor,
        )
    else:
        from siaga.bus.memory import MemoryBus

        bus = MemoryBus(partitions)
    return PrefixedBus(bus, prefix) if prefix else bus


def make_context(settings: Settings, *, bus: Bus | None = None, clock: Clock | None = None) -> Context:
    engine = make_engine(settings.database_url)
    create_schema(engine)
    return Context(settings=settings, bus=bus or make_bus(settings), engine=engine, clock=clock or SystemClock())
