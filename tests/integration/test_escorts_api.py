"""Ballot-box escorts through the composed dev app (SPEC section 9): a field device posts the
departure and the arrival; a late escort opens `escort_overdue`, its arrival closes it, the
timeline keeps the custody chain, and the dashboard's TPS frames carry the boxes in transit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from siaga import topics
from siaga.clock import ManualClock
from tests.integration.operator_helpers import Tap, clocked_rig, eventually, get_incident, own_tps, tick
from tests.security import Rig

NOW = datetime(2024, 11, 27, 19, 0, tzinfo=UTC)
TPS = own_tps("EK", "Kawal", 2)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    async with clocked_rig(tmp_path, NOW, TPS) as opened:
        yield opened


async def post(rig: Rig, token: str, tps_id: str, type_: str, payload: dict[str, Any]) -> Any:
    ev = rig.event(tps_id, type=type_, payload=payload)
    return await rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {token}"})


async def test_bad_escorts_are_422_naming_the_field(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    good = {"box_ids": ["PPWP-1"], "to": "PPK Kawal", "personnel_ids": ["POL-1"], "expected_minutes": 25}
    for field, bad in (
        ("payload.box_ids", good | {"box_ids": []}),
        ("payload.expected_minutes", good | {"expected_minutes": -10}),
        ("payload.to", {k: v for k, v in good.items() if k != "to"}),
    ):
        res = await post(r, token, "EK1", "escort.departed", bad)
        assert res.status_code == 422, res.text
        assert res.json()["detail"][0]["field"] == field, (field, res.text)
    res = await post(r, token, "EK1", "escort.departed", good | {"from_tps": "EK2"})
    assert res.status_code == 422 and "from_tps" in res.text, res.text
    res = await post(r, token, "EK1", "escort.arrived", {"box_ids": [], "at": "PPK Kawal"})
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "payload.box_ids"


async def test_a_late_escort_opens_escort_overdue_and_its_arrival_closes_it(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    boxes = ["PPWP-EK1", "DPR-EK1", "DPD-EK1"]
    async with Tap(r, topics.INCIDENT_UPDATES) as updates:
        res = await post(
            r,
            token,
            "EK1",
            "escort.departed",
            {"box_ids": boxes, "to": "PPK Kawal", "personnel_ids": ["POL-1", "LIN-1"], "expected_minutes": 30},
        )
        assert res.status_code == 202, res.text

        async def in_transit() -> bool:
            frames = [u for u in await updates.read() if u.get("type") == "tps" and u["tps"]["tps_id"] == "EK1"]
            return bool(frames) and [e["box_ids"] for e in frames[-1]["tps"].get("escorts", [])] == [boxes]

        assert await eventually(in_transit), "the dashboard's TPS frame carries the boxes in transit"

    clock.advance(minutes=46)  # 30 expected + 15 grace
    await tick(r)
    iid = await r.wait_for_incident("EK1")
    inc = await get_incident(r, iid)
    assert (inc["category"], inc["severity"], inc["status"]) == ("escort_overdue", "high", "open")
    departed = next(e for e in inc["timeline"] if e["action"] == "escort_departed")
    assert departed["detail"]["box_ids"] == boxes and departed["detail"]["personnel_ids"] == ["POL-1", "LIN-1"]
    assert departed["detail"]["to"] == "PPK Kawal" and departed["detail"]["from_tps"] == "EK1"

    res = await post(
        r, token, "EK1", "escort.arrived", {"box_ids": boxes, "at": "PPK Kawal", "personnel_ids": ["PPK-1"]}
    )
    assert res.status_code == 202, res.text

    async def closed() -> bool:
        return (await get_incident(r, iid))["status"] == "resolved"

    assert await eventually(closed), "the arrival resolved the escort_overdue incident"
    done = await get_incident(r, iid)
    entry = next(e for e in done["timeline"] if e["action"] == "escort_arrived")
    assert entry["detail"]["at"] == "PPK Kawal" and entry["detail"]["late_minutes"] == pytest.approx(16.0)
