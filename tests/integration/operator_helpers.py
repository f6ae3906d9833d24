"""Helpers for the operator-effect tests: a tap on a bus topic, a forced deadline tick, polling.

They drive the composed dev app of `tests.security.running_rig` from the outside (its HTTP API)
and look at what it put on the in-process bus, the way a consumer downstream would.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from siaga import topics
from siaga.bus import ConsumerSource
from siaga.clock import ManualClock, iso
from tests.security import Rig, running_rig, tps_csv

NO_ALERT_CHANNEL: dict[str, Any] = {"telegram_bot_token": None, "telegram_chat_id": None, "webhook_url": None}
"""Rig settings with no alert channel: the notifier routes every intent to nobody, so nothing but
the test changes an incident (no delivery results land on the timeline behind its back)."""


def own_tps(prefix: str, kecamatan: str, n: int) -> list[dict[str, str]]:
    """n TPS rows, one per kecamatan: no three incidents of a category ever make an area incident."""
    return [
        {
            "tps_id": f"{prefix}{i}",
            "name": f"TPS {prefix}{i}",
            "kecamatan": f"{kecamatan}{i}",
            "desa": "Desa",
            "lat": "-6.2",
            "lon": "106.3",
            "rawan": "",
        }
        for i in range(1, n + 1)
    ]


@contextlib.asynccontextmanager
async def clocked_rig(
    tmp_path: Path, now: datetime, tps: list[dict[str, str]]
) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    """(rig on a manual clock at `now` with no alert channel, its clock, a device token for `tps`)."""
    clock = ManualClock(now)
    async with running_rig(tmp_path, clock=clock, with_incident=False, **NO_ALERT_CHANNEL) as r:
        await r.admin("POST", "/v1/admin/tps/import", content=tps_csv(tps), headers={"Content-Type": "text/csv"})
        _, token = await r.issue_device([t["tps_id"] for t in tps])
        yield r, clock, token


class Tap:
    """Everything published on one topic since the rig started: a broadcast reader from the start."""

    def __init__(self, rig: Rig, topic: str = topics.ALERTS) -> None:
        self.source: ConsumerSource = rig.ctx.bus.consumer([topic], None, broadcast=True)
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> Tap:
        await self.source.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.source.stop()

    async def read(self) -> list[dict[str, Any]]:
        """Everything seen so far (reads what is waiting, without blocking for more)."""
        while True:
            records = await self.source.fetch(1000, 0.01)
            if not records:
                return list(self.seen)
            self.seen.extend(orjson.loads(r.value) for r in records)

    async def of(self, incident_id: str) -> list[dict[str, Any]]:
        """The messages about one incident, in publishing order."""
        return [m for m in await self.read() if m.get("incident_id") == incident_id]


async def tick(rig: Rig) -> int:
    """Run one deadline check now (the rig's own ticker also runs; this makes the test deterministic)."""
    dispatch = rig.ctx.extras["dispatch"]
    n: int = await dispatch.transact(lambda e: e.tick())
    return n


async def get_incident(rig: Rig, incident_id: str, principal: str = "viewer") -> dict[str, Any]:
    r = await rig.client.get(f"/v1/incidents/{incident_id}", headers=rig.headers(principal))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def act(rig: Rig, incident_id: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An operator action that must succeed; checks that its answer is what a GET then returns."""
    r = await rig.client.post(f"/v1/incidents/{incident_id}/{action}", json=body, headers=rig.headers("operator"))
    assert r.status_code == 200, f"{action}: {r.status_code} {r.text}"
    answered: dict[str, Any] = r.json()
    assert answered == await get_incident(rig, incident_id), f"{action}: the answer differs from a later GET"
    return answered


async def report(rig: Rig, token: str, tps_id: str, **payload: Any) -> str:
    """Post one `incident.reported` (stamped by the rig's clock) and wait for dispatch's incident."""
    ev = rig.event(tps_id, payload=payload)
    r = await rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    return await rig.wait_for_incident(tps_id)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> bool:
    """Poll `check` until it holds or the time is up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


def z(when: datetime) -> str:
    """The RFC 3339 form the API answers with."""
    out = iso(when)
    assert out is not None
    return out


def roster_csv(rows: Sequence[tuple[str, ...]]) -> bytes:
    """A roster import (personnel_id, name, unit, role, tps_ids) of these rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["personnel_id", "name", "unit", "role", "tps_ids"])
    w.writerows(rows)
    return buf.getvalue().encode()
