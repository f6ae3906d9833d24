"""What dispatch tells an SMS sender, and what `OK <code>` means (SPEC section 11).

On the composed dev app with a fake HTTP SMS gateway on loopback (tests/fakes/providers.py): the
gateway phone posts what the field texts in; ingest answers with a receipt; dispatch's
confirmation (the short code, the category, the severity) goes out through the outbound SMS API.
`OK <code>` acknowledges the sender's order when it has one, else the incident when the sender is
a recipient of its current level (the TPS's personnel at level 0, a number the alert routing gives
that level above it), and is refused otherwise.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.notifier.messages import load_templates
from siaga import topics
from siaga.clock import ManualClock
from tests.fakes.providers import FakeSmsGateway
from tests.integration.operator_helpers import NO_ALERT_CHANNEL, Tap, act, eventually, get_incident, own_tps, z
from tests.security import Rig, running_rig, tps_csv

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
TPS = own_tps("SC", "Bukit", 2)
ROSTER = (
    "personnel_id,name,unit,role,tps_ids,phone\n"
    "POL-1,Bripka Ahmad,Polsek Bukit,pam_tps,SC1,0812-1111-2222\n"
    "POL-2,Bripda Yusuf,Brimob,reserve,SC2,0813-5555-6666\n"
)
AHMAD, YUSUF = "+6281211112222", "+6281355556666"
KAPOLSEK = "+6281299990000"  # not on the roster: an alert recipient of level 1 by SMS
STRANGER = "+6281700001111"


@pytest.fixture
def gateway() -> Iterator[FakeSmsGateway]:
    with FakeSmsGateway(token="sms-t0ken") as fake:
        assert isinstance(fake, FakeSmsGateway)
        yield fake


@pytest.fixture
async def rig(tmp_path: Path, gateway: FakeSmsGateway) -> AsyncIterator[tuple[Rig, str]]:
    """(rig with the roster and the kapolsek routed level-1 alerts by SMS, a gateway device token)."""
    settings: dict[str, Any] = NO_ALERT_CHANNEL | {"sms_api_base": gateway.url, "sms_api_token": "sms-t0ken"}
    async with running_rig(tmp_path, clock=ManualClock(NOW), with_incident=False, **settings) as r:
        await r.admin("POST", "/v1/admin/tps/import", content=tps_csv(TPS), headers={"Content-Type": "text/csv"})
        res = await r.admin(
            "POST", "/v1/admin/personnel/import", content=ROSTER.encode(), headers={"Content-Type": "text/csv"}
        )
        assert res.json()["imported"] == 2, res.text
        doc = copy.deepcopy((await r.admin("GET", "/v1/admin/policy")).json()["policy"])
        doc["alerts"] = {
            "recipients": [{"name": "kapolsek-bukit", "channel": "sms", "target": KAPOLSEK, "levels": [1]}]
        }
        put = await r.admin("PUT", "/v1/admin/policy", json=doc)
        assert put.status_code == 200, put.text
        _, token = await r.issue_device([t["tps_id"] for t in TPS])
        yield r, token


async def sms(rig: Rig, token: str, sender: str, text: str) -> str:
    """Post one inbound SMS as the gateway phone does; returns the receipt to send back."""
    body = {
        "gateway_message_id": uuid.uuid4().hex,
        "from": sender,
        "text": text,
        "received_at": z(rig.ctx.clock.now()),
    }
    r = await rig.client.post("/v1/gateway/sms", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    reply: str = r.json()["reply"]
    assert len(reply) <= 160, reply
    return reply


async def texts_to(gateway: FakeSmsGateway, phone: str, n: int) -> list[str]:
    """The first `n` texts the SMS API was asked to send to `phone` (waits for them)."""

    def sent() -> list[str]:
        return [r.json()["text"] for r in gateway.requests if r.status == 200 and r.json()["to"] == phone]

    async def arrived() -> bool:
        return len(sent()) >= n

    assert await eventually(arrived), f"{n} texts to {phone} expected, got {sent()}"
    return sent()


async def becomes_acknowledged(rig: Rig, incident_id: str) -> bool:
    async def acknowledged() -> bool:
        return (await get_incident(rig, incident_id))["status"] == "acknowledged"

    return await eventually(acknowledged)


async def test_a_report_is_confirmed_with_its_code_and_a_resolution_is_confirmed(
    rig: tuple[Rig, str], gateway: FakeSmsGateway
) -> None:
    r, token = rig
    receipt = await sms(r, token, "0812 1111 2222", "lpr massa ricuh lempar batu ke TPS, 1 warga luka")
    assert "Laporan diterima" in receipt and "TPS SC1" in receipt and "menyusul" in receipt, receipt
    inc = await get_incident(r, await r.wait_for_incident("SC1"))
    labels = load_templates("id").labels
    (confirmation,) = await texts_to(gateway, AHMAD, 1)
    assert len(confirmation) <= 160
    assert inc["code"] in confirmation and "TPS SC1" in confirmation, confirmation
    assert labels.category[inc["category"]] in confirmation, (confirmation, inc["category"])
    assert labels.severity[inc["severity"]] in confirmation, (confirmation, inc["severity"])

    receipt = await sms(r, token, AHMAD, f"slsai {inc['code']} massa sudah bubar")
    assert inc["code"] in receipt
    later = await texts_to(gateway, AHMAD, 2)
    assert inc["code"] in later[1] and "ditutup" in later[1] and "massa sudah bubar" in later[1], later
    assert (await get_incident(r, inc["id"]))["status"] == "resolved"

    # A second SELESAI for the closed incident is answered by ingest: its code is no longer open.
    assert "tidak ada" in await sms(r, token, AHMAD, f"SELESAI {inc['code']} aman")
    await asyncio.sleep(0.3)
    assert len(await texts_to(gateway, AHMAD, 2)) == 2, "one confirmation per applied message, nothing more"


async def test_ok_acknowledges_the_senders_order(rig: tuple[Rig, str], gateway: FakeSmsGateway) -> None:
    r, token = rig
    assert "sehat" in await sms(r, token, YUSUF, "HADIR sehat")
    await sms(r, token, AHMAD, "ada bentrok dua kelompok di depan TPS")
    iid = await r.wait_for_incident("SC1")
    order = await r.client.post(
        f"/v1/incidents/{iid}/assign", json={"personnel_id": "POL-2"}, headers=r.headers("operator")
    )
    assert order.status_code == 200, order.text
    code = order.json()["code"]

    assert code in await sms(r, token, YUSUF, f"ok {code}")

    async def acknowledged() -> bool:
        return (await get_incident(r, iid))["orders"][0]["state"] == "acknowledged"

    assert await eventually(acknowledged), "OK from the assignee acknowledged the order"
    doc = await get_incident(r, iid)
    entry = next(e for e in doc["timeline"] if e["action"] == "order_acknowledged")
    assert entry["actor"] == "sms:POL-2" and entry["detail"]["personnel_id"] == "POL-2"
    assert doc["status"] == "open", "the order is acknowledged, not the incident"
    texts = await texts_to(gateway, YUSUF, 1)
    assert any(code in t and "perintah" in t and "dikonfirmasi" in t for t in texts), texts


async def test_ok_from_a_routed_number_acknowledges_the_escalated_incident(
    rig: tuple[Rig, str], gateway: FakeSmsGateway
) -> None:
    r, token = rig
    await sms(r, token, AHMAD, "surat suara dirusak orang tak dikenal")
    iid = await r.wait_for_incident("SC1")
    # Not `act`: the SMS alert's delivery outcome may land on the timeline before a second read.
    answered = await r.client.post(f"/v1/incidents/{iid}/escalate", headers=r.headers("operator"))
    assert answered.status_code == 200, answered.text
    escalated = answered.json()
    assert (escalated["status"], escalated["level"]) == ("escalated", 1)
    (alert,) = await texts_to(gateway, KAPOLSEK, 1)
    assert escalated["code"] in alert, "the level-1 alert by SMS names the code to answer with"

    async with Tap(r, topics.COMMANDS) as commands:
        assert escalated["code"] in await sms(r, token, "0812-9999-0000", f"OK {escalated['code']}")
        assert await becomes_acknowledged(r, iid), "the kapolsek's OK acknowledged the incident"
        entry = next(e for e in (await get_incident(r, iid))["timeline"] if e["action"] == "acknowledged")
        assert entry["actor"] == "sms:kapolsek-bukit", "named by the routing recipient, not the number"
        sent = [c for c in await commands.read() if c.get("kind") == "reply_ok"]
    assert len(sent) == 1 and sent[0]["personnel_id"] is None, sent
    assert sent[0]["reply_to"] == {"channel": "sms", "phone": KAPOLSEK, "number_id": None}
    texts = await texts_to(gateway, KAPOLSEK, 2)
    assert any(escalated["code"] in t and "dikonfirmasi" in t for t in texts[1:]), texts


async def test_ok_from_someone_with_no_order_above_level_0_is_refused(
    rig: tuple[Rig, str], gateway: FakeSmsGateway
) -> None:
    r, token = rig
    await sms(r, token, AHMAD, "kotak suara hilang dari TPS")
    iid = await r.wait_for_incident("SC1")
    code = (await act(r, iid, "escalate"))["code"]
    await sms(r, token, AHMAD, f"OK {code}")

    async def refused() -> bool:  # after the report's confirmation, and any word of the escalation
        texts = await texts_to(gateway, AHMAD, 2)
        return any(code in t and "tidak berlaku" in t for t in texts[1:])

    assert await eventually(refused), await texts_to(gateway, AHMAD, 2)
    assert (await get_incident(r, iid))["status"] == "escalated", "the on-site person is not level 1"


async def test_ok_at_level_0_from_the_tps_acknowledges_and_a_stranger_gets_nothing(
    rig: tuple[Rig, str], gateway: FakeSmsGateway
) -> None:
    r, token = rig
    await sms(r, token, AHMAD, "genset mati, TPS gelap")
    iid = await r.wait_for_incident("SC1")
    code = (await get_incident(r, iid))["code"]
    async with Tap(r, topics.COMMANDS) as commands:
        refusal = await sms(r, token, STRANGER, f"OK {code}")
        assert "tidak terdaftar" in refusal, "a number neither on the roster nor routed is refused at once"
        await sms(r, token, AHMAD, f"OK {code}")
        assert await becomes_acknowledged(r, iid), "the TPS's own officer acknowledged it at level 0"
        sent = [c for c in await commands.read() if c.get("kind") == "reply_ok"]
    assert [c["reply_to"]["phone"] for c in sent] == [AHMAD], "the stranger's OK never reached the bus"
    assert not any(r.json()["to"] == STRANGER for r in gateway.requests), "ingest's refusal is its only answer"
