"""Test doubles shared by unit, integration and end-to-end tests.

`providers.py` holds fake alert providers (real HTTP servers); here are the small in-process
ones: a sleep that moves a ManualClock, a recorder and incident actions that remember calls,
and a factory for alert intents.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from siaga.clock import ManualClock


class ClockSleep:
    """A `sleep` that moves a ManualClock instead of waiting, and remembers every delay asked for."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds=seconds)
        await asyncio.sleep(0)


class BlockingSleep:
    """A `sleep` that never returns (until cancelled): a notifier caught in the middle of a retry."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.entered.set()
        await asyncio.Event().wait()


@dataclass
class RecordingRecorder:
    """A DeliveryRecorder that keeps what it is told."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def delivery(
        self, incident_id: str, *, key: str, channel: str, recipient: str, outcome: str, detail: str
    ) -> None:
        self.calls.append(
            {
                "incident_id": incident_id,
                "key": key,
                "channel": channel,
                "recipient": recipient,
                "outcome": outcome,
                "detail": detail,
            }
        )

    def outcomes(self) -> list[tuple[str, str]]:
        return [(c["key"], c["outcome"]) for c in self.calls]


@dataclass
class RecordingActions:
    """IncidentActions over known incident ids (others raise LookupError; resolving twice, ValueError)."""

    known: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    async def acknowledge(self, incident_id: str, *, actor: str) -> None:
        if incident_id not in self.known:
            raise LookupError(incident_id)
        self.calls.append(("acknowledge", incident_id, actor, None))

    async def resolve(self, incident_id: str, *, actor: str, resolution: str) -> None:
        if incident_id not in self.known:
            raise LookupError(incident_id)
        if incident_id in self.resolved:
            raise ValueError("the incident is resolved")
        self.resolved.add(incident_id)
        self.calls.append(("resolve", incident_id, actor, resolution))


def public_incident(**overrides: Any) -> dict[str, Any]:
    """A public incident as GET /v1/incidents/{id} returns it (without the timeline)."""
    incident: dict[str, Any] = {
        "id": "INC-20241127-0001",
        "tps_id": "SRG-CKD-001",
        "tps_name": "TPS 001 Cikande",
        "kecamatan": "Cikande",
        "category": "violence",
        "severity": "high",
        "level": 2,
        "status": "escalated",
        "reports": 2,
        "opened_at": "2024-11-27T06:45:00Z",
        "received_at": "2024-11-27T06:45:05Z",
        "local_deadline": "2024-11-27T06:50:00Z",
        "ack_deadline": "2024-11-27T07:05:00Z",
        "why": ["category from device: violence", "injuries: at least high"],
        "facts": {"injuries": 2, "weapons": True, "crowd_size": None},
        "description": "Keributan antar pendukung, dua orang luka ringan",
        "parent_id": None,
        "children": [],
        "policy_version": 1,
        "updated_at": "2024-11-27T06:55:00Z",
        "resolved_at": None,
        "resolution": None,
        "last_alert_failure": None,
        "version": 4,
    }
    incident.update(overrides)
    return incident


def alert_intent(
    *, level: int = 2, audience: str = "police", stakeholder: str | None = None, reminder: int = 0, **incident: Any
) -> dict[str, Any]:
    """An alert intent as dispatch publishes it on siaga.alerts."""
    inc = public_incident(**incident)
    who = stakeholder if audience == "stakeholder" else "police"
    return {
        "alert_id": f"{inc['id']}:{level}:{who}:{reminder}",
        "incident_id": inc["id"],
        "level": level,
        "audience": audience,
        "stakeholder": stakeholder,
        "reminder": reminder,
        "reason": "critical",
        "created_at": "2024-11-27T07:00:00Z",
        "incident": inc,
    }


def intent_bytes(**kw: Any) -> bytes:
    return orjson.dumps(alert_intent(**kw))
