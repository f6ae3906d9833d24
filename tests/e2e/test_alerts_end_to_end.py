"""Alerts end to end through the real broker: a critical report posted to ingest reaches the signed
webhook and the Telegram chat, and a Telegram button press acknowledges the incident."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.providers import FakeTelegram, FakeWebhook
from tests.plugins.system import SystemProcs, tps_rows

pytestmark = pytest.mark.kafka

SECRET = "webhook-secret"
BOT = "123456:test-token-ABC"
CHAT = "-100777"
HOOK_SECRET = "tg-callback-secret"


@pytest.fixture
def alerting(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[SystemProcs, FakeWebhook, FakeTelegram]]:
    hook, tg = FakeWebhook(secret=SECRET), FakeTelegram(token=BOT)
    with hook, tg:
        env = {
            "SIAGA_WEBHOOK_URL": hook.hook_url,
            "SIAGA_WEBHOOK_SECRET": SECRET,
            "SIAGA_TELEGRAM_BOT_TOKEN": BOT,
            "SIAGA_TELEGRAM_CHAT_ID": CHAT,
            "SIAGA_TELEGRAM_API_BASE": tg.url,
            "SIAGA_TELEGRAM_WEBHOOK_SECRET": HOOK_SECRET,
        }
        sysm = SystemProcs(tmp_path, kafka=kafka_bootstrap, env=env)
        sysm.start()
        try:
            yield sysm, hook, tg
        finally:
            sysm.stop()


def _wait(pred: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_critical_report_reaches_webhook_and_telegram_and_a_button_acknowledges(alerting: Any) -> None:
    sysm, hook, tg = alerting
    sysm.import_tps(tps_rows(1))
    device, op = sysm.device(["T0000"]), sysm.token("operator")
    ev = {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": "T0000",
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"description": "Bentrok massa, ada yang membawa golok, 2 orang luka"},
    }
    started = time.monotonic()
    r = httpx.post(sysm.urls["ingest"] + "/v1/events", json=ev, headers={"Authorization": f"Bearer {device}"})
    assert r.status_code == 202
    assert _wait(lambda: len(hook.delivered) >= 2 and len(tg.sent_messages()) >= 2)
    elapsed = time.monotonic() - started
    print(f"critical report to webhook and Telegram: {elapsed * 1000:.0f} ms")

    levels = sorted(r.json()["level"] for r in hook.delivered)
    assert levels == [1, 2], "level 2, with level 1 told as well"
    for req in hook.delivered:
        want = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        assert req.headers["x-siaga-signature"] == want
        doc = req.json()
        assert set(doc) >= {"idempotency_key", "sent_at", "level", "recipient", "text", "incident"}
        assert doc["incident"]["severity"] == "critical" and doc["incident"]["tps_id"] == "T0000"

    msg = tg.sent_messages()[0]
    assert msg["chat_id"] in (CHAT, int(CHAT))
    assert "T0000" in msg["text"] and "Cikande" in msg["text"]
    buttons = [b for row in msg["reply_markup"]["inline_keyboard"] for b in row]
    ack = next(b for b in buttons if "ack" in b["callback_data"])

    incident_id = hook.delivered[0].json()["incident"]["id"]
    update = {
        "update_id": 1,
        "callback_query": {
            "id": "cbq-1",
            "from": {"id": 42, "is_bot": False, "first_name": "Kabagops", "username": "kabagops"},
            "message": {"message_id": 7, "chat": {"id": int(CHAT), "type": "supergroup"}, "date": int(time.time())},
            "chat_instance": "x",
            "data": ack["callback_data"],
        },
    }
    refused = httpx.post(
        sysm.urls["dispatch"] + "/v1/telegram/webhook",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
    )
    assert refused.status_code == 403
    r = httpx.post(
        sysm.urls["dispatch"] + "/v1/telegram/webhook",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET},
    )
    assert r.status_code == 200, r.text
    inc = httpx.get(
        sysm.urls["dispatch"] + f"/v1/incidents/{incident_id}", headers={"Authorization": f"Bearer {op}"}
    ).json()
    assert inc["status"] == "acknowledged"
    actions = [(e["actor"], e["action"]) for e in inc["timeline"]]
    assert any(a == "acknowledged" and actor.startswith("telegram:") for actor, a in actions)
    assert any(a == "alert_sent" for _, a in actions), "deliveries are on the timeline"
