"""Replay and signature attacks on the SMS and WhatsApp gateways (SPEC section 11).

An attacker who captured a signed WhatsApp notification, or a gateway phone's request, replays it;
one who did not have the app secret forges, moves or re-uses a signature; one who knows the code
of an incident answers it from a number of their own. Each is refused, or is the one event it was
the first time, and nothing else is stored or published.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlmodel import Session, func, select

from siaga import topics
from siaga.clock import ManualClock
from siaga.models import SeenEvent
from tests.fakes import meta_webhook as meta
from tests.fakes.providers import FakeWhatsApp
from tests.integration.operator_helpers import NO_ALERT_CHANNEL, Tap, get_incident, own_tps, z
from tests.security import Rig, running_rig, tps_csv

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
SECRET = "meta-app-secret-attack-0123456789"
VERIFY = "verify-attack-42"
TPS = own_tps("AT", "Serangan", 2)  # AT1 in Serangan1, AT2 in Serangan2
ROSTER = (
    "personnel_id,name,unit,role,tps_ids,phone\n"
    "POL-A,Bripka Ani,Polsek Serangan,pam_tps,AT1,0812-4000-1000\n"
    "POL-B,Bripda Beni,Polsek Serangan,pam_tps,AT2,0812-4000-2000\n"
)
ANI, BENI = "6281240001000", "6281240002000"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with FakeWhatsApp() as cloud:
        settings: dict[str, Any] = NO_ALERT_CHANNEL | {
            "whatsapp_app_secret": SECRET,
            "whatsapp_verify_token": VERIFY,
            "whatsapp_api_base": cloud.url,
            "whatsapp_token": cloud.token,
        }
        async with running_rig(tmp_path, clock=ManualClock(NOW), with_incident=False, **settings) as r:
            await r.admin("POST", "/v1/admin/tps/import", content=tps_csv(TPS), headers={"Content-Type": "text/csv"})
            res = await r.admin(
                "POST", "/v1/admin/personnel/import", content=ROSTER.encode(), headers={"Content-Type": "text/csv"}
            )
            assert res.json()["imported"] == 2, res.text
            yield r


async def webhook(rig: Rig, raw: bytes, signature: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    r = await rig.client.post("/v1/gateway/whatsapp", content=raw, headers=headers)
    assert r.status_code < 500, r.text
    return r.status_code


def seen_count(rig: Rig) -> int:
    with Session(rig.ctx.engine) as s:
        return int(s.exec(select(func.count()).select_from(SeenEvent)).one())


async def test_a_captured_notification_replayed_is_still_one_event(rig: Rig) -> None:
    raw = orjson.dumps(meta.notification(meta.text("LAPOR massa lempar batu ke TPS", sender=ANI, at=NOW)))
    signed = meta.signature(SECRET, raw)
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        assert await webhook(rig, raw, signed) == 200
        for minutes in (0, 5, 90):  # at once (Meta's retry), and again later from a capture
            rig.ctx.clock.advance(minutes=minutes)  # type: ignore[attr-defined]
            assert await webhook(rig, raw, signed) == 200
        sent = await events.read()
    assert len(sent) == 1, [e["event"]["event_id"] for e in sent]
    assert seen_count(rig) == 1


async def test_a_signature_belongs_to_its_body_and_its_secret(rig: Rig) -> None:
    honest = orjson.dumps(meta.notification(meta.text("HADIR sehat", sender=ANI, at=NOW)))
    forged = orjson.dumps(meta.notification(meta.text("SELESAI ABC23 aman", sender=ANI, at=NOW)))
    digest = meta.signature(SECRET, honest).removeprefix("sha256=")
    attempts = {
        "moved to another body": meta.signature(SECRET, honest),
        "signed with the verify token": meta.signature(VERIFY, forged),
        "signed with an empty secret": meta.signature("", forged),
        "sha1 of the right secret": "sha1=" + digest[:40],
        "truncated": "sha256=" + meta.signature(SECRET, forged).removeprefix("sha256=")[:32],
        "empty": "",
        "prefix only": "sha256=",
        "not hex": "sha256=" + "z" * 64,
    }
    async with Tap(rig, topics.FIELD_EVENTS) as events, Tap(rig, topics.COMMANDS) as commands:
        for what, signature in attempts.items():
            assert await webhook(rig, forged, signature) == 401, what
        assert await webhook(rig, forged, None) == 401, "unsigned"
        assert await webhook(rig, honest + b" ", meta.signature(SECRET, honest)) == 401, "one byte appended"
        assert await events.read() == []
        assert [c for c in await commands.read() if c["actor"].startswith("whatsapp:")] == []
    assert seen_count(rig) == 0


async def test_a_signed_but_stale_message_is_not_an_event(rig: Rig) -> None:
    """A capture replayed with a new id is new to dedup, so the message's own time must bound it."""
    stale = meta.text("LAPOR kotak suara dibakar", sender=ANI, at=NOW - timedelta(days=3))
    raw = orjson.dumps(meta.notification(stale))
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        status = await webhook(rig, raw, meta.signature(SECRET, raw))
        assert status in (200, 422)
        assert await events.read() == []
    assert seen_count(rig) == 0


