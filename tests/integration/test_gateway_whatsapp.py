"""Inbound WhatsApp through the Cloud API's webhook (SPEC section 11), on the composed dev app.

As Meta would: the verification handshake, signed notifications with text messages (a report,
then its resolution by short code), a redelivered notification, a status notification, a bad
signature and an unknown number. The replies go to a fake Cloud API on loopback that speaks the
real `messages` endpoint (tests/fakes/providers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlmodel import Session, func, select

from services.dispatch.notifier.messages import load_templates
from siaga import topics
from siaga.clock import ManualClock
from siaga.models import SeenEvent
from tests.fakes import meta_webhook as meta
from tests.fakes.meta_webhook import notification
from tests.fakes.providers import FakeWhatsApp, RecordedRequest
from tests.integration.operator_helpers import NO_ALERT_CHANNEL, Tap, eventually, get_incident, own_tps
from tests.security import Rig, running_rig, tps_csv

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
SECRET = "meta-app-secret-0123456789abcdef"
VERIFY = "siaga-verify-token-42"
TPS = own_tps("WA", "Pantai", 2)
ROSTER = "personnel_id,name,unit,role,tps_ids,phone\nPOL-7,Bripka Wulan,Polsek Pantai,pam_tps,WA1;WA2,0812-7777-0000\n"
SENDER = "6281277770000"  # as WhatsApp writes a number: digits, country code first


@pytest.fixture
def cloud() -> Iterator[FakeWhatsApp]:
    with FakeWhatsApp() as fake:
        assert isinstance(fake, FakeWhatsApp)
        yield fake


@pytest.fixture
async def rig(tmp_path: Path, cloud: FakeWhatsApp) -> AsyncIterator[Rig]:
    settings: dict[str, Any] = NO_ALERT_CHANNEL | {
        "whatsapp_app_secret": SECRET,
        "whatsapp_verify_token": VERIFY,
        "whatsapp_api_base": cloud.url,
        "whatsapp_token": cloud.token,
        "whatsapp_phone_number_id": "999",  # the notification's own phone_number_id wins
    }
    async with running_rig(tmp_path, clock=ManualClock(NOW), with_incident=False, **settings) as r:
        await r.admin("POST", "/v1/admin/tps/import", content=tps_csv(TPS), headers={"Content-Type": "text/csv"})
        res = await r.admin(
            "POST", "/v1/admin/personnel/import", content=ROSTER.encode(), headers={"Content-Type": "text/csv"}
        )
        assert res.json()["imported"] == 1, res.text
        yield r


def text(body: str, *, sender: str = SENDER, wamid: str | None = None) -> dict[str, Any]:
    return meta.text(body, sender=sender, at=NOW, wamid=wamid)


async def post(rig: Rig, doc: dict[str, Any], *, secret: str = SECRET) -> tuple[int, Any]:
    raw = orjson.dumps(doc)
    signature = meta.signature(secret, raw)
    r = await rig.client.post(
        "/v1/gateway/whatsapp",
        content=raw,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    return r.status_code, r.json()


async def replies(cloud: FakeWhatsApp, n: int) -> list[RecordedRequest]:
    async def arrived() -> bool:
        return len(cloud.requests) >= n

    assert await eventually(arrived), f"{n} replies expected, {len(cloud.requests)} sent"
    return cloud.requests


def seen_count(rig: Rig) -> int:
    with Session(rig.ctx.engine) as s:
        return int(s.exec(select(func.count()).select_from(SeenEvent)).one())


async def test_the_verification_handshake(rig: Rig) -> None:
    ok = await rig.client.get(
        "/v1/gateway/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"},
    )
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = await rig.client.get(
        "/v1/gateway/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}
    )
    assert wrong.status_code == 403 and "verify_token" in wrong.json()["detail"]
    odd = await rig.client.get("/v1/gateway/whatsapp", params={"hub.verify_token": VERIFY})
    assert odd.status_code == 422 and odd.json()["detail"], "not a subscription check: the missing fields are named"


async def test_a_report_then_its_resolution_by_code_with_replies_through_the_cloud_api(
    rig: Rig, cloud: FakeWhatsApp
) -> None:
    status, body = await post(rig, notification(text("lapor 2 kotak suara basah kena hujan deras")))
    assert (status, body) == (200, {"status": "received"})
    iid = await rig.wait_for_incident("WA2")
    inc = await get_incident(rig, iid)
    assert (inc["source"], inc["tps_id"]) == ("whatsapp", "WA2")
    # The receipt from ingest, at once; then dispatch's confirmation, through the notifier.
    both = await replies(cloud, 2)
    for reply in both:
        sent = reply.json()
        assert reply.path == f"/{meta.PHONE_NUMBER_ID}/messages", "sent from the number the message came to"
        assert reply.headers["authorization"] == f"Bearer {cloud.token}"
        assert (sent["type"], sent["to"]) == ("text", SENDER)
        assert len(sent["text"]["body"]) <= 160
    bodies = [r.json()["text"]["body"] for r in both]
    receipt = next(b for b in bodies if "Laporan diterima" in b)
    confirmation = next(b for b in bodies if "tercatat" in b)
    assert "TPS WA2" in receipt and "TPS WA2" in confirmation
    assert inc["code"] in confirmation and f"SELESAI {inc['code']}" in confirmation, confirmation
    category = load_templates("id").labels.category[inc["category"]]
    severity = load_templates("id").labels.severity[inc["severity"]]
    assert category in confirmation and severity in confirmation, (confirmation, inc["category"], inc["severity"])

    status, _ = await post(rig, notification(text(f"SELESAI {inc['code']} kotak sudah dipindah")))
    assert status == 200

    async def resolved() -> bool:
        return (await get_incident(rig, iid))["status"] == "resolved"

    assert await eventually(resolved), "the WhatsApp follow-up resolved the incident"
    done = await get_incident(rig, iid)
    assert done["timeline"][-1]["actor"] == "whatsapp:POL-7"
    later = [r.json()["text"]["body"] for r in (await replies(cloud, 4))[2:]]
    assert any(inc["code"] in b and "diterima" in b for b in later), later
    assert any(inc["code"] in b and "ditutup" in b and "kotak sudah dipindah" in b for b in later), later
    await asyncio.sleep(0.3)
    assert len(cloud.requests) == 4, "one receipt and one confirmation per message, nothing more"


async def test_a_redelivered_notification_is_one_event(rig: Rig, cloud: FakeWhatsApp) -> None:
    message = text("HADIR sakit", wamid="wamid.SAME-1")
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        assert (await post(rig, notification(message)))[0] == 200
        assert (await post(rig, notification(message)))[0] == 200  # Meta retries what it thinks failed
        sent = await events.read()
    assert len(sent) == 1 and sent[0]["channel"] == "whatsapp"
    assert sent[0]["event"]["payload"] == {"personnel_id": "POL-7", "status": "unwell"}
    bodies = [r.json()["text"]["body"] for r in await replies(cloud, 2)]
    assert "sudah diterima" in bodies[1], bodies


async def test_a_bad_signature_is_401_and_stores_nothing(rig: Rig, cloud: FakeWhatsApp) -> None:
    before = seen_count(rig)
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        status, body = await post(rig, notification(text("LAPOR ricuh")), secret="not-the-app-secret")
        assert status == 401 and "X-Hub-Signature-256" in body["detail"]
        unsigned = await rig.client.post("/v1/gateway/whatsapp", json=notification(text("LAPOR ricuh")))
        assert unsigned.status_code == 401
        assert await events.read() == []
    assert seen_count(rig) == before and cloud.requests == []


async def test_statuses_and_other_kinds_are_accepted_and_ignored(rig: Rig, cloud: FakeWhatsApp) -> None:
    delivered = {"id": "wamid.X", "status": "delivered", "timestamp": "1732670000", "recipient_id": SENDER}
    image = {"from": SENDER, "id": "wamid.IMG", "timestamp": "1732670000", "type": "image", "image": {"id": "1"}}
    other_field = {
        "object": "whatsapp_business_account",
        "entry": [{"changes": [{"field": "account_update", "value": {}}]}],
    }
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        assert (await post(rig, notification(statuses=[delivered])))[0] == 200
        assert (await post(rig, notification(image)))[0] == 200
        assert (await post(rig, other_field))[0] == 200
        assert await events.read() == []
    assert cloud.requests == []


async def test_an_unknown_number_gets_a_refusal_and_no_event(rig: Rig, cloud: FakeWhatsApp) -> None:
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        assert (await post(rig, notification(text("LAPOR ada keributan", sender="6289900001111"))))[0] == 200
        assert await events.read() == []
    (reply,) = await replies(cloud, 1)
    assert reply.json()["to"] == "6289900001111" and "tidak terdaftar" in reply.json()["text"]["body"]


async def test_not_a_notification_names_the_field(rig: Rig) -> None:
    status, body = await post(rig, {"entry": []})
    assert status == 422 and body["detail"][0]["field"] == "object"
    status, body = await post(rig, notification(text("x") | {"timestamp": "kemarin"}))
    assert status == 422 and "timestamp" in body["detail"][0]["field"]
