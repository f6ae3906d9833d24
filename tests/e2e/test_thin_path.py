"""The walking skeleton end to end: a field event posted to ingest reaches a dashboard WebSocket client.

Once embedded (`siaga dev`, in-process bus) and once as three processes on the real Kafka broker.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import websockets

from tests.plugins.system import SystemProcs, tps_rows


def _report(tps_id: str, text: str, **payload: object) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": tps_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"description": text, **payload},
    }


async def _event_reaches_dashboard(sysm: SystemProcs) -> float:
    sysm.import_tps(tps_rows(3))
    device = sysm.device(["T0000", "T0001", "T0002"])
    viewer = sysm.token("viewer")
    ws_url = sysm.urls["dashboard"].replace("http://", "ws://") + f"/ws?token={viewer}"
    async with websockets.connect(ws_url, max_size=2**26) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "snapshot"
        assert {t["tps_id"] for t in first["tps"]} >= {"T0000", "T0001", "T0002"}
        ev = _report("T0001", "Genset mati, TPS gelap", category="equipment")
        async with httpx.AsyncClient() as client:
            started = time.perf_counter()
            r = await client.post(
                sysm.urls["ingest"] + "/v1/events", json=ev, headers={"Authorization": f"Bearer {device}"}
            )
            assert r.status_code == 202, r.text
            assert r.json()["accepted"] == [ev["event_id"]]
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("type") == "incident" and msg["incident"]["tps_id"] == "T0001":
                    latency = time.perf_counter() - started
                    break
    inc = msg["incident"]
    assert (inc["category"], inc["severity"], inc["level"], inc["status"]) == ("equipment", "low", 0, "open")
    return latency


async def test_event_reaches_dashboard_embedded(embedded_system: SystemProcs) -> None:
    latency = await _event_reaches_dashboard(embedded_system)
    print(f"embedded: POST to WebSocket frame in {latency * 1000:.0f} ms")


@pytest.mark.kafka
async def test_event_reaches_dashboard_through_kafka(kafka_system: SystemProcs) -> None:
    latency = await _event_reaches_dashboard(kafka_system)
    print(f"kafka, three processes: POST to WebSocket frame in {latency * 1000:.0f} ms")