async def test_a_gateway_replay_with_another_sender_or_text_is_a_conflict(rig: Rig) -> None:
    _, token = await rig.issue_device([t["tps_id"] for t in TPS])
    headers = {"Authorization": f"Bearer {token}"}
    first = {"gateway_message_id": "cap-1", "from": "+" + ANI, "text": "HADIR sakit", "received_at": z(NOW)}
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        ok = await rig.client.post("/v1/gateway/sms", json=first, headers=headers)
        assert ok.status_code == 200, ok.text
        again = await rig.client.post("/v1/gateway/sms", json=first, headers=headers)
        assert again.status_code == 200 and "sudah diterima" in again.json()["reply"]
        altered = await rig.client.post("/v1/gateway/sms", json=first | {"text": "HADIR libur"}, headers=headers)
        assert altered.status_code == 409 and altered.json()["detail"], altered.text
        sent = await events.read()
    assert len(sent) == 1 and sent[0]["event"]["payload"]["status"] == "unwell"


async def test_a_gateway_cannot_speak_for_a_tps_outside_its_grant(rig: Rig) -> None:
    _, token = await rig.issue_device(["AT1"])  # a gateway for Serangan1 only
    body = {"gateway_message_id": uuid.uuid4().hex, "from": "+" + BENI, "text": "LAPOR ricuh", "received_at": z(NOW)}
    async with Tap(rig, topics.FIELD_EVENTS) as events:
        r = await rig.client.post("/v1/gateway/sms", json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and r.json()["detail"], r.text
        assert await events.read() == []


async def test_knowing_a_code_is_not_enough_to_act_on_it(rig: Rig) -> None:
    """Beni (AT2) and a stranger learn the code of Ani's incident at AT1 and try to close it."""
    _, token = await rig.issue_device([t["tps_id"] for t in TPS])
    headers = {"Authorization": f"Bearer {token}"}

    async def sms(sender: str, text: str) -> str:
        body = {"gateway_message_id": uuid.uuid4().hex, "from": sender, "text": text, "received_at": z(NOW)}
        r = await rig.client.post("/v1/gateway/sms", json=body, headers=headers)
        assert r.status_code == 200, r.text
        reply: str = r.json()["reply"]
        return reply

    await sms("+" + ANI, "LAPOR surat suara dicoblos orang lain")
    iid = await rig.wait_for_incident("AT1")
    code = (await get_incident(rig, iid))["code"]
    async with Tap(rig, topics.COMMANDS) as commands:
        assert "bukan di TPS Anda" in await sms("+" + BENI, f"SELESAI {code} aman")
        assert "bukan di TPS Anda" in await sms("+" + BENI, f"BANTUAN {code} tolong")
        for text in (f"SELESAI {code} aman", f"OK {code}", f"BANTUAN {code} x"):
            assert "tidak terdaftar" in await sms("+6289912345678", text)
        assert [c for c in await commands.read() if c.get("incident_id") == iid] == []
    assert (await get_incident(rig, iid))["status"] == "open"
