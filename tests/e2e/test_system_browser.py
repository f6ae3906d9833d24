"""The command-center page in Debian's headless chromium against the whole running system.

Once as `siaga dev --no-demo` (one process, one origin) and once as dispatch, ingest and dashboard
on the real Kafka broker (three processes: the page comes from the dashboard, the operator API
from dispatch on another origin, allowed by CORS). A device reports over HTTP; the page shows it
on the map and in the feed; the operator acknowledges it from the queue; dispatch's API and an
independent WebSocket client agree. Every request the page makes outside 127.0.0.1 is refused
and must never have been attempted.

Waits use Playwright's `expect` and `wait_for_selector`, not `wait_for_function`: the page's
Content-Security-Policy forbids eval.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from playwright.async_api import Page, expect

from tests.plugins.browser import OfflinePage
from tests.plugins.system import SystemProcs, free_port, tps_rows

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TPS_COUNT = 6
TPS_IDS = [f"T{i:04d}" for i in range(TPS_COUNT)]
WS_WAIT_S = 20.0
SYSTEMS = [pytest.param("embedded", id="embedded"), pytest.param("kafka", id="kafka", marks=pytest.mark.kafka)]


def _start(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> SystemProcs:
    if kind == "embedded":
        sysm = SystemProcs(tmp_path, kafka=None)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        # The ports are chosen first: the dashboard must name dispatch's URL to the page, and
        # dispatch must allow the dashboard's origin.
        dispatch_port, dashboard_port = free_port(), free_port()
        sysm = SystemProcs(
            tmp_path,
            kafka=bootstrap,
            env={
                "SIAGA_DISPATCH_URL": f"http://127.0.0.1:{dispatch_port}",
                "SIAGA_CORS_ORIGINS": f"http://127.0.0.1:{dashboard_port}",
            },
        )
        sysm.ports.update(dispatch=dispatch_port, dashboard=dashboard_port)
    sysm.start()
    return sysm


@pytest.fixture(params=SYSTEMS)
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SystemProcs]:
    """The running system, embedded or on Kafka, with a few TPS imported."""
    sysm = _start(tmp_path, request.param, request)
    try:
        sysm.import_tps(tps_rows(TPS_COUNT))
        yield sysm
    finally:
        sysm.stop()


@pytest.fixture
def kafka_only_system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SystemProcs]:
    """The three services on Kafka (the dashboard can go away while dispatch stays)."""
    sysm = _start(tmp_path, "kafka", request)
    try:
        sysm.import_tps(tps_rows(TPS_COUNT))
        yield sysm
    finally:
        sysm.stop()


def _critical_report(tps_id: str) -> dict[str, Any]:
    """A clash with sharp weapons and wounded: critical, straight to level 2 and the queue."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": tps_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {
            "category": "violence",
            "description": "Bentrok pendukung, dua orang luka kena sajam",
            "weapons": True,
            "injuries": 2,
        },
    }


async def _report(sysm: SystemProcs, device: str, tps_id: str) -> str:
    """Post a critical report to ingest as the device; returns the incident id dispatch gave it."""
    event = _critical_report(tps_id)
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            sysm.urls["ingest"] + "/v1/events", json=event, headers={"Authorization": f"Bearer {device}"}
        )
    assert r.status_code == 202, r.text
    admin = sysm.admin
    found = await asyncio.to_thread(sysm.wait_for, admin, lambda i: i["tps_id"] == tps_id, 30.0)
    assert len(found) == 1, f"dispatch did not open one incident for {tps_id}: {found}"
    return str(found[0]["id"])


async def _open_as(page: Page, sysm: SystemProcs, token: str) -> None:
    """Open the page with a token in its URL and wait until it is live with every TPS drawn."""
    await page.goto(f"{sysm.urls['dashboard']}/?token={token}")
    await page.wait_for_selector(f'#map[data-tps-count="{TPS_COUNT}"]', timeout=20_000)
    await page.wait_for_selector('#conn[data-state="live"]', timeout=20_000)
    assert "token=" not in page.url


