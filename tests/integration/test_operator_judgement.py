"""Operator judgement (SPEC section 5): corrections re-run the policy, are kept as labelled examples,
and reports taken at the command post go the field report's way.

The composed dev app on a ManualClock with no alert channel (`operator_helpers.clocked_rig`), so only
the test and the clock change an incident. Effects are checked through the API and on siaga.alerts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scripts.corrections_to_tests import cases_from
from siaga.clock import ManualClock
from tests.integration.operator_helpers import Tap, act, clocked_rig, get_incident, own_tps, report, tick, z
from tests.security import Rig

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
OPERATOR = "operator:sec-operator"
EQUIPMENT = {"category": "equipment", "description": "HT rusak, tidak bisa menghubungi Polsek"}
FLOOD = {"category": "flood", "description": "air masuk ke TPS, kotak suara dipindah"}
OWN_TPS = own_tps("JD", "Judgement", 8)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    async with clocked_rig(tmp_path, NOW, OWN_TPS) as opened:
        yield opened


def classified(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc["timeline"] if e["action"] == "classified"]


def stakeholders(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(a["stakeholder"] for a in alerts if a["audience"] == "stakeholder")


def police(alerts: list[dict[str, Any]]) -> list[int]:
    return [a["level"] for a in alerts if a["audience"] == "police"]


async def test_a_higher_severity_acts_at_once_and_the_new_categorys_stakeholders_are_told(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        iid = await report(r, token, "JD1", **EQUIPMENT)
        assert (await get_incident(r, iid))["local_deadline"] == z(NOW + timedelta(minutes=30))
        clock.advance(minutes=2)
        doc = await act(r, iid, "classify", {"category": "fire", "reason": "genset terbakar, bukan rusak"})
        assert (doc["category"], doc["severity"], doc["level"]) == ("fire", "high", 0), "fire's base, from the facts"
        entry = classified(doc)[-1]
        assert (entry["actor"], entry["at"]) == (OPERATOR, z(clock.now()))
        assert entry["detail"]["from"] == {"category": "equipment", "severity": "low"}
        assert entry["detail"]["to"] == {"category": "fire", "severity": "high"}
        assert entry["detail"]["reason"] == "genset terbakar, bukan rusak" and entry["detail"]["override"] is False
        assert doc["local_deadline"] == z(NOW + timedelta(minutes=5)), "the high window, from the first report"
        assert stakeholders(await alerts.of(iid)) == ["bpbd", "kpu"], "high: fire's stakeholders at once"
        assert police(await alerts.of(iid)) == []

        clock.advance(minutes=1)
        doc = await act(r, iid, "classify", {"severity": "critical", "reason": "api menjalar ke rumah warga"})
        assert (doc["severity"], doc["level"], doc["status"]) == ("critical", 2, "escalated"), "critical: level 2"
        assert police(await alerts.of(iid)) == [1, 2]
        assert stakeholders(await alerts.of(iid)) == ["bpbd", "kpu"], "told once"


async def test_a_lower_severity_resets_a_pending_window_and_is_an_override_below_the_facts(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        iid = await report(r, token, "JD2", **FLOOD)
        assert (await get_incident(r, iid))["local_deadline"] == z(NOW + timedelta(minutes=15))
        clock.advance(minutes=3)
        doc = await act(r, iid, "classify", {"severity": "low", "reason": "hanya genangan kecil, sudah surut"})
        assert (doc["severity"], doc["level"]) == ("low", 0)
        assert doc["local_deadline"] == z(NOW + timedelta(minutes=30)), "the low window replaces the medium one"
        entry = classified(doc)[-1]["detail"]
        assert entry["override"] is True and entry["facts_demand"] == "medium", "flood's base is medium"

        clock.advance(minutes=14)  # past the old 15-minute deadline, inside the new one
        await tick(r)
        assert (await get_incident(r, iid))["level"] == 0, "the old window no longer acts"
        assert await alerts.of(iid) == []
        clock.advance(minutes=14)
        await tick(r)
        assert (await get_incident(r, iid))["level"] == 1, "the new window does"


async def test_a_lower_severity_never_lowers_the_level_and_a_new_category_tells_only_new_stakeholders(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, _, token = rig
    async with Tap(r) as alerts:
        iid = await report(r, token, "JD3", **FLOOD)
        await act(r, iid, "escalate")
        await act(r, iid, "escalate")
        assert stakeholders(await alerts.of(iid)) == ["bpbd", "kpu"]
        doc = await act(
            r, iid, "classify", {"category": "logistics", "severity": "low", "reason": "kotak suara basah saja"}
        )
        assert (doc["category"], doc["severity"], doc["level"], doc["status"]) == ("logistics", "low", 2, "escalated")
        assert stakeholders(await alerts.of(iid)) == ["bpbd", "kpu"], "KPU knew already; nobody new for logistics"
        doc = await act(r, iid, "classify", {"category": "money_politics", "reason": "ternyata bagi-bagi amplop"})
        assert doc["level"] == 2
        assert stakeholders(await alerts.of(iid)) == ["bawaslu", "bpbd", "kpu"], "Bawaslu is new: told"
        told = [e for e in doc["timeline"] if e["action"] == "stakeholders_told"][-1]
        assert told["detail"] == {"stakeholders": ["bawaslu"], "why": "category corrected to money_politics"}


async def test_bad_corrections_name_the_field_and_change_nothing(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    iid = await report(r, token, "JD4", **EQUIPMENT)
    before = await get_incident(r, iid)
    url = f"/v1/incidents/{iid}/classify"
    for body, field in [
        ({"category": "banjir", "reason": "x"}, "category"),
        ({"severity": "extreme", "reason": "x"}, "severity"),
        ({"category": "silent_post", "reason": "x"}, "category"),
        ({"severity": "high", "reason": "  "}, "reason"),
        ({"severity": "high"}, "reason"),
        ({"reason": "neither"}, "category"),
    ]:
        got = await r.client.post(url, json=body, headers=r.headers("operator"))
        assert got.status_code == 422, (body, got.text)
        assert field in [p["field"] for p in got.json()["detail"]], (body, got.text)
    viewer = await r.client.post(url, json={"severity": "high", "reason": "x"}, headers=r.headers("viewer"))
    assert viewer.status_code == 403
    missing = await r.client.post(
        "/v1/incidents/INC-NOPE/classify", json={"severity": "high", "reason": "x"}, headers=r.headers("operator")
    )
    assert missing.status_code == 404
    assert await get_incident(r, iid) == before
    await act(r, iid, "resolve", {"resolution": "HT diganti"})
    resolved = await r.client.post(url, json={"severity": "high", "reason": "x"}, headers=r.headers("operator"))
    assert resolved.status_code == 409, resolved.text


async def test_corrections_are_exported_and_become_test_cases(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    iid = await report(r, token, "JD5", category="other", description="HT mati total, genset juga mati")
    opened = await get_incident(r, iid)
    await act(r, iid, "classify", {"category": "equipment", "severity": "medium", "reason": "alat rusak semua"})
    clock.advance(minutes=1)
    await act(r, iid, "classify", {"severity": "low", "reason": "genset sudah menyala"})
    other = await report(r, token, "JD6", **FLOOD)
    await act(r, other, "classify", {"severity": "low", "reason": "genangan kecil"})

    refused = await r.client.get("/v1/admin/corrections", headers=r.headers("operator"))
    assert refused.status_code == 403
    got = await r.client.get("/v1/admin/corrections", headers=r.headers("admin"))
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in got.text.splitlines()]
    assert [(c["incident_id"], c["operator"]["severity"]) for c in lines] == [
        (iid, "medium"),
        (iid, "low"),
        (other, "low"),
    ]
    first, second = lines[0], lines[1]
    assert first["text"] == "HT mati total, genset juga mati" and first["who"] == OPERATOR
    assert first["classifier"]["category"] == opened["category"] and first["classifier"]["why"] == opened["why"]
    assert second["classifier"] == first["classifier"], "what the classifier said, not the first correction"
    assert second["before"]["severity"] == "medium" and second["at"] == z(clock.now())
    assert lines[2]["override"] is True and set(lines[2]["payload"]) >= {"injuries", "weapons", "crowd_size"}

    cases = cases_from(got.text.splitlines())
    assert cases == [
        {"description": "HT mati total, genset juga mati", "payload": {}, "rawan": [], "expect": [["equipment", "low"]]}
    ], "one case per incident, the newest correction; the override left out"
    assert len(cases_from(got.text.splitlines(), with_overrides=True)) == 2


async def test_a_command_post_report_is_classified_escalated_and_merged_like_a_field_report(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    headers = r.headers("operator")
    async with Tap(r) as alerts:
        body = {"tps_id": "JD7", "description": "lapor via HT: perkelahian, pelaku bawa celurit", "injuries": 2}
        got = await r.client.post("/v1/incidents", json=body, headers=headers)
        assert got.status_code == 201, got.text
        doc = got.json()
        assert doc == await get_incident(r, doc["id"])
        assert (doc["source"], doc["tps_id"], doc["category"], doc["severity"]) == (
            "command_post",
            "JD7",
            "violence",
            "critical",
        )
        assert (doc["level"], doc["status"], doc["opened_at"]) == (2, "escalated", z(NOW))
        opened = doc["timeline"][0]
        assert (opened["actor"], opened["action"]) == (OPERATOR, "opened")
        assert police(await alerts.of(doc["id"])) == [1, 2]

        clock.advance(minutes=2)
        again = {"tps_id": "JD7", "description": "susulan", "category": "violence", "injuries": 3, "weapons": True}
        merged = await r.client.post("/v1/incidents", json=again, headers=headers)
        assert merged.status_code == 201, merged.text
        assert (merged.json()["id"], merged.json()["reports"]) == (doc["id"], 2), "merged into the open incident"
        assert merged.json()["timeline"][-1]["actor"] == OPERATOR

        earlier = (NOW - timedelta(minutes=20)).isoformat()
        low = {"tps_id": "JD8", "description": "HT rusak", "category": "equipment", "occurred_at": earlier}
        eq = (await r.client.post("/v1/incidents", json=low, headers=headers)).json()
        assert (eq["severity"], eq["level"], eq["local_deadline"]) == ("low", 0, z(NOW + timedelta(minutes=10)))

    field = await get_incident(r, await report(r, token, "JD1", **EQUIPMENT))
    assert field["source"] == "field"
    for bad, name in [
        ({"tps_id": "NOPE", "description": "x"}, "tps_id"),
        ({"tps_id": "JD1\u0000", "description": "x"}, "tps_id"),
        ({"tps_id": "JD1", "description": ""}, "description"),
        ({"tps_id": "JD1", "description": "x", "category": "banjir"}, "category"),
        ({"tps_id": "JD1", "description": "x", "occurred_at": (NOW + timedelta(hours=1)).isoformat()}, "occurred_at"),
    ]:
        refused = await r.client.post("/v1/incidents", json=bad, headers=headers)
        assert refused.status_code == 422, (bad, refused.text)
        assert name in [p["field"] for p in refused.json()["detail"]], refused.text
    viewer = await r.client.post(
        "/v1/incidents", json={"tps_id": "JD1", "description": "x"}, headers=r.headers("viewer")
    )
    assert viewer.status_code == 403
