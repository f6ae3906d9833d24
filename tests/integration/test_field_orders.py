"""Field orders and the device inbox (SPEC section 9), through the composed app's HTTP API.

On the in-process rig with a ManualClock (`clocked_rig`): the nearest available person is picked
(check-in location first, else their TPS; the unwell, the linmas, the already sent and the other
kecamatan left out); an unacknowledged order is re-sent once after `order_ack_minutes` and then
flagged unanswered; each device's inbox holds only what is meant for its TPS, kecamatan and person,
resumes from its cursor with no gap and no duplicate, and answers 304 when nothing changed; an
acknowledgement lands on the incident's timeline and stops the re-send; messages reach only their
addressees; an officer who goes silent while the Linmas still checks in leaves the post short.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga import topics
from siaga.clock import ManualClock
from siaga.simulator.command import CommandCenter
from tests.integration.operator_helpers import Tap, clocked_rig, eventually, get_incident, report, roster_csv, tick
from tests.security import Rig

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)


def _tps(tps_id: str, kecamatan: str, lat: float, lon: float) -> dict[str, str]:
    return {
        "tps_id": tps_id,
        "name": f"TPS {tps_id}",
        "kecamatan": kecamatan,
        "desa": "Desa",
        "lat": str(lat),
        "lon": str(lon),
        "rawan": "",
    }


TPS = [
    _tps("FA1", "Operasi", -6.2000, 106.3000),
    _tps("FA2", "Operasi", -6.2100, 106.3100),  # ~1.6 km from FA1
    _tps("FA3", "Operasi", -6.3000, 106.4000),  # ~15.7 km from FA1
    _tps("FB1", "Lain", -6.2000, 106.3000),  # another kecamatan, same place as FA1
]
ROSTER = [
    # R1 covers the far TPS but checks in from right beside FA1: nearest by check-in location.
    ("R1", "Bripda Rudi", "Brimob", "reserve", "FA3"),
    ("R2", "Bripka Sari", "Polsek", "pam_tps", "FA2"),  # no location sent: counted from FA2
    ("R3", "Aipda Tono", "Polsek", "pam_tps", "FA1"),  # unwell
    ("R4", "Brigpol Dewi", "Polsek", "pam_tps", "FA1"),  # sent to another incident first
    ("L1", "Linmas Ujang", "Linmas", "linmas", "FA1"),  # civil guard: never sent
    ("X1", "Bripda Joko", "Polsek", "pam_tps", "FB1"),  # another kecamatan
    ("R5", "Bripda Lama", "Polsek", "pam_tps", "FA2"),  # checked in over an hour ago
]


class Field:
    """The rig with the roster, a device per person that matters, and the people checked in."""

    def __init__(self, rig: Rig, clock: ManualClock, token: str) -> None:
        self.rig, self.clock, self.token = rig, clock, token
        self.devices: dict[str, str] = {}

    async def device(self, name: str, *, personnel_id: str | None, tps_ids: list[str]) -> str:
        r = await self.rig.admin("POST", "/v1/admin/devices", json={"personnel_id": personnel_id, "tps_ids": tps_ids})
        self.devices[name] = str(r.json()["token"])
        return self.devices[name]

    async def checkin(self, tps_id: str, personnel_id: str, status: str, **extra: Any) -> None:
        ev = self.rig.event(
            tps_id, type="checkin", payload={"personnel_id": personnel_id, "status": status, "battery": 80, **extra}
        )
        r = await self.rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 202, r.text

    async def phase(self, tps_id: str, phase: str) -> None:
        ev = self.rig.event(tps_id, type="tps.status", payload={"phase": phase})
        r = await self.rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 202, r.text

    async def inbox(self, name: str, since: str = "0", etag: str | None = None) -> tuple[int, dict[str, Any], str]:
        headers = {"Authorization": f"Bearer {self.devices[name]}"}
        if etag:
            headers["If-None-Match"] = etag
        r = await self.rig.client.get("/v1/device/inbox", params={"since": since}, headers=headers)
        assert r.status_code in (200, 304), r.text
        return r.status_code, (r.json() if r.status_code == 200 else {}), r.headers["etag"]

    async def assign(self, incident_id: str, body: dict[str, Any]) -> Any:
        return await self.rig.client.post(
            f"/v1/incidents/{incident_id}/assign", json=body, headers=self.rig.headers("operator")
        )

    async def candidates(self, incident_id: str) -> list[dict[str, Any]]:
        r = await self.rig.client.get(f"/v1/incidents/{incident_id}/candidates", headers=self.rig.headers("viewer"))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


@pytest.fixture
async def field(tmp_path: Path) -> AsyncIterator[Field]:
    async with clocked_rig(tmp_path, NOW, TPS) as (rig, clock, token):
        await rig.admin(
            "POST", "/v1/admin/personnel/import", content=roster_csv(ROSTER), headers={"Content-Type": "text/csv"}
        )
        f = Field(rig, clock, token)
        await f.checkin("FA1", "R5", "on_duty")
        clock.advance(minutes=61)  # R5's check-in is now stale
        await f.checkin("FA3", "R1", "on_duty", location={"lat": -6.2001, "lon": 106.3001})
        await f.checkin("FA2", "R2", "on_duty")
        await f.checkin("FA1", "R3", "unwell")
        await f.checkin("FA1", "R4", "on_duty", location={"lat": -6.2000, "lon": 106.3000})
        await f.checkin("FA1", "L1", "on_duty")
        await f.checkin("FB1", "X1", "on_duty")
        await f.device("R1", personnel_id="R1", tps_ids=["FA3"])
        await f.device("FA1", personnel_id=None, tps_ids=["FA1"])
        await f.device("FA2", personnel_id=None, tps_ids=["FA2"])
        await f.device("FB1", personnel_id="X1", tps_ids=["FB1"])
        yield f


async def _incident(f: Field, tps_id: str) -> str:
    return await report(f.rig, f.token, tps_id, category="violence", description="bentrok dua kelompok warga")


async def test_nearest_picks_the_closest_free_person_and_skips_the_sent_and_unwell(field: Field) -> None:
    f = field
    first = await _incident(f, "FA2")
    r = await f.assign(first, {"personnel_id": "R4", "note": "amankan TPS"})
    assert r.status_code == 200, r.text
    assert [(o["personnel_id"], o["state"]) for o in r.json()["orders"]] == [("R4", "sent")]

    second = await _incident(f, "FA1")

    async def settled() -> bool:
        return {c["personnel_id"] for c in await f.candidates(second)} == {"R1", "R2", "R4"}

    assert await eventually(settled), await f.candidates(second)
    listed = await f.candidates(second)
    assert [(c["personnel_id"], c["located_by"], c["available"]) for c in listed] == [
        ("R1", "checkin", True),  # 15 m from FA1, though he covers FA3
        ("R2", "tps", True),  # FA2's place, ~1.6 km
        ("R4", "checkin", False),  # nearest of all, but sent to the first incident
    ]
    assert listed[0]["distance_km"] < 0.05 and 1.0 < listed[1]["distance_km"] < 2.0
    assert listed[2]["assignment"]["incident_id"] == first
    assert listed[0]["status"] == "on_duty" and listed[0]["battery"] == 80
    assert listed[0]["checkin_age_minutes"] == 0

    r = await f.assign(second, {"nearest": True, "eta_minutes": 10})
    assert r.status_code == 200, r.text
    assert [o["personnel_id"] for o in r.json()["orders"]] == ["R1"]
    entry = r.json()["timeline"][-1]
    assert (entry["action"], entry["detail"]["personnel_id"], entry["detail"]["nearest"]) == ("order_sent", "R1", True)
    r = await f.assign(second, {"nearest": True})
    assert [o["personnel_id"] for o in r.json()["orders"]] == ["R1", "R2"]
    r = await f.assign(second, {"nearest": True})
    assert r.status_code == 409 and "nobody" in r.json()["detail"], r.text

    # Named people: unknown 404, unwell / linmas / already sent 409; bad bodies 422 naming the field.
    r = await f.assign(second, {"personnel_id": "NOPE"})
    assert r.status_code == 404 and "NOPE" in r.json()["detail"], r.text
    for who, why in (("R3", "unwell"), ("L1", "linmas"), ("R4", "already sent"), ("R5", "not checked in for")):
        r = await f.assign(second, {"personnel_id": who})
        assert r.status_code == 409 and why in r.json()["detail"], (who, r.text)
    r = await f.assign("INC-NOPE", {"nearest": True})
    assert r.status_code == 404, r.text
    r = await f.assign(second, {"nearest": True, "personnel_id": "R2"})
    assert r.status_code == 422, r.text
    r = await f.assign(second, {"nearest": True, "eta_minutes": -1})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "eta_minutes", r.text
    assert len((await get_incident(f.rig, second))["orders"]) == 2, "refused assignments sent nothing"


async def test_an_order_is_resent_once_then_flagged_and_an_ack_lands_on_the_timeline(field: Field) -> None:
    f = field
    iid = await _incident(f, "FA1")
    r = await f.assign(iid, {"personnel_id": "R1", "eta_minutes": 12, "note": "ke TPS FA1"})
    assert r.status_code == 200, r.text
    order_id = r.json()["orders"][0]["order_id"]

    status, page, tag = await f.inbox("R1")
    assert [(i["kind"], i["order_id"], i["attempt"]) for i in page["items"]] == [("assignment", order_id, 1)]
    assert page["items"][0]["incident_id"] == iid and page["items"][0]["note"] == "ke TPS FA1"
    cursor = page["cursor"]
    status, _, again = await f.inbox("R1", cursor, etag=tag)
    assert (status, again) == (304, tag), "nothing new: 304 with the same ETag"
    status, tps_page, _ = await f.inbox("FA1")
    assert [(i["kind"], i["assignment_id"], i["eta_minutes"]) for i in tps_page["items"]] == [
        ("help_on_the_way", order_id, 12)
    ], "the incident's TPS hears that help is on the way, not the order itself"
    for other in ("FA2", "FB1"):
        assert (await f.inbox(other))[1]["items"] == [], f"{other} sees nothing meant for others"

    # Not acknowledged within order_ack_minutes (5): sent again, once.
    f.clock.advance(minutes=4, seconds=59)
    await tick(f.rig)
    assert (await get_incident(f.rig, iid))["orders"][0]["state"] == "sent"
    f.clock.advance(seconds=1)
    await tick(f.rig)
    doc = await get_incident(f.rig, iid)
    assert (doc["orders"][0]["state"], doc["orders"][0]["attempt"]) == ("resent", 2)
    assert [e["action"] for e in doc["timeline"]].count("order_resent") == 1
    status, page, tag2 = await f.inbox("R1", cursor, etag=tag)
    assert status == 200 and tag2 != tag
    assert [(i["order_id"], i["attempt"]) for i in page["items"]] == [(order_id, 2)], "only the re-send, no repeat"
    cursor = page["cursor"]

    # Still nothing for as long again: flagged unanswered, and not sent a third time.
    f.clock.advance(minutes=5)
    await tick(f.rig)
    doc = await get_incident(f.rig, iid)
    assert doc["orders"][0]["state"] == "unanswered"
    assert [e["action"] for e in doc["timeline"]].count("order_unanswered") == 1
    f.clock.advance(minutes=10)
    await tick(f.rig)
    assert (await f.inbox("R1", cursor))[1]["items"] == [], "no third send"

    # Another device cannot acknowledge it (404, nothing changes); the assignee can.
    before = len((await get_incident(f.rig, iid))["timeline"])
    for other in ("FB1", "FA2"):
        r = await f.rig.client.post(
            f"/v1/device/inbox/{order_id}/ack", json={}, headers={"Authorization": f"Bearer {f.devices[other]}"}
        )
        assert r.status_code == 404, r.text
    assert len((await get_incident(f.rig, iid))["timeline"]) == before
    headers = {"Authorization": f"Bearer {f.devices['R1']}"}
    r = await f.rig.client.post(f"/v1/device/inbox/{order_id}/ack", json={"note": "meluncur"}, headers=headers)
    assert r.status_code == 200 and r.json() == {"item_id": order_id, "incident_id": iid, "acknowledged": True}
    doc = await get_incident(f.rig, iid)
    entry = doc["timeline"][-1]  # (the incident's own climb is at its end already: level 3)
    assert entry["action"] == "order_acknowledged" and entry["actor"].startswith("device:")
    assert entry["detail"] == {"order_id": order_id, "personnel_id": "R1", "note": "meluncur", "late": True}
    assert doc["orders"][0]["state"] == "acknowledged"
    r = await f.rig.client.post(f"/v1/device/inbox/{order_id}/ack", headers=headers)
    assert r.status_code == 200
    assert len((await get_incident(f.rig, iid))["timeline"]) == len(doc["timeline"]), "acknowledged once"


async def test_an_ack_in_time_stops_the_resend(field: Field) -> None:
    f = field
    iid = await _incident(f, "FA1")
    order_id = (await f.assign(iid, {"personnel_id": "R1"})).json()["orders"][0]["order_id"]
    help_id = (await f.inbox("FA1"))[1]["items"][0]["order_id"]
    f.clock.advance(minutes=2)
    headers = {"Authorization": f"Bearer {f.devices['R1']}"}
    assert (await f.rig.client.post(f"/v1/device/inbox/{order_id}/ack", headers=headers)).status_code == 200
    tps_headers = {"Authorization": f"Bearer {f.devices['FA1']}"}
    r = await f.rig.client.post(f"/v1/device/inbox/{help_id}/ack", json={"note": "terima kasih"}, headers=tps_headers)
    assert r.status_code == 200, r.text
    f.clock.advance(minutes=20)
    await tick(f.rig)
    doc = await get_incident(f.rig, iid)
    assert doc["orders"][0]["state"] == "acknowledged" and doc["orders"][0]["attempt"] == 1
    actions = [e["action"] for e in doc["timeline"]]
    assert "order_resent" not in actions and "order_unanswered" not in actions
    acks = [a for a in actions if a.endswith("_acknowledged")]
    assert acks == ["order_acknowledged", "notice_acknowledged"]


async def test_messages_reach_only_their_addressees_and_the_cursor_pages_without_gaps(field: Field) -> None:
    f = field

    async def send(to: dict[str, Any], text: str) -> Any:
        return await f.rig.client.post(
            "/v1/messages", json={"to": to, "text": text, "priority": "urgent"}, headers=f.rig.headers("operator")
        )

    sent = {
        "tps": await send({"tps_ids": ["FA2"]}, "ke FA2"),
        "kec": await send({"kecamatan": ["Operasi"]}, "ke Operasi"),
        "person": await send({"personnel_ids": ["X1"]}, "ke X1"),
        "all": await send({"all": True}, "hujan deras malam ini, amankan logistik di tempat tinggi"),
    }
    for name, r in sent.items():
        assert r.status_code == 201 and r.json()["count"] == 1, (name, r.text)
    seen = {name: [i["text"] for i in (await f.inbox(name))[1]["items"]] for name in ("R1", "FA1", "FA2", "FB1")}
    rain = "hujan deras malam ini, amankan logistik di tempat tinggi"
    assert seen == {
        "R1": ["ke Operasi", rain],  # FA3 is in Operasi
        "FA1": ["ke Operasi", rain],
        "FA2": ["ke FA2", "ke Operasi", rain],
        "FB1": ["ke X1", rain],  # X1's device, in another kecamatan
    }

    for body, field_name in (
        ({"to": {}, "text": "x"}, "to"),
        ({"to": {"tps_ids": []}, "text": "x"}, "to"),
        ({"to": {"tps_ids": ["FA1"]}, "text": ""}, "text"),
        ({"to": {"tps_ids": ["NOPE"]}, "text": "x"}, "to.tps_ids"),
        ({"to": {"kecamatan": ["Nowhere"]}, "text": "x"}, "to.kecamatan"),
    ):
        r = await f.rig.client.post("/v1/messages", json=body, headers=f.rig.headers("operator"))
        assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith(field_name), (body, r.text)
    assert (await f.inbox("FB1"))[1]["items"][-1]["text"] == rain, "refused messages reached nobody"

    # 150 messages: two pages, each item once, in order, whatever arrives between the polls.
    for n in range(150):
        assert (await send({"tps_ids": ["FA1"]}, f"m{n}")).status_code == 201
    got: list[str] = []
    cursor = "0"
    while True:
        _, page, _ = await f.inbox("FA1", cursor)
        got += [i["text"] for i in page["items"]]
        cursor = page["cursor"]
        if len(got) == 100:
            assert page["more"] is True
            assert (await send({"tps_ids": ["FA1"]}, "late")).status_code == 201
        if not page["more"]:
            break
    assert got == ["ke Operasi", rain, *[f"m{n}" for n in range(150)], "late"]
    seqs = [i["seq"] for i in (await f.inbox("FA1"))[1]["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_an_unwell_officer_at_a_post_left_short_opens_coverage_with_replacements(field: Field) -> None:
    f = field
    await f.phase("FA1", "voting")
    await f.checkin("FA1", "R4", "unwell")  # FA1 keeps only Linmas Ujang: no police, one person
    iid = await f.rig.wait_for_incident("FA1")
    inc = await get_incident(f.rig, iid)
    assert (inc["category"], inc["severity"]) == ("coverage", "medium")
    assert (inc["facts"]["police_on_duty"], inc["facts"]["on_duty"]) == (0, 1)
    assert [p["personnel_id"] for p in inc["facts"]["replacements"]][:2] == ["R1", "R2"], "reserve first"
    candidates = [c["personnel_id"] for c in await f.candidates(iid)]
    assert "R1" in candidates and "R4" not in candidates
    sent = await f.assign(iid, {"personnel_id": "R1", "note": "gantikan Brigpol Dewi di FA1"})
    assert sent.status_code == 200, sent.text
    await f.checkin("FA1", "R4", "on_duty")  # she is better: police 1, people 2 again

    async def covered() -> bool:
        return (await get_incident(f.rig, iid))["status"] == "resolved"

    assert await eventually(covered), "back at both minimums: the coverage incident is resolved"


async def test_an_officer_gone_silent_while_the_linmas_checks_in_opens_coverage(field: Field) -> None:
    f = field
    await f.phase("FA1", "voting")
    await tick(f.rig)  # R5's hour-old check-in lapses: FA1 still has R4 and L1, nothing opens
    async with Tap(f.rig, topics.INCIDENT_UPDATES) as updates:
        f.clock.advance(minutes=50)
        await f.checkin("FA1", "L1", "on_duty")  # Linmas Ujang keeps checking in; Brigpol Dewi does not

        async def fa1() -> list[dict[str, Any]]:
            return [u["tps"] for u in await updates.read() if u.get("type") == "tps" and u["tps"]["tps_id"] == "FA1"]

        async def applied() -> bool:
            return any(t["last_checkin_at"] == "2024-11-27T09:51:00Z" for t in await fa1())

        assert await eventually(applied), "dispatch applied the Linmas's check-in"
        f.clock.advance(minutes=11)
        await tick(f.rig)
        iid = await f.rig.wait_for_incident("FA1")
        inc = await get_incident(f.rig, iid)
        assert (inc["category"], inc["status"]) == ("coverage", "open")
        assert inc["facts"]["dropped_out"]["personnel_id"] == "R4"
        assert inc["facts"]["dropped_out"]["status"] == "silent"
        assert (inc["facts"]["police_on_duty"], inc["facts"]["on_duty"]) == (0, 1)

        async def counted() -> bool:
            frames = await fa1()
            last = frames[-1] if frames else {}
            return (last.get("lapsed"), last.get("unwell"), last.get("checked_in")) == (2, 1, 1)

        assert await eventually(counted), "the TPS frame counts R4 and R5 lapsed, R3 unwell, L1 on duty"


async def test_the_simulated_command_center_acknowledges_sends_the_nearest_and_closes(field: Field) -> None:
    """The demo's duty officers (siaga.simulator.command) through the real operator API."""
    f = field
    clash = await report(
        f.rig, f.token, "FA1", category="violence", description="bentrok pakai golok", weapons=True, injuries=2
    )
    small = await report(f.rig, f.token, "FA2", category="equipment", description="printer macet")
    assert (await get_incident(f.rig, clash))["status"] == "escalated", "critical goes straight up"
    assert (await get_incident(f.rig, small))["level"] == 0
    token = f.rig.headers("operator")["Authorization"].removeprefix("Bearer ")
    # At speed 60,000 the simulated minutes of the delays are milliseconds.
    center = CommandCenter(
        f.rig.client, "", token, speed=60_000, poll_s=0.05, ack_share=1.0, close_share=1.0, close_minutes=(50, 50)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(center.run(stop))
    try:

        async def closed() -> bool:
            return str((await get_incident(f.rig, clash))["status"]) == "resolved"

        assert await eventually(closed), (center.stats, await get_incident(f.rig, clash))
    finally:
        stop.set()
        await running
    doc = await get_incident(f.rig, clash)
    actions = [(e["action"], e["actor"]) for e in doc["timeline"] if e["actor"].startswith("operator:")]
    assert [a for a, _ in actions][:3] == ["acknowledged", "order_sent", "resolved"], actions
    assert [o["personnel_id"] for o in doc["orders"]] == ["R4"], "the nearest free person: at FA1 itself"
    assert (center.stats.acknowledged, center.stats.assigned, center.stats.resolved) == (1, 1, 1)
    untouched = await get_incident(f.rig, small)
    assert (untouched["status"], untouched["level"]) == ("open", 0), "on-site work is the field's"


async def test_the_simulated_command_center_lets_some_escalations_climb() -> None:
    """With ack_share 0 it reads the escalation and leaves it: nobody is asked anything."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        items = [{"id": "INC-1", "status": "escalated", "category": "violence", "severity": "high", "orders": []}]
        return httpx.Response(200, json={"items": items, "count": 1})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://dispatch") as http:
        center = CommandCenter(http, "", "tok", speed=60, ack_share=0.0)
        await center.poll()
        await center.poll()
    assert seen == ["GET /v1/incidents", "GET /v1/incidents"], "no ack, no assignment"
    assert (center.stats.seen, center.stats.left, center.stats.acknowledged) == (1, 1, 0), "decided once"
    assert center.needs_someone({"category": "coverage", "severity": "medium"})
    assert not center.needs_someone({"category": "violence", "severity": "medium"})
