"""A permanent alert failure reaches the dashboard, end to end (SPEC section 6: "permanent failures go
to siaga.dead-letter and show on the dashboard").

Real processes (`siaga dev`, or dispatch + ingest + dashboard on the real broker), a webhook and a
Telegram Bot API on loopback that refuse every message with a permanent error (4xx), and a
WebSocket client on the dashboard: a critical report posted to ingest is alerted at levels 1 and
2, every delivery fails once and for all (no retry of a 4xx), and the dashboard's client receives
the incident with `last_alert_failure` naming the channel and the provider's answer. On the
broker, each failed delivery is also on siaga.dead-letter.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from siaga import topics
from siaga.bus.kafka import KafkaBus
from tests.fakes.providers import FakeTelegram, FakeWebhook, Reply
from tests.plugins.system import SystemProcs, tps_rows

SECRET = "webhook-secret-refused"
BOT = "123456:refused-token-ABC"
CHAT = "-100999"
DELIVERIES = 4  # levels 1 and 2 (critical), each to the webhook and the Telegram chat


class RefusingWebhook(FakeWebhook):
    """A receiver that checks the signature, then refuses every alert: 403, for good."""

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        return super().check(method, path, headers, body) or Reply(403, {"error": "this hook was disabled"})


class RefusingTelegram(FakeTelegram):
    """A Bot API whose chat does not exist: every sendMessage is 400 "chat not found"."""

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        return super().check(method, path, headers, body) or Reply(
            400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
        )


@pytest.fixture
def refusing() -> Iterator[tuple[RefusingWebhook, RefusingTelegram, dict[str, str]]]:
    hook, tg = RefusingWebhook(secret=SECRET), RefusingTelegram(token=BOT)
    with hook, tg:
        env = {
            "SIAGA_WEBHOOK_URL": hook.hook_url,
            "SIAGA_WEBHOOK_SECRET": SECRET,
            "SIAGA_TELEGRAM_BOT_TOKEN": BOT,
            "SIAGA_TELEGRAM_CHAT_ID": CHAT,
            "SIAGA_TELEGRAM_API_BASE": tg.url,
        }
        yield hook, tg, env


async def frames_until(ws: ClientConnection, pred: Any, timeout_s: float) -> list[dict[str, Any]]:
    """Every frame received until one satisfies `pred` (that one last); fails at the timeout."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            frame = orjson.loads(await ws.recv())
            seen.append(frame)
            if pred(frame):
                return seen


def failed_at_t0000(frame: dict[str, Any]) -> bool:
    inc = frame.get("incident") or {}
    return frame.get("type") == "incident" and inc.get("tps_id") == "T0000" and bool(inc.get("last_alert_failure"))