async def _check_preflight(dispatch: str, origin: str, incident_id: str) -> None:
    """Dispatch answers the browser's CORS preflight for the page's origin.

    Checked by hand because a page whose requests Playwright routes does not show it: Chromium
    sends the POST without a preflight then, and only the missing Allow-Origin on the answer shows.
    """
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.options(
            f"{dispatch}/v1/incidents/{incident_id}/ack",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
    assert r.status_code == 200, r.text
    assert r.headers.get("access-control-allow-origin") == origin
    allowed = {h.strip().lower() for h in r.headers.get("access-control-allow-headers", "").split(",")}
    assert {"authorization", "content-type"} <= allowed


async def _wait_ws(ws: Any, want: Any) -> dict[str, Any]:
    """Read frames from a dashboard WebSocket until `want(incident)` holds; returns that incident."""
    async with asyncio.timeout(WS_WAIT_S):
        while True:
            msg = json.loads(await ws.recv())
            frames = msg["messages"] if msg.get("type") == "batch" else [msg]
            for frame in frames:
                incidents = frame.get("incidents", []) if frame.get("type") == "snapshot" else [frame.get("incident")]
                for inc in incidents:
                    if inc and want(inc):
                        return dict(inc)


async def test_operator_acknowledges_from_the_page_and_the_state_changes_everywhere(
    system: SystemProcs, offline_page: OfflinePage
) -> None:
    sysm = system
    device = await asyncio.to_thread(sysm.device, TPS_IDS)
    operator = await asyncio.to_thread(sysm.token, "operator")
    viewer = await asyncio.to_thread(sysm.token, "viewer")
    page = offline_page.page

    # the map shows every imported TPS, all quiet
    await _open_as(page, sysm, operator)
    assert await page.get_attribute("#map", "data-state-normal") == str(TPS_COUNT)
    assert await page.get_attribute("#map", "data-state-escalated") == "0"
    await expect(page.locator("#kpi-tps")).to_have_text(str(TPS_COUNT))
    await expect(page.locator("#role")).to_have_text("Operator")

    # a device reports a critical clash at one TPS: it reaches the feed, the queue and the map
    where = TPS_IDS[2]
    incident_id = await _report(sysm, device, where)
    await page.wait_for_selector(f'#feed li:first-child[data-id="{incident_id}"]', timeout=20_000)
    card = page.locator(f'#queue .card[data-id="{incident_id}"]')
    await expect(card).to_have_attribute("data-status", "escalated")
    await expect(card).to_have_attribute("data-severity", "critical")
    await expect(page.locator("#map")).to_have_attribute("data-state-escalated", "1", timeout=20_000)
    await expect(page.locator("#map")).to_have_attribute("data-state-normal", str(TPS_COUNT - 1))
    await expect(page.locator("#kpi-escalated")).to_have_text("1", timeout=10_000)

    # a second, independent client is watching the same dashboard
    ws_url = sysm.urls["dashboard"].replace("http://", "ws://") + f"/ws?token={viewer}"
    async with websockets.connect(ws_url, max_size=2**26) as watcher:
        seen = await _wait_ws(watcher, lambda i: i["id"] == incident_id)
        assert seen["status"] == "escalated"

        # the operator acknowledges from the queue; the page changes when dispatch publishes it
        await card.locator('button[data-action="ack"]').click()
        await expect(card).to_have_attribute("data-status", "acknowledged", timeout=20_000)
        await expect(card.locator('button[data-action="ack"]')).to_have_count(0)
        await expect(card).to_contain_text("Diterima")
        # the page heard dispatch's answer too (a CORS refusal would leave only an error toast)
        await expect(page.locator("#toasts .toast:not(.error)")).to_contain_text(f"{incident_id} diterima")
        assert await page.locator("#toasts .toast.error").count() == 0
        # an acknowledged incident no longer counts as escalated on the map: its TPS is "open"
        await expect(page.locator("#map")).to_have_attribute("data-state-escalated", "0", timeout=20_000)
        await expect(page.locator("#map")).to_have_attribute("data-state-open", "1")
        feed_item = page.locator(f'#feed li[data-id="{incident_id}"]')
        await expect(feed_item).to_have_attribute("data-status", "acknowledged")

        # the other client gets the acknowledged incident too
        acked = await _wait_ws(watcher, lambda i: i["id"] == incident_id and i["status"] == "acknowledged")
        assert acked["level"] == seen["level"]

    # dispatch's operator API agrees, and its timeline names the operator
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(
            f"{sysm.urls['dispatch']}/v1/incidents/{incident_id}", headers={"Authorization": f"Bearer {viewer}"}
        )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "acknowledged"
    acks = [e for e in doc["timeline"] if e["action"] == "acknowledged"]
    assert [e["actor"] for e in acks] == ["operator:test-operator"]

    if sysm.urls["dispatch"] != sysm.urls["dashboard"]:
        await _check_preflight(sysm.urls["dispatch"], sysm.urls["dashboard"], incident_id)

    # a viewer on the same wall sees the queue but no action buttons
    await _open_as(page, sysm, viewer)
    await expect(page.locator("#role")).to_have_text("Penonton")
    await page.wait_for_selector(f'#queue .card[data-id="{incident_id}"][data-status="acknowledged"]')
    await page.wait_for_timeout(300)  # a few animation frames: the queue re-renders once the role is known
    assert await page.locator("#queue button[data-action]").count() == 0

    dashboard_origin = sysm.urls["dashboard"]
    assert offline_page.foreign() == [] and offline_page.blocked == []
    assert any(u.startswith(dashboard_origin.replace("http://", "ws://") + "/ws") for u in offline_page.attempted)
    assert offline_page.console_errors == []


@pytest.mark.kafka
async def test_page_shows_a_stalled_or_lost_dashboard_and_recovers(
    kafka_only_system: SystemProcs, offline_page: OfflinePage
) -> None:
    """Frozen dashboard: stale after the page's threshold (on Playwright's clock, not a real
    half-minute wait), live again when it thaws. Killed dashboard: disconnected at once, live again
    after the restart, with the picture intact."""
    sysm = kafka_only_system
    device = await asyncio.to_thread(sysm.device, TPS_IDS)
    operator = await asyncio.to_thread(sysm.token, "operator")
    page = offline_page.page
    await page.clock.install()
    await _open_as(page, sysm, operator)
    stale_after_s = await page.evaluate("JSON.parse(document.getElementById('siaga-config').textContent).staleAfterS")
    assert 0 < stale_after_s <= 60, f"the page waits {stale_after_s} s before it calls a silent connection stale"
    incident_id = await _report(sysm, device, TPS_IDS[0])
    await page.wait_for_selector(f'#queue .card[data-id="{incident_id}"]', timeout=20_000)

    # frozen: the socket stays open but says nothing; past the threshold the page says so
    dashboard = sysm.procs["dashboard"]
    os.killpg(dashboard.pid, signal.SIGSTOP)
    try:
        await page.clock.fast_forward(int((stale_after_s + 2) * 1000))
        await page.wait_for_selector('#conn[data-state="stale"]', timeout=5_000)
        assert await page.text_content("#conn-label") == "TERTUNDA"
    finally:
        os.killpg(dashboard.pid, signal.SIGCONT)
    await page.wait_for_selector('#conn[data-state="live"]', timeout=30_000)

    # killed: the connection drops and the page says it is reconnecting
    await asyncio.to_thread(sysm.kill, "dashboard")
    await page.wait_for_selector('#conn[data-state="offline"]', timeout=5_000)
    assert "menyambung ulang" in (await page.text_content("#conn-label") or "")
    # the page keeps what it had while the dashboard is away
    assert await page.locator(f'#queue .card[data-id="{incident_id}"]').count() == 1

    # back: a new hub (another seq range) answers the page's resume with a fresh snapshot
    await asyncio.to_thread(sysm.restart, "dashboard")
    await page.clock.run_for(35_000)  # the backoff has grown meanwhile: skip its wait
    await page.wait_for_selector('#conn[data-state="live"]', timeout=30_000)
    await page.wait_for_selector(f'#map[data-tps-count="{TPS_COUNT}"][data-state-escalated="1"]', timeout=20_000)
    await page.wait_for_selector(f'#queue .card[data-id="{incident_id}"][data-status="escalated"]')
    assert offline_page.foreign() == [] and offline_page.blocked == []
