"""Inbound SMS through the gateway (SPEC section 11), on the composed dev app in-process.

As a gateway phone: a report by SMS, then a follow-up resolving it by its short code; a check-in
`HADIR sakit`; the same message id twice; a text from an unknown number. The replies, the
incidents, the timeline and what reached the bus are read back.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, func, select

from siaga import topics
from siaga.clock import ManualClock
from siaga.models import Personnel, SeenEvent
from tests.integration.operator_helpers import Tap, clocked_rig, eventually, get_incident, own_tps, z
from tests.security import Rig

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
TPS = own_tps("GW", "Pesisir", 3)  # GW1..GW3, one per kecamatan
ROSTER = (
    "personnel_id,name,unit,role,tps_ids,phone\n"
    "POL-1,Bripka Ahmad,Polsek Pesisir,pam_tps,GW1;GW2,0812-1111-2222\n"
    "POL-2,Briptu Sari,Polsek Pesisir,pam_tps,GW3,+62 813 3333 4444\n"
)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    """(rig, its clock, a gateway device token for GW1..GW3) with POL-1 and POL-2 on the roster."""
    async with clocked_rig(tmp_path, NOW, TPS) as (r, clock, token):
        res = await r.admin(
            "POST", "/v1/admin/personnel/import", content=ROSTER.encode(), headers={"Content-Type": "text/csv"}
        )
        assert res.json()["imported"] == 2, res.text
        yield r, clock, token


async def sms(rig: Rig, token: str, sender: str, text: str, message_id: str | None = None) -> tuple[int, Any]:
    body = {
        "gateway_message_id": message_id or uuid.uuid4().hex,
        "from": sender,
        "text": text,
        "received_at": z(rig.ctx.clock.now()),
    }
    r = await rig.client.post("/v1/gateway/sms", json=body, headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json()


def seen_count(rig: Rig) -> int:
    with Session(rig.ctx.engine) as s:
        return int(s.exec(select(func.count()).select_from(SeenEvent)).one())


async def test_a_report_by_sms_then_resolved_by_its_code(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    status, body = await sms(r, token, "6281211112222", "lpr 2 banjir masuk TPS, kotak suara dipindah")
    assert status == 200 and "TPS GW2" in body["reply"] and "banjir" in body["reply"], body
    assert len(body["reply"]) <= 160
    iid = await r.wait_for_incident("GW2")
    inc = await get_incident(r, iid)
    assert (inc["source"], inc["category"], inc["tps_id"]) == ("sms", "flood", "GW2")
    code = inc["code"]
    assert code and len(code) == 5 and not set(code) & set("01OIL"), code

    status, body = await sms(r, token, "+62 812-1111-2222", f"SELESAI {code.lower()} air sudah surut")
    assert status == 200 and code in body["reply"], body

    async def resolved() -> bool:
        return (await get_incident(r, iid))["status"] == "resolved"

    assert await eventually(resolved), "the SMS follow-up resolved the incident"
    done = await get_incident(r, iid)
    assert done["resolution"] == "air sudah surut"
    assert done["timeline"][-1]["actor"] == "sms:POL-1"

    status, body = await sms(r, token, "081211112222", f"OK {code}")
    assert status == 200 and "tidak ada" in body["reply"], "a resolved incident's code is no longer open"


async def test_a_code_of_another_persons_tps_is_not_theirs_to_resolve(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    await sms(r, token, "081333334444", "ada intimidasi terhadap saksi")
    inc = await get_incident(r, await r.wait_for_incident("GW3"))
    status, body = await sms(r, token, "081211112222", f"SELESAI {inc['code']} aman")
    assert status == 200 and "bukan di TPS Anda" in body["reply"], body
    assert (await get_incident(r, inc["id"]))["status"] == "open"


async def test_hadir_sakit_is_a_checkin(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    async with Tap(r, topics.FIELD_EVENTS) as events:
        status, body = await sms(r, token, "+6281333334444", "hadr SAKIT")
        assert status == 200 and "sakit" in body["reply"] and "TPS GW3" in body["reply"], body
        sent = [m for m in await events.read() if m["event"]["type"] == "checkin"]
    assert len(sent) == 1 and sent[0]["channel"] == "sms"
    assert sent[0]["event"]["payload"] == {"personnel_id": "POL-2", "status": "unwell"}
    assert sent[0]["event"]["tps_id"] == "GW3"

    def status_of() -> str | None:
        with Session(r.ctx.engine) as s:
            person = s.get(Personnel, "POL-2")
            return person.status if person else None

    async def checked_in() -> bool:
        return status_of() == "unwell"

    assert await eventually(checked_in), "dispatch recorded the check-in"


async def test_the_same_message_twice_is_one_event(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    async with Tap(r, topics.FIELD_EVENTS) as events:
        first = await sms(r, token, "081333334444", "massa berkumpul di depan TPS", message_id="gw-42")
        again = await sms(r, token, "081333334444", "massa berkumpul di depan TPS", message_id="gw-42")
        sent = await events.read()
    assert first[0] == again[0] == 200
    assert "sudah diterima" in again[1]["reply"]
    assert len(sent) == 1, "a redelivered message is one event"
    status, body = await sms(r, token, "081333334444", "lain isinya", message_id="gw-42")
    assert status == 409 and body["detail"], "the same id for a different message is a conflict, as for field events"


async def test_an_unknown_number_is_refused_with_no_event(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    before = seen_count(r)
    async with Tap(r, topics.FIELD_EVENTS) as events, Tap(r, topics.COMMANDS) as commands:
        status, body = await sms(r, token, "+6289999999999", "LAPOR ada keributan")
        assert status == 200 and "tidak terdaftar" in body["reply"], body
        assert await events.read() == []
        assert [c for c in await commands.read() if c["actor"].startswith("sms:")] == []
    assert seen_count(r) == before


async def test_bad_bodies_name_the_field(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    headers = {"Authorization": f"Bearer {token}"}
    good = {"gateway_message_id": "m1", "from": "081211112222", "text": "HADIR", "received_at": z(NOW)}
    for field, bad in (
        ("from", {**good, "from": "bukan nomor"}),
        ("gateway_message_id", {k: v for k, v in good.items() if k != "gateway_message_id"}),
        ("received_at", {**good, "received_at": "2024-11-27T08:00:00"}),
        ("received_at", {**good, "received_at": z(NOW - timedelta(days=3))}),
    ):
        res = await r.client.post("/v1/gateway/sms", json=bad, headers=headers)
        assert res.status_code == 422 and res.json()["detail"][0]["field"] == field, (field, res.text)
    res = await r.client.post("/v1/gateway/sms", json=good)
    assert res.status_code == 401


async def test_a_shared_number_is_refused_at_import_naming_the_line(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, _ = rig
    roster = (
        "personnel_id,name,unit,role,tps_ids,phone\n"
        "POL-3,Bripda Dewi,Polsek Pesisir,pam_tps,GW1,0857 0000 1111\n"
        "POL-4,Bripda Eko,Polsek Pesisir,pam_tps,GW1,+62857-0000-1111\n"
        "POL-5,Bripda Fajar,Polsek Pesisir,pam_tps,GW1,081211112222\n"
    )
    res = await r.admin(
        "POST", "/v1/admin/personnel/import", content=roster.encode(), headers={"Content-Type": "text/csv"}
    )
    out = res.json()
    assert out["imported"] == 1
    assert [x["line"] for x in out["refused"]] == [3, 4]
    assert "line 2" in out["refused"][0]["reason"] and "POL-1" in out["refused"][1]["reason"]
