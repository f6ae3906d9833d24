"""Operator judgement in Debian's headless chromium, against the composed dev app on a real server:
an operator enters a radio report from the form (TPS picked by kecamatan and search) and corrects the
incident it opened, and sees the timeline and the new window; a viewer gets neither form. And a
silenced incident shows its held alerts until the silence ends.

`expect`, not `wait_for_function`: the page's Content-Security-Policy forbids eval.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import expect
from pypdf import PdfReader

from tests.plugins.browser import OfflinePage
from tests.security import SEED_KECAMATAN, served_rig

pytestmark = pytest.mark.browser


async def test_operator_enters_a_radio_report_and_corrects_it_a_viewer_cannot(
    tmp_path: Path, offline_page: OfflinePage
) -> None:
    async with served_rig(tmp_path) as (rig, hostport):
        page = offline_page.page
        await page.goto(f"http://{hostport}/?token={rig.tokens['operator']}")
        await page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)

        # The radio report: kecamatan Cikande, then the search narrows it to one TPS.
        await page.click("#radio-open")
        await page.select_option("#radio-kecamatan", "Cikande")
        await expect(page.locator("#radio-tps option")).to_have_count(2)  # T1 and T2
        await page.fill("#radio-search", "002")
        await expect(page.locator("#radio-tps option")).to_have_count(1)
        await page.fill("#radio-description", "Lapor via HT dari PPS: air masuk ke TPS, kotak suara dipindah")
        await page.select_option("#radio-category", "flood")
        await page.click("#radio-send")

        # It opened an incident at T2 from the command post: flood on a flood-rawan TPS is high.
        await expect(page.locator("#incident-dialog")).to_be_visible()
        await expect(page.locator('#incident-facts [data-fact="source"]')).to_have_text("Pos komando (radio/telepon)")
        await expect(page.locator('#incident-facts [data-fact="severity"]')).to_have_text("Tinggi")
        listed = (await rig.client.get("/v1/incidents?kecamatan=Cikande", headers=rig.headers("viewer"))).json()
        mine = [i for i in listed["items"] if i["source"] == "command_post"]
        assert [(i["tps_id"], i["category"], i["severity"]) for i in mine] == [("T2", "flood", "high")]
        iid, opened = mine[0]["id"], datetime.fromisoformat(mine[0]["opened_at"])
        assert datetime.fromisoformat(mine[0]["local_deadline"]) == opened + timedelta(minutes=5)
        await expect(page.locator(f'#queue .card[data-id="{iid}"]')).to_be_visible()

        # The correction: down to medium, below what the facts demand, with a reason.
        await page.select_option("#classify-severity", "medium")
        await page.fill("#classify-reason", "air sudah surut, hanya genangan")
        await page.click("#classify-send")
        await expect(page.locator('#incident-timeline li[data-action="classified"]')).to_have_count(1)
        entry = await page.text_content('#incident-timeline li[data-action="classified"]') or ""
        assert "air sudah surut" in entry and "Tinggi → Sedang" in entry, entry
        await expect(page.locator('#incident-facts [data-fact="severity"]')).to_have_text("Sedang")
        doc = (await rig.client.get(f"/v1/incidents/{iid}", headers=rig.headers("viewer"))).json()
        assert (doc["severity"], doc["level"]) == ("medium", 0)
        assert datetime.fromisoformat(doc["local_deadline"]) == opened + timedelta(minutes=15), "the medium window"
        assert doc["timeline"][-1]["detail"]["override"] is True
        await page.click("#incident-close")

        # A viewer sees the incident, but neither the correction nor the radio report.
        await page.goto(f"http://{hostport}/?token={rig.tokens['viewer']}")
        await page.wait_for_selector("#role:not([hidden])", timeout=10_000)
        await page.click(f'#queue .card[data-id="{iid}"] button[data-open]')
        await expect(page.locator("#incident-dialog")).to_be_visible()
        assert await page.is_hidden("#classify-form") and await page.is_hidden("#radio-open")

    assert offline_page.foreign() == [] and offline_page.blocked == []
    assert offline_page.console_errors == []


async def test_a_silenced_incident_shows_its_held_alerts_until_the_silence_ends(
    tmp_path: Path, offline_page: OfflinePage
) -> None:
    """SPEC section 5: while a silence holds an incident's alerts, its card and its detail say so; when
    the silence is ended, the held alert goes out and the card's note goes away (live, over the WebSocket)."""
    async with served_rig(tmp_path) as (rig, hostport):
        page = offline_page.page
        await page.goto(f"http://{hostport}/?token={rig.tokens['operator']}")
        await page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
        ends = datetime.now(UTC) + timedelta(hours=2)
        silence = (
            await rig.admin(
                "POST",
                "/v1/admin/silences",
                json={"match": {"kecamatan": SEED_KECAMATAN}, "ends_at": ends.isoformat(), "reason": "pemadaman PLN"},
            )
        ).json()
        iid = await rig.new_incident()
        escalated = await rig.client.post(
            f"/v1/incidents/{iid}/escalate", json={"note": "naik"}, headers=rig.headers("operator")
        )
        assert escalated.status_code == 200 and escalated.json()["held_alerts"] == 1, escalated.text

        card = page.locator(f'#queue .card[data-id="{iid}"]')
        await expect(card.locator(".card-silenced")).to_contain_text(f"ditahan oleh silence {silence['id']}")
        await card.locator("button[data-open]").click()
        held = page.locator('#incident-timeline li[data-action="alert_silenced"]')
        await expect(held).to_contain_text(f"ditahan oleh silence {silence['id']} (pemadaman PLN)")
        await expect(page.locator('#incident-facts [data-fact="silenced"]')).to_contain_text(silence["id"])

        ended = await rig.client.delete(f"/v1/admin/silences/{silence['id']}", headers=rig.headers("operator"))
        assert ended.status_code == 200, ended.text
        await expect(page.locator('#incident-facts [data-fact="silenced"]')).to_have_text("—", timeout=10_000)
        await page.click("#incident-close")
        await expect(card.locator(".card-silenced")).to_have_count(0)
        doc = (await rig.client.get(f"/v1/incidents/{iid}", headers=rig.headers("viewer"))).json()
        assert [e["action"] for e in doc["timeline"]].count("alerts_released") == 1

    assert offline_page.foreign() == [] and offline_page.blocked == []
    assert offline_page.console_errors == []


async def test_the_laporan_button_downloads_the_sitrep_pdf(tmp_path: Path, offline_page: OfflinePage) -> None:
    """SPEC section 10: the "Laporan" button fetches the token's sitrep as a PDF and saves it."""
    async with served_rig(tmp_path) as (rig, hostport):
        page = offline_page.page
        await page.goto(f"http://{hostport}/?token={rig.tokens['viewer']}")
        await page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
        button = page.locator("#sitrep-download")
        await expect(button).to_have_text("Laporan")
        async with page.expect_download() as info:
            await button.click()
        download = await info.value
        assert download.suggested_filename.startswith("sitrep-") and download.suggested_filename.endswith(".pdf")
        body = await asyncio.to_thread(Path(await download.path()).read_bytes)
        assert body.startswith(b"%PDF-")
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages)
        assert "Laporan situasi (sitrep)" in text and SEED_KECAMATAN in text

    assert offline_page.foreign() == [] and offline_page.blocked == []
    assert offline_page.console_errors == []
