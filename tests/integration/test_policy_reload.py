"""A policy reload (`PUT /v1/admin/policy`, SPEC section 5: "a reload takes no restart") changes
what happens to the next incident, and every incident records the policy version that decided it.

Driven on a ManualClock: a shorter local window makes the next incident leave the TPS sooner, a
new stakeholder list tells a new stakeholder, a shorter acknowledgement timeout sets a nearer
deadline; a refused policy changes nothing; a version stored by another dispatch instance reaches
this one without a restart.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.dispatch.policy import PolicyStore
from siaga.clock import ManualClock
from tests.integration.operator_helpers import Tap, act, clocked_rig, get_incident, own_tps, report, tick, z
from tests.security import Rig

NOW = datetime(2024, 11, 27, 10, 0, tzinfo=UTC)
EQUIPMENT = {"category": "equipment", "description": "genset mati, TPS gelap"}
OWN_TPS = own_tps("PR", "Kebijakan", 6)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    async with clocked_rig(tmp_path, NOW, OWN_TPS) as opened:
        yield opened


async def policy(rig: Rig) -> tuple[int, dict[str, Any]]:
    doc = (await rig.admin("GET", "/v1/admin/policy")).json()
    return int(doc["version"]), dict(doc["policy"])


async def test_a_reload_changes_the_window_and_stakeholders_of_the_next_incident(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    v1, doc = await policy(r)
    async with Tap(r) as alerts:
        old = await report(r, token, "PR1", **EQUIPMENT)
        escalated_old = await report(r, token, "PR2", **EQUIPMENT)
        await act(r, escalated_old, "escalate")
        assert [a for a in await alerts.of(escalated_old) if a["audience"] == "stakeholder"] == [], (
            "the default policy tells no stakeholder of an equipment failure"
        )

        changed = copy.deepcopy(doc)
        changed["local_window_minutes"]["low"] = 2
        changed["stakeholders"]["equipment"] = ["bawaslu"]
        put = await r.admin("PUT", "/v1/admin/policy", json=changed)
        v2 = put.json()["version"]
        assert v2 == v1 + 1
        assert await policy(r) == (v2, changed)

        new = await report(r, token, "PR3", **EQUIPMENT)
        opened = await get_incident(r, new)
        assert opened["policy_version"] == v2
        assert opened["timeline"][0]["action"] == "opened"
        assert opened["timeline"][0]["detail"]["policy_version"] == v2
        assert opened["local_deadline"] == z(NOW + timedelta(minutes=2)), "the new 2-minute low window"
        kept = await get_incident(r, old)
        assert kept["policy_version"] == v1, "an incident keeps the version that decided it"
        assert kept["local_deadline"] == z(NOW + timedelta(minutes=30)), "its stored deadline stands"

        clock.advance(minutes=3)
        await tick(r)
        gone_up = await get_incident(r, new)
        assert (gone_up["status"], gone_up["level"]) == ("escalated", 1)
        told = [e for e in gone_up["timeline"] if e["action"] == "stakeholders_told"]
        assert [e["detail"]["stakeholders"] for e in told] == [["bawaslu"]]
        sent = await alerts.of(new)
        assert [(a["level"], a["audience"], a["stakeholder"]) for a in sent] == [
            (1, "police", None),
            (1, "stakeholder", "bawaslu"),
        ]
        assert all(a["incident"]["policy_version"] == v2 for a in sent)
        still = await get_incident(r, old)
        assert (still["status"], still["level"]) == ("open", 0), "three minutes is inside its 30-minute window"


async def test_a_yaml_reload_changes_the_acknowledgement_timeout(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    v1, doc = await policy(r)
    before = await report(r, token, "PR1", **EQUIPMENT)
    assert (await act(r, before, "escalate"))["ack_deadline"] == z(NOW + timedelta(minutes=5))

    doc["ack_timeout_minutes"] = {1: 1, 2: 1, 3: 1}
    body = yaml.safe_dump(doc).encode()
    put = await r.admin("PUT", "/v1/admin/policy", content=body, headers={"Content-Type": "application/yaml"})
    assert put.json()["version"] == v1 + 1

    after = await report(r, token, "PR2", **EQUIPMENT)
    doc_after = await act(r, after, "escalate")
    assert doc_after["ack_deadline"] == z(NOW + timedelta(minutes=1))
    clock.advance(seconds=90)
    await tick(r)
    assert (await get_incident(r, after))["level"] == 2, "unacknowledged past the new 1-minute timeout"
    assert (await get_incident(r, before))["level"] == 1, "the earlier deadline (5 minutes) has not come"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"stakeholders": {"equipment": ["polisi"]}}, "polisi"),
        ({"local_window_minutes": {"low": 30, "medium": 15}}, "high"),
        ({"local_window_minutes": {"low": 0, "medium": 15, "high": 5}}, "local_window_minutes"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
async def test_a_refused_policy_changes_nothing(
    rig: tuple[Rig, ManualClock, str], change: dict[str, Any], named: str
) -> None:
    r, _, token = rig
    v1, doc = await policy(r)
    refused = await r.client.put("/v1/admin/policy", json=doc | change, headers=r.headers("admin"))
    assert refused.status_code == 422, refused.text
    assert named in refused.text, "the refusal names what is wrong"
    assert await policy(r) == (v1, doc)
    iid = await report(r, token, "PR1", **EQUIPMENT)
    opened = await get_incident(r, iid)
    assert opened["policy_version"] == v1
    assert opened["local_deadline"] == z(NOW + timedelta(minutes=30))


async def test_a_version_stored_by_another_instance_takes_effect_without_a_restart(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, _, token = rig
    v1, doc = await policy(r)
    doc["local_window_minutes"]["low"] = 7
    # Another dispatch process shares the database: it stores the new version, this one reads it.
    other = await asyncio.to_thread(PolicyStore(r.ctx.engine).put, doc, by="another dispatch")
    assert other.version == v1 + 1
    dispatch = r.ctx.extras["dispatch"]
    await asyncio.sleep(dispatch.policies.refresh_s + 0.2)
    iid = await report(r, token, "PR1", **EQUIPMENT)
    opened = await get_incident(r, iid)
    assert opened["policy_version"] == other.version
    assert opened["local_deadline"] == z(NOW + timedelta(minutes=7))
