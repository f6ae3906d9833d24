"""The region switch and the roll-up (SPEC section 10) in Debian's headless chromium, against the
composed dev app on a real server: a viewer opens the national summary by provinsi, drills down to
the kabupaten of Banten and sees a new incident counted live, opens one kabupaten's TPS detail, and
is sent back, with the reason, from a region that does not exist.

`expect`, not `wait_for_function`: the page's Content-Security-Policy forbids eval.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.async_api import expect

from tests.integration.test_scopes import BOGOR, LEBAK, REGISTRY, SERANG, registry_csv
from tests.plugins.browser import OfflinePage
from tests.security import Rig, served_rig

pytestmark = pytest.mark.browser


async def report(rig: Rig, device: str, tps_id: str, category: str, text: str) -> str:
    ev = rig.event(tps_id, payload={"category": category, "description": text})
    r = await rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {device}"})
    assert r.status_code == 202, r.text
    return await rig.wait_for_incident(tps_id)


def row(region: str) -> str:
    return f'#summary-body tr[data-region="{region}"]'


async def test_a_viewer_drills_down_from_the_national_summary_to_one_kabupaten(
    tmp_path: Path, offline_page: OfflinePage
) -> None:
    async with served_rig(tmp_path) as (rig, hostport):
        await rig.admin("POST", "/v1/admin/tps/import", content=registry_csv(), headers={"Content-Type": "text/csv"})
        _, device = await rig.issue_device([t[0] for t in REGISTRY])
        lebak = await report(rig, device, "RG-LC1", "equipment", "Genset mati, TPS gelap")
        await report(rig, device, "RG-BC1", "logistics", "Surat suara kurang 40 lembar")

        page = offline_page.page
        await page.goto(f"http://{hostport}/?token={rig.tokens['viewer']}&view=summary&by=provinsi")
        await page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
        await expect(page.locator("#summary-panel")).to_be_visible()
        assert await page.is_hidden("#detail-grid"), "a summary, not every TPS"
        await expect(page.locator(row("Jawa Barat"))).to_be_visible()
        await expect(page.locator(f'{row("Jawa Barat")} td[data-state="normal"]')).to_have_text("0")
        await expect(page.locator(row("Jawa Barat")).locator("td.sev").first).to_have_text("1 Sedang")

        # Banten's kabupaten: Serang and Lebak, not Bogor (Jawa Barat).
        await page.click(f"{row('Banten')} button[data-drill]")
        await expect(page.locator(row(f"Banten/{LEBAK}"))).to_be_visible()
        await expect(page.locator(row(f"Banten/{SERANG}"))).to_be_visible()
        await expect(page.locator(row(f"Banten/{BOGOR}"))).to_have_count(0)
        query = parse_qs(urlparse(page.url).query)
        assert (query["view"], query["by"], query["provinsi"]) == (["summary"], ["kabupaten"], ["Banten"])
        await expect(page.locator("#region-name")).to_have_text("Banten")

        # Live: a new incident in Serang's Kramatwatu raises Serang's open count, with no reload.
        serang_open = page.locator(row(f"Banten/{SERANG}")).locator("td.num").nth(6)
        before = int(await serang_open.text_content() or "0")
        await report(rig, device, "RG-SK1", "violence", "Dua pendukung paslon baku hantam, satu orang luka")
        await expect(serang_open).to_have_text(str(before + 1), timeout=10_000)

        # Lebak's detail: its TPS and incident only.
        await page.click(f"{row(f'Banten/{LEBAK}')} button[data-drill]")
        await expect(page.locator("#detail-grid")).to_be_visible()
        assert await page.is_hidden("#summary-panel")
        await expect(page.locator(f'#queue .card[data-id="{lebak}"]')).to_be_visible()
        await expect(page.locator("#queue .card")).to_have_count(1)
        await expect(page.locator("#map")).to_have_attribute("data-tps-count", "1")
        await expect(page.locator("#region-name")).to_have_text(LEBAK)

        # Clearing the region: every TPS of the token again.
        await page.click("#region-clear")
        await expect(page.locator("#region-crumb")).to_be_hidden()
        await expect(page.locator("#map")).to_have_attribute("data-tps-count", re.compile(r"^([6-9]|\d\d+)$"))

        # A region that does not exist: the reason, and back to the whole view.
        await page.goto(f"http://{hostport}/?view=detail&kabupaten=Kabupaten%20Atlantis")
        await expect(page.locator(".toast").first).to_contain_text("Atlantis", timeout=10_000)
        await expect(page.locator("#region-crumb")).to_be_hidden()
        await page.wait_for_selector('#conn[data-state="live"]', timeout=15_000)

    assert offline_page.foreign() == [] and offline_page.blocked == []
    assert offline_page.console_errors == []
