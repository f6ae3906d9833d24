"""The Kafka adapter on a broker of its own, stopped and started here (the session broker is
not disturbed).

While the broker is down a publish fails fast with BusUnavailable and `healthy()` says so;
once it is back the same KafkaBus publishes again, a consumer loop goes on, and what was
stored before the outage is still there. Also: topic creation, and a stuck producer replaced.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from siaga import topics
from siaga.bus import BusUnavailable, ConsumerLoop, Record
from siaga.bus.kafka import KafkaBus
from tests.plugins.ports import free_port as _free_port

pytestmark = pytest.mark.kafka

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "broker.sh"
PUBLISH_TIMEOUT_S = 2.0


@dataclass
class Broker:
    """A broker started with infra/kafka/broker.sh on its own port and home."""

    port: int
    home: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, SIAGA_KAFKA_PORT=str(self.port), SIAGA_KAFKA_HOME=self.home)
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    async def arun(self, command: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, command)


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    b = Broker(_free_port(), tempfile.mkdtemp(prefix="siaga-test-kafka-outage-"))
    started = b.run("start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield b
    finally:
        b.run("stop")
        shutil.rmtree(b.home, ignore_errors=True)


async def test_publish_fails_fast_while_the_broker_is_down_and_recovers(broker: Broker) -> None:
    topic = "outage.events"
    bus = KafkaBus(broker.bootstrap, partitions={topic: 2}, publish_timeout_s=PUBLISH_TIMEOUT_S)
    await bus.start()
    seen: list[Record] = []

    async def handler(records: list[Record]) -> None:
        seen.extend(records)

    loop = ConsumerLoop(bus, bus.consumer([topic], "outage-group"), handler, name="outage")
    await loop.start()
    try:
        await bus.publish(topic, "tps-1", b"before")
        assert await bus.healthy()

        stopped = await broker.arun("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert (await broker.arun("status")).returncode == 3

        # Fails fast: BusUnavailable, not a publish that hangs until the watchdog ends it.
        with pytest.raises(BusUnavailable):
            await asyncio.wait_for(bus.publish(topic, "tps-1", b"during"), PUBLISH_TIMEOUT_S * 5)
        await asyncio.sleep(1.1)  # past the health cache
        assert not await bus.healthy()

        restarted = await broker.arun("start")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert (await broker.arun("status")).returncode == 0

        # The same bus object, no restart of the process: the first publish after the broker
        # is back must go through (a few attempts allowed while the client reconnects).
        attempts = 0
        deadline = time.monotonic() + 20
        while True:
            attempts += 1
            try:
                await bus.publish(topic, "tps-1", b"after")
                break
            except BusUnavailable:
                if time.monotonic() > deadline:
                    raise
        assert attempts <= 3, f"publish recovered only after {attempts} attempts"
        await asyncio.sleep(1.1)
        assert await bus.healthy()

        # The consumer loop went on through the outage and sees the new message.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if b"after" in {r.value for r in seen}:
                break
            await asyncio.sleep(0.1)
    finally:
        await loop.stop()

    values = [r.value for r in seen]
    assert values[0] == b"before"
    assert b"after" in values
    # "during" was not acked in time: it may still have been stored once the broker came back
    # (the producer keeps what it holds); never twice.
    assert values.count(b"during") <= 1

    # The data stored before the outage survived the restart of the broker.
    reader = bus.consumer([topic], None, broadcast=True)
    await reader.start()
    try:
        stored: list[bytes] = []
        deadline = time.monotonic() + 20
        while b"after" not in stored and time.monotonic() < deadline:
            stored.extend(r.value for r in await reader.fetch(100, 0.2))
    finally:
        await reader.stop()
        await bus.stop()
    assert stored[0] == b"before"
    assert b"after" in stored


async def test_start_without_a_broker_raises_bus_unavailable() -> None:
    bus = KafkaBus(f"127.0.0.1:{_free_port()}", partitions={"nowhere": 1}, request_timeout_s=2.0)
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(bus.start(), 30)
    assert not await bus.healthy()
    with pytest.raises(BusUnavailable):
        await bus.publish("nowhere", None, b"x", timeout_s=1.0)
    await bus.stop()


async def test_a_producer_whose_sender_died_is_replaced(broker: Broker) -> None:
    topic = "outage.stuck"
    bus = KafkaBus(broker.bootstrap, partitions={topic: 1}, publish_timeout_s=PUBLISH_TIMEOUT_S)
    await bus.start()
    try:
        await bus.publish(topic, "k", b"one")
        stuck = bus._producer
        assert stuck is not None
        # What an unexpected error in aiokafka's sender leaves behind: a producer that
        # queues messages and never sends them.
        stuck._sender.sender_task.cancel()
        await asyncio.sleep(0)
        await bus.publish(topic, "k", b"two")
        assert bus._producer is not stuck
    finally:
        await bus.stop()


async def test_start_creates_missing_topics_with_their_settings_and_is_idempotent(broker: Broker) -> None:
    partitions = {topics.INCIDENT_UPDATES: 3, "outage.plain": 2}
    for _ in range(2):  # the second start finds the topics in place
        bus = KafkaBus(broker.bootstrap, partitions=partitions)
        await bus.start()
        assert [len(await bus.partitions_of(t)) for t in partitions] == [3, 2]
        await bus.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        # aiokafka wants the config names as a dict here (a list fails).
        wanted = {"cleanup.policy": None}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs=wanted) for name in partitions]
        )
    finally:
        await admin.close()
    policy = {
        resource["resource_name"]: entry["config_value"]
        for response in responses
        for resource in response.to_object()["resources"]
        for entry in resource["config_entries"]
    }
    assert policy == {topics.INCIDENT_UPDATES: "compact", "outage.plain": "delete"}
