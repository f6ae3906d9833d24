"""Field orders from the command-center page (SPEC section 9), in Debian's headless chromium against
the composed dev app on a real server: an operator opens an incident, lists the candidates (nearest
first, with unit, distance, status, battery, check-in age and assignment) and sends one with a click;
the order shows as sent, turns acknowledged live when the assignee's device acknowledges it, and an
order nobody answers turns unanswered and stands out. Refusals (422, 409) show in the view. A message
from the form reaches the addressed device's inbox and no other.

`expect`, not `wait_for_function`: the page's Content-Security-Policy forbids eval.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.integration.operator_helpers import eventually, roster_csv
from tests.plugins.browser import OfflinePage
from tests.security import Rig, served_rig, tps_csv

pytestmark = pytest.mark.browser

KECAMATAN = "Operasi"
TPS = [
    {"tps_id": "OA1", "lat": "-6.2000", "lon": "106.3000"},
    {"tps_id": "OA2", "lat": "-6.2100", "lon": "106.3100"},  # ~1.6 km from OA1
    {"tps_id": "OA3", "lat": "-6.3000", "lon": "106.4000"},  # ~15.7 km from OA1
]
ROSTER = [
    ("R1", "Bripda Rudi", "Brimob", "reserve", "OA3"),  # covers OA3, checks in from beside OA1
    ("R2", "Bripka Sari", "Polsek Operasi", "pam_tps", "OA2"),  # no location: counted from OA2
    ("R3", "Aipda Tono", "Polsek Operasi", "pam_tps", "OA3"),  # no location: counted from OA3
    ("R4", "Brigpol Dewi", "Polsek Operasi", "pam_tps", "OA1"),  # unwell: not a candidate
    ("L1", "Linmas Ujang", "Linmas", "linmas", "OA1"),  # civil guard: never sent
]
CHECKINS = [
    ("OA3", "R1", "on_duty", 80, {"lat": -6.2001, "lon": 106.3001}),
    ("OA2", "R2", "on_duty", 55, None),
    ("OA3", "R3", "on_duty", 30, None),
    ("OA1", "R4", "unwell", 90, None),
    ("OA1", "L1", "on_duty", 70, None),
]
ALLOWED_CONSOLE = re.compile(r"Failed to load resource: the server responded with a status of (409|422)")


class Field:
    """The rig's field side: a TPS device that reports and checks people in, and personal devices."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.reporter = ""
        self.devices: dict[str, str] = {}

    async def setup(self) -> None:
        rows = [{"name": f"TPS {t['tps_id']}", "kecamatan": KECAMATAN, "desa": "Desa", "rawan": "", **t} for t in TPS]
        csv_type = {"Content-Type": "text/csv"}
        await self.rig.admin("POST", "/v1/admin/tps/import", content=tps_csv(rows), headers=csv_type)
        await self.rig.admin("POST", "/v1/admin/personnel/import", content=roster_csv(ROSTER), headers=csv_type)
        _, self.reporter = await self.rig.issue_device([t["tps_id"] for t in TPS])
        for person, tps_id in (("R1", "OA3"), ("R2", "OA2")):
            r = await self.rig.admin("POST", "/v1/admin/devices", json={"personnel_id": person, "tps_ids": [tps_id]})
            self.devices[person] = str(r.json()["token"])
        for tps_id, person, status, battery, location in CHECKINS:
            payload: dict[str, Any] = {"personnel_id": person, "status": status, "battery": battery}
            if location:
                payload["location"] = location
            await self.post_event(self.rig.event(tps_id, type="checkin", payload=payload))

    async def post_event(self, ev: dict[str, Any]) -> None:
        r = await self.rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {self.reporter}"})
        assert r.status_code == 202, r.text

    async def candidates(self, incident_id: str) -> list[dict[str, Any]]:
        r = await self.rig.client.get(f"/v1/incidents/{incident_id}/candidates", headers=self.rig.headers("viewer"))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def incident(self, incident_id: str) -> dict[str, Any]:
        r = await self.rig.client.get(f"/v1/incidents/{incident_id}", headers=self.rig.headers("viewer"))
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc

    async def inbox(self, person: str) -> list[dict[str, Any]]:
        r = await self.rig.client.get(
            "/v1/device/inbox", params={"since": "0"}, headers={"Authorization": f"Bearer {self.devices[person]}"}
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


async def test_operator_picks_a_candidate_sees_the_order_acknowledged_live_and_messages_the_field(
    tmp_path: Path, offline_page: OfflinePage
) -> None:
    async with served_rig(tmp_path) as (rig, hostport):
        f = Field(rig)
        await f.setup()
        await f.post_event(
            rig.event("OA1", payload={"category": "violence", "description": "bentrok dua kelompok warga"})
        )
        iid = await rig.wait_for_incident("OA1")

        async def all_checked_in() -> bool:
            return {c["personnel_id"] for c in await f.candidates(iid)} == {"R1", "R2", "R3"}

        assert await eventually(all_checked_in), await f.candidates(iid)
        listed = await f.candidates(iid)
        assert [c["personnel_id"] for c in listed] == ["R1", "R2", "R3"], "the API's nearest-first order"

        page = offline_page.page
        loads: list[str] = []
        page.on("load", lambda p: loads.append(p.url))
        await page.goto(f"http://{hostport}/?token={rig.tokens['operator']}")
        await page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
        await page.click(f'#queue .card[data-id="{iid}"] button[data-open]')
        await expect(page.locator("#incident-dialog")).to_be_visible()
        await expect(page.locator("#orders-empty")).to_be_visible()
        await expect(page.locator("#incident-orders li")).to_have_count(0)

        # The candidates, nearest first, with what the operator picks by.
        await page.click("#assign-open")
        rows = page.locator("#candidates-body tr")
        await expect(rows).to_have_count(3)

        async def column(col: str) -> list[str]:
            texts: list[str] = await page.locator(f'#candidates-body td[data-col="{col}"]').all_inner_texts()
            return texts

        assert await column("name") == ["Bripda Rudi", "Bripka Sari", "Aipda Tono"]
        assert await column("unit") == ["Brimob · Cadangan", "Polsek Operasi · Pam TPS", "Polsek Operasi · Pam TPS"]
        assert await column("distance") == ["0,0 km", "1,6 km", "15,7 km"]
        assert await column("distance") == [f"{c['distance_km']:.1f} km".replace(".", ",") for c in listed]
        assert await column("status") == ["Bertugas"] * 3
        assert await column("battery") == ["80%", "55%", "30%"]
        ages = await column("checkin")
        assert all(re.fullmatch(r"baru|\d+ mnt lalu", a) for a in ages), ages
        assert await column("assignment") == ["bebas"] * 3
        assert await page.get_attribute('#candidates-body tr[data-personnel-id="R1"] td[data-col="distance"]', "title")

        # A refused body (422) is shown in the view and sends nobody.
        await page.fill("#assign-eta", "-1")
        await page.click("#assign-nearest")
        error = page.locator("#assign-error")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("422")
        await expect(error).to_contain_text("eta_minutes")
        assert (await f.incident(iid))["orders"] == []

        # One click on R1, with an ETA and a note: the order shows as sent.
        await page.fill("#assign-eta", "10")
        await page.fill("#assign-note", "amankan TPS OA1")
        await page.click('#candidates-body tr[data-personnel-id="R1"] button[data-assign]')
        r1 = page.locator('#incident-orders li[data-personnel-id="R1"]')
        await expect(r1).to_have_attribute("data-state", "sent")
        await expect(r1.locator(".badge")).to_have_text("terkirim")
        await expect(r1).to_contain_text("tiba ±10 mnt")
        await expect(error).to_be_hidden()
        await expect(page.locator("#orders-empty")).to_be_hidden()
        doc = await f.incident(iid)
        assert [(o["personnel_id"], o["state"], o["eta_minutes"], o["note"]) for o in doc["orders"]] == [
            ("R1", "sent", 10, "amankan TPS OA1")
        ]
        order_id = doc["orders"][0]["order_id"]
        await expect(page.locator(f'#incident-orders li[data-order-id="{order_id}"]')).to_have_count(1)
        # The list is fetched again: R1 is now sent here and cannot be sent twice.
        r1_row = page.locator('#candidates-body tr[data-personnel-id="R1"]')
        await expect(r1_row.locator('td[data-col="assignment"]')).to_have_text("dikirim ke insiden ini")
        await expect(r1_row.locator("button[data-assign]")).to_be_disabled()
        await expect(page.locator(f'#queue .card[data-id="{iid}"] .card-order')).to_contain_text("Bripda Rudi")

        # R2 is sent from elsewhere behind the page's back: a click on the stale row is refused (409),
        # said in the view, and the list shows who is free now. R2's order arrives by the WebSocket.
        r = await rig.client.post(
            f"/v1/incidents/{iid}/assign", json={"personnel_id": "R2"}, headers=rig.headers("operator")
        )
        assert r.status_code == 200, r.text
        await page.click('#candidates-body tr[data-personnel-id="R2"] button[data-assign]')
        await expect(error).to_contain_text("409")
        await expect(error).to_contain_text("already sent")
        r2_row = page.locator('#candidates-body tr[data-personnel-id="R2"]')
        await expect(r2_row.locator('td[data-col="assignment"]')).to_have_text("dikirim ke insiden ini")
        await expect(page.locator('#incident-orders li[data-personnel-id="R2"]')).to_have_attribute(
            "data-state", "sent"
        )
        assert [o["personnel_id"] for o in (await f.incident(iid))["orders"]] == ["R1", "R2"], "the 409 sent nobody"

        # R1's device acknowledges: the page shows it live, timeline included, without a reload.
        assignments = [i for i in await f.inbox("R1") if i["kind"] == "assignment"]
        assert [i["order_id"] for i in assignments] == [order_id]
        r = await rig.client.post(
            f"/v1/device/inbox/{order_id}/ack",
            json={"note": "meluncur"},
            headers={"Authorization": f"Bearer {f.devices['R1']}"},
        )
        assert r.status_code == 200, r.text
        await expect(r1).to_have_attribute("data-state", "acknowledged", timeout=10_000)
        await expect(r1.locator(".badge")).to_have_text("diterima")
        acked = page.locator('#incident-timeline li[data-action="order_acknowledged"]')
        await expect(acked).to_have_count(1)
        await expect(acked).to_contain_text("Bripda Rudi menerima perintah: meluncur")
        await expect(page.locator('#incident-orders li[data-personnel-id="R2"]')).to_have_attribute(
            "data-state", "sent"
        )
        assert len(loads) == 1, loads

        # An order nobody answers (acknowledge within about a second now): re-sent once, then
        # unanswered, in the warning colour with a hint.
        policy = (await rig.admin("GET", "/v1/admin/policy")).json()["policy"]
        await rig.admin("PUT", "/v1/admin/policy", json={**policy, "order_ack_minutes": 0.02})
        await page.fill("#assign-eta", "")
        await page.fill("#assign-note", "")
        await page.click('#candidates-body tr[data-personnel-id="R3"] button[data-assign]')
        r3 = page.locator('#incident-orders li[data-personnel-id="R3"]')
        await expect(r3).to_have_count(1)
        await expect(r3).to_have_attribute("data-state", "unanswered", timeout=20_000)
        await expect(r3).to_have_class(re.compile(r"\bunanswered\b"))
        await expect(r3.locator(".badge")).to_have_text("tidak dijawab")
        await expect(r3.locator(".badge")).to_have_css("background-color", "rgb(248, 81, 73)")
        await expect(r3.locator(".order-warn")).to_be_visible()
        await expect(r3).to_contain_text("percobaan ke-2")
        await expect(r1).not_to_have_class(re.compile(r"\bunanswered\b"))
        assert (await f.incident(iid))["orders"][2]["state"] == "unanswered"

        # "Message this TPS" opens the form addressed to the incident's TPS.
        await page.click("#incident-message")
        await expect(page.locator("#message-dialog")).to_be_visible()
        await expect(page.locator("#message-to")).to_have_value("tps_ids")
        await expect(page.locator("#message-ids")).to_have_value("OA1")
        await page.click("#message-cancel")
        await page.click("#incident-close")

        # The message form: an unknown TPS is refused in the form; a message to R2 reaches R2's inbox only.
        await page.click("#message-open")
        await expect(page.locator("#message-dialog")).to_be_visible()
        await page.select_option("#message-to", "tps_ids")
        await page.fill("#message-ids", "NOPE")
        await page.fill("#message-text", "cek logistik")
        await page.click("#message-send")
        await expect(page.locator("#message-error")).to_contain_text("422")
        await expect(page.locator("#message-error")).to_contain_text("to.tps_ids")
        await expect(page.locator("#message-result")).to_be_hidden()

        text = "hujan deras malam ini, amankan logistik di tempat tinggi"
        await page.select_option("#message-to", "personnel_ids")
        await page.fill("#message-ids", "R2")
        await page.select_option("#message-priority", "urgent")
        await page.fill("#message-text", text)
        await page.click("#message-send")
        await expect(page.locator("#message-result")).to_contain_text("person:R2")
        await expect(page.locator("#message-error")).to_be_hidden()

        async def delivered() -> bool:
            return any(i["kind"] == "message" for i in await f.inbox("R2"))

        assert await eventually(delivered), await f.inbox("R2")
        messages = [(i["text"], i["priority"]) for i in await f.inbox("R2") if i["kind"] == "message"]
        assert messages == [(text, "urgent")]
        assert [i for i in await f.inbox("R1") if i["kind"] == "message"] == [], "R1 was not addressed"
        assert len(loads) == 1, loads

    assert offline_page.foreign() == [] and offline_page.blocked == []
    unexpected = [e for e in offline_page.console_errors if not ALLOWED_CONSOLE.search(e)]
    assert unexpected == [], unexpected


async def test_boxes_in_transit_are_drawn_and_an_overdue_escort_turns_red_and_opens_an_incident(
    tmp_path: Path, offline_page: OfflinePage
) -> None:
    async with served_rig(tmp_path) as (rig, hostport):
        f = Field(rig)
        await f.setup()
        doc = (await rig.admin("GET", "/v1/admin/policy")).json()["policy"]
        put = await rig.admin("PUT", "/v1/admin/policy", json=doc | {"escort_grace_minutes": 0})
        assert put.status_code == 200, put.text
        page = offline_page.page
        await page.goto(f"http://{hostport}/?token={rig.tokens['viewer']}")
        await page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
        await expect(page.locator("#map")).to_have_attribute("data-escorts", "0", timeout=10_000)

        on_time = {"box_ids": ["OA2-GUB", "OA2-BUP"], "to": "PPK Operasi", "expected_minutes": 60}
        await f.post_event(rig.event("OA2", type="escort.departed", payload=on_time))
        await expect(page.locator("#map")).to_have_attribute("data-escorts", "1", timeout=10_000)
        await expect(page.locator("#map")).to_have_attribute("data-escorts-overdue", "0")

        late = {"box_ids": ["OA3-GUB"], "to": "PPK Operasi", "expected_minutes": 0.02}  # due in 1.2 s, no grace
        await f.post_event(rig.event("OA3", type="escort.departed", payload=late))
        await expect(page.locator("#map")).to_have_attribute("data-escorts-overdue", "1", timeout=15_000)
        iid = await rig.wait_for_incident("OA3")
        await expect(page.locator(f'#queue .card[data-id="{iid}"]')).to_be_visible(timeout=10_000)
        assert (await f.incident(iid))["category"] == "escort_overdue"

        await f.post_event(
            rig.event("OA3", type="escort.arrived", payload={"box_ids": ["OA3-GUB"], "at": "PPK Operasi"})
        )
        await f.post_event(
            rig.event("OA2", type="escort.arrived", payload={"box_ids": on_time["box_ids"], "at": "PPK Operasi"})
        )
        await expect(page.locator("#map")).to_have_attribute("data-escorts", "0", timeout=10_000)

        async def closed() -> bool:
            return (await f.incident(iid))["status"] == "resolved"

        assert await eventually(closed), "the late escort's arrival resolved its incident"
