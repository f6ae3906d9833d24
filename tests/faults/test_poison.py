"""A poison message on every topic goes to dead-letter with its reason, and every consumer goes on."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from siaga import topics
from siaga.bus import Record
from siaga.bus.kafka import KafkaBus
from tests.fakes.providers import FakeWebhook
from tests.plugins.system import SystemProcs, tps_rows

pytestmark = pytest.mark.kafka


async def _dead_letters(bus: KafkaBus, topic: str, want: int, within_s: float = 30.0) -> list[Record]:
    source = bus.consumer([topic], None, broadcast=True)
    await source.start()
    got: list[Record] = []
    try:
        end = time.monotonic() + within_s
        while time.monotonic() < end and len(got) < want:
            got.extend(await source.fetch(100, 0.5))
    finally:
        await source.stop()
    return got


def test_poison_on_every_topic_is_dead_lettered_and_consumers_go_on(tmp_path: Path, kafka_bootstrap: str) -> None:
    with FakeWebhook() as hook:
        sysm = SystemProcs(tmp_path, kafka=kafka_bootstrap, env={"SIAGA_WEBHOOK_URL": hook.hook_url})
        prefix = sysm.env["SIAGA_TOPIC_PREFIX"]
        sysm.start()
        try:
            sysm.import_tps(tps_rows(2))
            device, viewer = sysm.device(["T0000", "T0001"]), sysm.token("viewer")

            async def scenario() -> tuple[list[Record], bool]:
                bus = KafkaBus(kafka_bootstrap, partitions={})
                await bus.start()
                try:
                    for topic in (topics.FIELD_EVENTS, topics.INCIDENT_UPDATES, topics.ALERTS):
                        await bus.publish(prefix + topic, "T0000", b"\x00 not json at all")
                    dead = await _dead_letters(bus, prefix + topics.DEAD_LETTER, 3)
                    # ...and everyone goes on: a critical report flows to the dashboard and the webhook
                    url = sysm.urls["dashboard"].replace("http://", "ws://") + f"/ws?token={viewer}"
                    async with websockets.connect(url, max_size=2**26) as ws:
                        json.loads(await ws.recv())
                        ev = {
                            "event_id": str(uuid.uuid4()),
                            "type": "incident.reported",
                            "tps_id": "T0001",
                            "occurred_at": datetime.now(UTC).isoformat(),
                            "payload": {"description": "bentrok, bawa golok, 2 orang luka"},
                        }
                        async with httpx.AsyncClient() as c:
                            r = await c.post(
                                sysm.urls["ingest"] + "/v1/events",
                                json=ev,
                                headers={"Authorization": f"Bearer {device}"},
                            )
                            assert r.status_code == 202
                        seen = False
                        end = time.monotonic() + 20
                        while not seen and time.monotonic() < end:
                            m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                            seen = m.get("type") == "incident" and m["incident"]["tps_id"] == "T0001"
                    return dead, seen
                finally:
                    await bus.stop()

            dead, seen = asyncio.run(scenario())
            docs = [orjson.loads(r.value) for r in dead]
            by_topic = {d["topic"].removeprefix(prefix): d for d in docs}
            assert set(by_topic) == {topics.FIELD_EVENTS, topics.INCIDENT_UPDATES, topics.ALERTS}
            assert {by_topic[t]["consumer"] for t in by_topic} == {"dispatch", "dashboard", "siaga-notifier"}
            assert all(d["reason"] and d["value"] for d in docs)
            assert seen, "the dashboard went on"
            end = time.monotonic() + 20
            while time.monotonic() < end and len(hook.delivered) < 2:
                time.sleep(0.1)
            assert len(hook.delivered) == 2, "the notifier went on"
        finally:
            sysm.stop()