async def permanent_failure_reaches_the_dashboard(
    sysm: SystemProcs, hook: RefusingWebhook, tg: RefusingTelegram
) -> str:
    """Drive the scenario; returns the incident id."""
    sysm.import_tps(tps_rows(1))
    device, viewer = sysm.device(["T0000"]), sysm.token("viewer")
    ws_url = sysm.urls["dashboard"].replace("http://", "ws://") + f"/ws?token={viewer}"
    async with connect(ws_url) as ws:
        first = orjson.loads(await ws.recv())
        assert first["type"] == "snapshot" and first["incidents"] == []
        ev = {
            "event_id": str(uuid.uuid4()),
            "type": "incident.reported",
            "tps_id": "T0000",
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {"description": "Bentrok massa, ada yang membawa golok, 2 orang luka"},
        }
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(
                sysm.urls["ingest"] + "/v1/events", json=ev, headers={"Authorization": f"Bearer {device}"}
            )
            assert r.status_code == 202, r.text
            frames = await frames_until(ws, failed_at_t0000, timeout_s=30)

            incident = frames[-1]["incident"]
            assert (incident["severity"], incident["level"]) == ("critical", 2)
            failure = incident["last_alert_failure"]
            named = {"webhook env-webhook:": "HTTP 403", "telegram env-telegram:": "HTTP 400"}
            assert any(failure.startswith(who) and answer in failure for who, answer in named.items()), failure
            before = [f for f in frames if f.get("type") == "incident" and f["incident"]["id"] == incident["id"]]
            assert all(not f["incident"]["last_alert_failure"] for f in before[:-1]), "no failure before the first"

            # Every delivery ends failed; the dashboard ends with what the API says.
            async def record() -> dict[str, Any]:
                got = await client.get(
                    sysm.urls["dispatch"] + f"/v1/incidents/{incident['id']}",
                    headers={"Authorization": f"Bearer {viewer}"},
                )
                assert got.status_code == 200, got.text
                doc: dict[str, Any] = got.json()
                return doc

            async with asyncio.timeout(30):
                while True:
                    doc = await record()
                    failed = [e for e in doc["timeline"] if e["action"] == "alert_failed"]
                    if len(failed) >= DELIVERIES:
                        break
                    await asyncio.sleep(0.1)
            assert sorted(e["actor"] for e in failed) == ["notifier:telegram"] * 2 + ["notifier:webhook"] * 2
            assert not [e for e in doc["timeline"] if e["action"] == "alert_sent"]
            assert doc["last_alert_failure"], "the incident keeps the failure"
            await frames_until(
                ws,
                lambda f: (
                    f.get("type") == "incident"
                    and f["incident"]["id"] == doc["id"]
                    and f["incident"]["version"] == doc["version"]
                    and f["incident"]["last_alert_failure"] == doc["last_alert_failure"]
                ),
                timeout_s=15,
            )

    # A browser that opens the page afterwards sees the failure in its snapshot.
    async with connect(ws_url) as late:
        snapshot = orjson.loads(await late.recv())
    assert snapshot["type"] == "snapshot"
    shown = {i["id"]: i for i in snapshot["incidents"]}
    assert shown[doc["id"]]["last_alert_failure"] == doc["last_alert_failure"]

    # A permanent error is not retried: one request per (incident, level, recipient), each refused.
    assert [q.status for q in hook.requests] == [403, 403], hook.requests
    assert len({q.idempotency_key for q in hook.requests}) == 2
    assert [q.status for q in tg.requests] == [400, 400], tg.requests
    return str(doc["id"])


async def test_permanent_alert_failure_reaches_the_dashboard(
    tmp_path: Path, refusing: tuple[RefusingWebhook, RefusingTelegram, dict[str, str]]
) -> None:
    hook, tg, env = refusing
    sysm = SystemProcs(tmp_path, kafka=None, env=env)
    await asyncio.to_thread(sysm.start)
    try:
        await permanent_failure_reaches_the_dashboard(sysm, hook, tg)
    finally:
        await asyncio.to_thread(sysm.stop)


@pytest.mark.kafka
async def test_permanent_alert_failure_on_the_broker_reaches_the_dashboard_and_the_dead_letter_topic(
    tmp_path: Path, kafka_bootstrap: str, refusing: tuple[RefusingWebhook, RefusingTelegram, dict[str, str]]
) -> None:
    hook, tg, env = refusing
    sysm = SystemProcs(tmp_path, kafka=kafka_bootstrap, env=env)
    await asyncio.to_thread(sysm.start)
    try:
        incident_id = await permanent_failure_reaches_the_dashboard(sysm, hook, tg)
    finally:
        await asyncio.to_thread(sysm.stop)

    dead_letter = sysm.env["SIAGA_TOPIC_PREFIX"] + topics.DEAD_LETTER
    bus = KafkaBus(kafka_bootstrap, partitions={})
    await bus.start()
    reader = bus.consumer([dead_letter], None, broadcast=True)
    await reader.start()
    entries: list[dict[str, Any]] = []
    try:
        end = time.monotonic() + 20
        while len(entries) < DELIVERIES and time.monotonic() < end:
            entries.extend(orjson.loads(r.value) for r in await reader.fetch(100, 0.5))
    finally:
        await reader.stop()
        await bus.stop()
    mine = [e for e in entries if e.get("incident_id") == incident_id]
    assert sorted(e["channel"] for e in mine) == ["telegram", "telegram", "webhook", "webhook"], entries
    answers = {"telegram": "HTTP 400", "webhook": "HTTP 403"}
    assert all(answers[e["channel"]] in e["reason"] for e in mine), mine
    assert all(e["attempts"] == 1 for e in mine), "a permanent error is not retried"
