"""Scheduled situation reports (SPEC section 10): the policy's `alerts.sitrep_times` send a short sitrep
to the recipients marked `sitrep: true`, once each, through the alert channels.

On the composed dev app on a ManualClock (the `day` of tests/integration/test_sitrep.py: three
incidents in kecamatan Laporan1..3), with a real webhook receiver and a Slack hook on loopback. The
scheduler's check is called directly (`sitrep_tick`): the clock, not a timer, decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from services.dispatch.notifier import Notifier
from siaga.clock import ManualClock
from siaga.contracts import SitrepDue
from siaga.models import AlertDelivery
from tests.fakes.providers import FakeSlack, FakeWebhook
from tests.integration.test_sitrep import day  # noqa: F401  (the fixture)
from tests.security import Rig

SECRET = "sitrep-hook-secret"
Day = tuple[Rig, ManualClock, dict[str, str]]


@pytest.fixture(scope="module")
def hook() -> Iterator[FakeWebhook]:
    with FakeWebhook(secret=SECRET) as fake:
        yield fake


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def scheduled(day: Day, hook: FakeWebhook, slack: FakeSlack) -> AsyncIterator[tuple[Day, Notifier]]:  # noqa: F811
    r = day[0]
    hook.reset()
    slack.reset()
    doc = (await r.admin("GET", "/v1/admin/policy")).json()["policy"]
    doc["alerts"] = {
        "sitrep_times": ["13:00", "10:00"],
        "recipients": [
            {"name": "bawaslu-hook", "channel": "webhook", "target": hook.hook_url, "secret": SECRET, "sitrep": True},
            {
                "name": "panwascam-laporan1",
                "channel": "webhook",
                "target": hook.hook_url,
                "secret": SECRET,
                "sitrep": True,
                "kecamatan": ["Laporan1"],
                "language": "en",
            },
            {"name": "polres-slack", "channel": "slack", "target": slack.hook_url, "sitrep": True},
            {"name": "police-only", "channel": "webhook", "target": hook.hook_url, "secret": SECRET, "levels": [1]},
        ],
    }
    await r.admin("PUT", "/v1/admin/policy", json=doc)
    notifier = r.ctx.extras["notifier"]
    assert isinstance(notifier, Notifier)
    yield day, notifier


def sitreps(hook: FakeWebhook) -> dict[str, dict[str, Any]]:
    """The sitrep posts the receiver took in, by recipient (each must come once)."""
    got: dict[str, dict[str, Any]] = {}
    for req in hook.delivered:
        body = req.json()
        if "sitrep" in body:
            assert body["recipient"] not in got, f"{body['recipient']} got the sitrep twice"
            got[body["recipient"]] = body
    return got


async def until(check: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (a receiver thread, not a task, makes it true)
            await asyncio.sleep(0.02)


async def test_the_sitrep_goes_out_at_its_time_to_its_recipients_once(
    scheduled: tuple[Day, Notifier], hook: FakeWebhook, slack: FakeSlack
) -> None:
    (r, clock, ids), notifier = scheduled
    assert await notifier.sitrep_tick() == [], "09:20 WIB: nothing due in the last half hour"
    clock.advance(minutes=40, seconds=30)  # 10:00:30 WIB
    due = await notifier.sitrep_tick()
    assert [d.sitrep_id for d in due] == ["2024-11-27T10:00+07:00"]
    await until(lambda: len(sitreps(hook)) == 2 and len(slack.delivered) == 1)

    got = sitreps(hook)
    assert set(got) == {"bawaslu-hook", "panwascam-laporan1"}, "not the police-only recipient"
    everyone = got["bawaslu-hook"]
    assert everyone["idempotency_key"] == "sitrep:2024-11-27T10:00+07:00/bawaslu-hook"
    assert everyone["sitrep"]["at"] == "2024-11-27T03:00:00Z" and everyone["sitrep"]["by"] == "kabupaten"
    assert everyone["text"].startswith("SITREP 10:00 WIB 27-11-2024 · semua wilayah")
    mine = everyone["sitrep"]["totals"]["incidents"]
    assert mine["by_status"]["resolved"] >= 1 and mine["total"] >= 3
    escalated = {e["id"] for e in everyone["sitrep"]["open_escalations"]}
    assert {ids["LP1"], ids["LP3"]} <= escalated
    assert "Eskalasi terlama:" in everyone["text"]

    local = got["panwascam-laporan1"]
    assert local["sitrep"]["scope"] == {"provinsi": [], "kabupaten": [], "kecamatan": ["Kabupaten Serang/Laporan1"]}
    assert local["sitrep"]["totals"]["incidents"]["total"] == 1, "only its kecamatan"
    assert local["text"].startswith("SITREP 10:00 WIB 27-11-2024 · Laporan1\nTPS: 1 (1 open)")

    blocks = slack.delivered[0].json()["blocks"]
    assert blocks[0]["text"]["text"].startswith("SITREP 10:00 WIB")

    # Nothing new is due; and the same sitrep published again (a second notifier's scheduler) is
    # answered by the delivery records, not sent twice.
    assert await notifier.sitrep_tick() == []
    again = SitrepDue(sitrep_id=due[0].sitrep_id, at=due[0].at)
    await r.ctx.bus.publish(again.TOPIC, again.bus_key(), again.to_bytes())
    await asyncio.sleep(0.5)
    assert len(sitreps(hook)) == 2 and len(slack.delivered) == 1
    with Session(r.ctx.engine) as s:
        rows = s.exec(select(AlertDelivery).where(col(AlertDelivery.audience) == "sitrep")).all()
    assert sorted((d.recipient, d.status) for d in rows) == [
        ("bawaslu-hook", "sent"),
        ("panwascam-laporan1", "sent"),
        ("polres-slack", "sent"),
    ]


async def test_a_sitrep_more_than_half_an_hour_late_is_skipped(
    scheduled: tuple[Day, Notifier], hook: FakeWebhook
) -> None:
    (r, clock, _), notifier = scheduled
    await notifier.sitrep_tick()  # 09:20
    clock.advance(hours=4, minutes=11)  # 13:31 WIB: the notifier slept through 10:00 and 13:00
    due = await notifier.sitrep_tick()
    assert [d.sitrep_id for d in due] == ["2024-11-27T10:00+07:00", "2024-11-27T13:00+07:00"]
    outcomes = [await notifier.send_sitrep(d) for d in due]
    assert outcomes == [[], []], "3.5 h and 31 min late: neither goes out"
    clock.set(clock.now() - timedelta(minutes=2))  # 13:29: the 13:00 one is within the half hour again
    await r.ctx.bus.publish(due[1].TOPIC, due[1].bus_key(), due[1].to_bytes())
    await until(lambda: "bawaslu-hook" in sitreps(hook))
    await asyncio.sleep(0.3)
    assert {b["idempotency_key"].split("/")[0] for b in sitreps(hook).values()} == {"sitrep:2024-11-27T13:00+07:00"}


async def test_sitrep_times_that_are_not_times_of_day_are_refused(scheduled: tuple[Day, Notifier]) -> None:
    (r, _, _), _ = scheduled
    doc = (await r.admin("GET", "/v1/admin/policy")).json()["policy"]
    doc["alerts"]["sitrep_times"] = ["10:00", "25:00"]
    refused = await r.client.put("/v1/admin/policy", json=doc, headers=r.headers("admin"))
    assert refused.status_code == 422 and "25:00" in refused.text, refused.text
