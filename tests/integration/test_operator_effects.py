"""The operator API's effects (SPEC section 5), not just its status codes.

Acknowledge, escalate, resolve and note change the incident (status, level, deadlines, version)
and its timeline; the answer of each action is what a later GET returns; an escalation puts the
alert for the new level on `siaga.alerts`; an acknowledgement stops the climb up the ladder and a
resolution inside the on-site window keeps the incident at the TPS with no alert at all.

The composed dev app runs in-process on a ManualClock (`tests.security.running_rig`), with no
alert channel configured, so only the test and the clock change an incident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from siaga.clock import ManualClock
from tests.integration.operator_helpers import Tap, act, clocked_rig, get_incident, own_tps, report, tick, z
from tests.security import Rig

NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
OPERATOR = "operator:sec-operator"  # the rig's operator token is named sec-operator
EQUIPMENT = {"category": "equipment", "description": "HT rusak, tidak bisa menghubungi Polsek"}
FLOOD = {"category": "flood", "description": "air masuk ke TPS, kotak suara dipindah"}
# One TPS per kecamatan: no three incidents of a category ever make an area incident here.
OWN_TPS = own_tps("OP", "Operasi", 8)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, str]]:
    """(rig, its clock, a device token for OP1..OP8)."""
    async with clocked_rig(tmp_path, NOW, OWN_TPS) as opened:
        yield opened


def last(doc: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = doc["timeline"][-1]
    return entry


def police(alerts: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """(level, reminder, reason) of the police-ladder alerts."""
    return [(a["level"], a["reminder"], a["reason"]) for a in alerts if a["audience"] == "police"]


async def test_escalate_climbs_one_level_sets_the_ack_deadline_and_alerts_the_new_level(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        iid = await report(r, token, "OP1", **EQUIPMENT)
        before = await get_incident(r, iid)
        assert (before["status"], before["level"], before["severity"]) == ("open", 0, "low")
        assert before["local_deadline"] == z(NOW + timedelta(minutes=30))
        assert await alerts.of(iid) == [], "a new low incident stays on site: no alert yet"

        versions = [before["version"]]
        for to_level in (1, 2, 3):
            clock.advance(minutes=1)
            doc = await act(r, iid, "escalate", {"note": f"naik ke {to_level}"})
            assert (doc["status"], doc["level"]) == ("escalated", to_level)
            assert doc["ack_deadline"] == z(clock.now() + timedelta(minutes=5)), "the level's ack timeout"
            assert doc["version"] == versions[-1] + 1
            versions.append(doc["version"])
            entry = last(doc)
            assert (entry["actor"], entry["action"], entry["at"]) == (OPERATOR, "escalated", z(clock.now()))
            assert entry["detail"]["from"] == to_level - 1 and entry["detail"]["to"] == to_level
            assert entry["detail"]["reason"] == "operator" and entry["detail"]["note"] == f"naik ke {to_level}"
            sent = await alerts.of(iid)
            assert police(sent)[-1] == (to_level, 0, "operator"), f"the alert for level {to_level}"
            assert sent[-1]["incident"]["level"] == to_level
            assert sent[-1]["incident"]["status"] == "escalated"

        # Level 3 is the top: escalating again is a reminder there, not a fourth level.
        clock.advance(minutes=1)
        doc = await act(r, iid, "escalate")
        assert (doc["status"], doc["level"]) == ("escalated", 3)
        assert doc["ack_deadline"] == z(clock.now() + timedelta(minutes=5)), "reminder_minutes"
        assert (last(doc)["actor"], last(doc)["action"], last(doc)["detail"]) == (
            OPERATOR,
            "reminder",
            {"level": 3, "reminder": 1},
        )
        assert police(await alerts.of(iid)) == [
            (1, 0, "operator"),
            (2, 0, "operator"),
            (3, 0, "operator"),
            (3, 1, "reminder"),
        ]
        assert [e["seq"] for e in doc["timeline"]] == list(range(1, len(doc["timeline"]) + 1))


async def test_escalating_off_site_tells_the_categorys_stakeholders(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, token = rig
    async with Tap(r) as alerts:
        iid = await report(r, token, "OP2", **FLOOD)
        opened = await get_incident(r, iid)
        assert (opened["category"], opened["severity"], opened["level"]) == ("flood", "medium", 0)
        assert await alerts.of(iid) == [], "a medium incident tells nobody while it is on site"

        doc = await act(r, iid, "escalate")
        assert doc["level"] == 1
        told = [e for e in doc["timeline"] if e["action"] == "stakeholders_told"]
        assert len(told) == 1 and sorted(told[0]["detail"]["stakeholders"]) == ["bpbd", "kpu"]
        sent = await alerts.of(iid)
        assert sorted(a["stakeholder"] for a in sent if a["audience"] == "stakeholder") == ["bpbd", "kpu"]
        assert police(sent) == [(1, 0, "operator")]

        await act(r, iid, "escalate")
        sent = await alerts.of(iid)
        assert len([a for a in sent if a["audience"] == "stakeholder"]) == 2, "stakeholders are told once"
        assert police(sent) == [(1, 0, "operator"), (2, 0, "operator")]


async def test_acknowledge_stops_the_climb_an_unacknowledged_incident_goes_on(
    rig: tuple[Rig, ManualClock, str],
) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        acked, ignored = await report(r, token, "OP3", **EQUIPMENT), await report(r, token, "OP4", **EQUIPMENT)
        for iid in (acked, ignored):
            await act(r, iid, "escalate")

        before = await get_incident(r, acked)
        clock.advance(minutes=2)
        doc = await act(r, acked, "ack")
        assert (doc["status"], doc["level"], doc["ack_deadline"]) == ("acknowledged", 1, None)
        assert doc["version"] == before["version"] + 1
        assert (last(doc)["actor"], last(doc)["action"], last(doc)["detail"], last(doc)["at"]) == (
            OPERATOR,
            "acknowledged",
            {"level": 1},
            z(clock.now()),
        )
        # Acknowledging again changes nothing.
        again = await act(r, acked, "ack")
        assert again["version"] == doc["version"] and len(again["timeline"]) == len(doc["timeline"])

        clock.advance(minutes=10)  # well past the 5-minute acknowledgement timeout of level 1
        await tick(r)
        still = await get_incident(r, acked)
        assert (still["status"], still["level"], still["version"]) == ("acknowledged", 1, doc["version"])
        climbed = await get_incident(r, ignored)
        assert (climbed["status"], climbed["level"]) == ("escalated", 2), "unacknowledged: up one level"
        assert last(climbed)["actor"] == "siaga" and last(climbed)["detail"]["reason"] == "ack_timeout"
        assert police(await alerts.of(acked)) == [(1, 0, "operator")]
        assert police(await alerts.of(ignored)) == [(1, 0, "operator"), (2, 0, "ack_timeout")]


async def test_resolving_inside_the_window_keeps_it_on_site_with_no_alert(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    async with Tap(r) as alerts:
        resolved, left = await report(r, token, "OP5", **EQUIPMENT), await report(r, token, "OP6", **EQUIPMENT)
        before = await get_incident(r, resolved)
        clock.advance(minutes=10)  # inside the 30-minute window of a low incident
        doc = await act(r, resolved, "resolve", {"resolution": "HT diganti dengan cadangan"})
        assert (doc["status"], doc["level"], doc["ack_deadline"]) == ("resolved", 0, None)
        assert doc["resolved_at"] == z(clock.now()) and doc["resolution"] == "HT diganti dengan cadangan"
        assert doc["version"] == before["version"] + 1
        entry = last(doc)
        assert (entry["actor"], entry["action"]) == (OPERATOR, "resolved")
        assert entry["detail"]["on_site"] is True and entry["detail"]["resolution"] == "HT diganti dengan cadangan"

        clock.advance(minutes=25)  # past both windows
        await tick(r)
        after = await get_incident(r, resolved)
        assert (after["status"], after["level"], after["version"]) == ("resolved", 0, doc["version"])
        assert await alerts.of(resolved) == [], "resolved in the window: it never leaves the TPS"
        other = await get_incident(r, left)
        assert (other["status"], other["level"]) == ("escalated", 1), "the unresolved one went up at its deadline"
        assert police(await alerts.of(left)) == [(1, 0, "window_expired")]

        # A resolved incident can be neither acknowledged nor escalated; resolving again is a no-op.
        for action in ("ack", "escalate"):
            refused = await r.client.post(f"/v1/incidents/{resolved}/{action}", headers=r.headers("operator"))
            assert refused.status_code == 409, f"{action} on a resolved incident: {refused.text}"
        again = await act(r, resolved, "resolve", {"resolution": "lagi"})
        assert again["version"] == doc["version"] and again["resolution"] == "HT diganti dengan cadangan"
        assert await get_incident(r, resolved) == again


async def test_resolving_an_escalated_incident_records_it_was_not_on_site(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    iid = await report(r, token, "OP7", **EQUIPMENT)
    await act(r, iid, "escalate")
    clock.advance(minutes=3)
    doc = await act(r, iid, "resolve", {"resolution": "Polsek mengirim HT baru"})
    assert (doc["status"], doc["level"], doc["resolved_at"]) == ("resolved", 1, z(clock.now()))
    assert last(doc)["detail"]["on_site"] is False
    clock.advance(minutes=10)
    await tick(r)
    assert (await get_incident(r, iid))["version"] == doc["version"], "a resolved incident has no deadline left"


async def test_notes_go_on_the_timeline_and_change_nothing_else(rig: tuple[Rig, ManualClock, str]) -> None:
    r, clock, token = rig
    iid = await report(r, token, "OP8", **EQUIPMENT)
    before = await get_incident(r, iid)
    texts = ["Polsek sudah dihubungi lewat telepon", "HT cadangan dalam perjalanan"]
    for i, text in enumerate(texts, start=1):
        clock.advance(minutes=1)
        doc = await act(r, iid, "notes", {"text": text})
        assert doc["version"] == before["version"] + i
        assert (last(doc)["actor"], last(doc)["action"], last(doc)["at"]) == (OPERATOR, "note", z(clock.now()))
        assert last(doc)["detail"]["text"] == text
    unchanged = ("status", "level", "severity", "category", "local_deadline", "ack_deadline", "reports", "opened_at")
    assert {k: doc[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert [e["detail"]["text"] for e in doc["timeline"] if e["action"] == "note"] == texts
    assert doc["timeline"][: len(before["timeline"])] == before["timeline"], "the timeline only grows"

    empty = await r.client.post(f"/v1/incidents/{iid}/notes", json={"text": ""}, headers=r.headers("operator"))
    assert empty.status_code == 422
    assert (await get_incident(r, iid))["version"] == doc["version"]


async def test_an_action_on_an_unknown_incident_is_404(rig: tuple[Rig, ManualClock, str]) -> None:
    r, _, _ = rig
    for action in ("ack", "escalate", "resolve", "notes"):
        body = {"text": "catatan"} if action == "notes" else None
        got = await r.client.post(f"/v1/incidents/INC-NOSUCH/{action}", json=body, headers=r.headers("operator"))
        assert got.status_code == 404, f"{action}: {got.status_code} {got.text}"
        assert "INC-NOSUCH" in got.json()["detail"]
