"""What every rule shares: the store, the policy, the clock; incidents and TPS announced once a batch.

No HTTP, Kafka or SQL here, and no wall clock (SPEC section 5; see services/dispatch/engine.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.dispatch.classify import Classifier, Facts
from services.dispatch.domain import Incident, Tps
from services.dispatch.notifier.messages import load_templates
from services.dispatch.policy import EscalationPolicy
from services.dispatch.store import CHECKIN_FRESH as CHECKIN_FRESH  # re-exported: the rules use it
from services.dispatch.store import Store, coverage
from siaga import sms_grammar as grammar
from siaga.clock import Clock, as_utc
from siaga.contracts import (
    EscortPublic,
    FieldReply,
    IncidentChanged,
    IncidentPublic,
    IncidentSource,
    IncidentStatus,
    TpsChanged,
    TpsPublic,
    TpsState,
)
from siaga.events import (
    Category,
    FieldEvent,
    Phase,
    ReplyTo,
    Severity,
)

SYSTEM = "siaga"
LEVEL_NAMES = {0: "on site", 1: "Polsek", 2: "Polres command center", 3: "Polda/Brimob"}


class UnknownReport(LookupError):
    """A follow-up event names a report that dispatch never saw (it goes to dead-letter)."""


class UnknownTps(LookupError):
    """An event for a TPS that is not in the registry (it goes to dead-letter)."""


class NotAllowed(ValueError):
    """An operator action that the incident's state does not allow (answered 409)."""


@dataclass(frozen=True)
class Received:
    """A field event with what ingest knew about it."""

    event: FieldEvent
    device_id: str
    received_at: datetime
    channel: str = "field"  # field | sms | whatsapp: a new incident's `source`
    reply_to: ReplyTo | None = None  # an SMS or WhatsApp sender, told what became of a report


def reply_id(*parts: str) -> str:
    """A confirmation's id, from what it answers: a redelivered event or command is one SMS."""
    return "reply-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _short_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12].upper()
    return f"{prefix}-{digest}"


def _utc(when: datetime | None) -> datetime | None:
    return None if when is None else as_utc(when)  # SQLite hands back naive UTC


def incident_public(inc: Incident, tps: Tps | None = None) -> IncidentPublic:
    """The incident as the API, the bus and the dashboard show it (without the timeline)."""
    return IncidentPublic(
        id=inc.id,
        tps_id=inc.tps_id,
        tps_name=tps.name if tps else None,
        kecamatan=inc.kecamatan,
        kabupaten=inc.kabupaten,
        provinsi=inc.provinsi,
        category=Category(inc.category),
        severity=Severity(inc.severity),
        level=inc.level,
        status=IncidentStatus(inc.status),
        reports=inc.reports,
        opened_at=as_utc(inc.opened_at),
        received_at=_utc(inc.received_at),
        local_deadline=_utc(inc.local_deadline),
        ack_deadline=_utc(inc.ack_deadline),
        why=list(inc.why or []),
        facts=dict(inc.facts or {}),
        description=inc.description,
        parent_id=inc.parent_id,
        children=list(inc.children or []),
        policy_version=inc.policy_version,
        updated_at=_utc(inc.updated_at),
        resolved_at=_utc(inc.resolved_at),
        resolution=inc.resolution,
        last_alert_failure=inc.last_alert_failure,
        source=IncidentSource(inc.source or "field"),
        orders=[{k: v for k, v in o.items() if k != "due_at"} for o in inc.orders or ()],
        code=inc.code,
        held_alerts=len(inc.held_alerts or ()),
        silenced_by=sorted({h["silence_id"] for h in inc.held_alerts or ()}),
        version=inc.version,
    )


def public_incident(inc: Incident, tps: Tps | None = None) -> dict[str, Any]:
    """`incident_public` as JSON-ready data, for the API's answers."""
    return incident_public(inc, tps).model_dump(mode="json")


def _facts_of(inc: Incident) -> Facts:
    f = inc.facts or {}
    return Facts(
        injuries=int(f.get("injuries", 0)),
        deaths=int(f.get("deaths", 0)),
        weapons=bool(f.get("weapons", False)),
        crowd_size=int(f.get("crowd_size", 0)),
        deliberate_fire=bool(f.get("deliberate_fire", False)),
    )


def _facts_dict(f: Facts) -> dict[str, Any]:
    return {
        "injuries": f.injuries,
        "deaths": f.deaths,
        "weapons": f.weapons,
        "crowd_size": f.crowd_size,
        "deliberate_fire": f.deliberate_fire,
    }


class RuleBase:
    """The engine's state and the helpers every rule uses."""

    def __init__(self, store: Store, policy: EscalationPolicy, classifier: Classifier, clock: Clock) -> None:
        self.store, self.policy, self.classifier, self.clock = store, policy, classifier, clock
        # Announced once per transaction, in their final state, by finish(): an area incident that
        # adopts a hundred reports in one batch is one update, not a hundred (each built and dropped).
        self._dirty_incidents: dict[str, Incident] = {}
        self._dirty_tps: dict[str, Tps] = {}

    def _incident_for(self, report_id: str) -> Incident:
        inc = self.store.incident_for_report(report_id)
        if inc is None:
            raise UnknownReport(f"no incident for report {report_id!r}")
        return inc

    def _get(self, incident_id: str) -> Incident:
        inc = self.store.incident(incident_id)
        if inc is None:
            raise KeyError(incident_id)
        return inc

    # ------------------------------------------------------------------ announcing
    def _timeline(self, inc: Incident, actor: str, action: str, detail: dict[str, Any]) -> None:
        self.store.timeline(inc, at=self.clock.now(), actor=actor, action=action, detail=detail)

    def _tps_of(self, inc: Incident) -> Tps | None:
        return self.store.tps(inc.tps_id) if inc.tps_id else None

    def _changed(self, inc: Incident, tps: Tps | None = None) -> None:
        inc.version += 1
        inc.updated_at = self.clock.now()
        self.store.save_incident(inc)
        self._dirty_incidents[inc.id] = inc
        tps = tps or self._tps_of(inc)
        if tps is not None:
            self._tps_changed(tps)

    def reply(self, to: ReplyTo, about: str, key: str, inc: Incident | None = None, **values: str) -> None:
        """Tell the sender of an SMS or WhatsApp message what came of it (siaga.replies), in Indonesian:
        the reply `key` of siaga/sms_replies.yaml, filled with the incident's code, TPS, category,
        severity and level. `about` is the event or command id it answers."""
        if inc is not None:
            labels = load_templates("id").labels
            tps = self._tps_of(inc)
            values = {
                "code": inc.code or "-",
                "tps": tps.name if tps else f"Kec. {inc.kecamatan}",
                "category": labels.category.get(inc.category, inc.category),
                "severity": labels.severity.get(inc.severity, inc.severity),
                "level": labels.level.get(inc.level, str(inc.level)),
                "reports": str(inc.reports),
            } | values
        self.store.emit(
            FieldReply(
                reply_id=reply_id(about, key),
                to=to,
                text=grammar.reply(key, **values),
                incident_id=inc.id if inc else None,
                created_at=self.clock.now(),
            )
        )

    def refresh_tps(self, tps_ids: Sequence[str]) -> None:
        """The registry changed these TPS (an import): take their new registry rows and announce them."""
        for tps in self.store.reload_tps(tps_ids):
            self._tps_changed(tps)

    def announce_tps(self, tps: Tps) -> None:
        """Store a registry change of a TPS and announce it to the dashboards."""
        self._tps_changed(tps)

    def _tps_changed(self, tps: Tps) -> None:
        if tps.tps_id not in self._dirty_tps:  # finish() saves it again, in its final state
            self.store.save_tps(tps)
        self._dirty_tps[tps.tps_id] = tps

    def finish(self) -> None:
        """Announce each incident and TPS that changed, once, with its final state (call before the commit)."""
        for inc in self._dirty_incidents.values():
            self.store.emit(IncidentChanged(incident=incident_public(inc, self._tps_of(inc))))
        self._dirty_incidents.clear()
        if not self._dirty_tps:
            return
        now = self.clock.now()
        open_by_tps = self.store.open_at_many(list(self._dirty_tps))
        for tps in self._dirty_tps.values():
            tps.version = (tps.version or 0) + 1
            self.store.save_tps(tps)
            self.store.emit(TpsChanged(tps=tps_public(tps, open_by_tps[tps.tps_id], now)))
        self._dirty_tps.clear()


def tps_state(tps: Tps, open_incidents: list[Incident]) -> TpsState:
    """normal | open | escalated | silent | closed, as the map colours a TPS."""
    if tps.phase == "closed" and not open_incidents:
        return TpsState.CLOSED
    if tps.silent:
        return TpsState.SILENT
    if any(i.level > 0 and i.status != "acknowledged" for i in open_incidents):
        return TpsState.ESCALATED
    if open_incidents:
        return TpsState.OPEN
    return TpsState.NORMAL


def duty_counts(tps: Tps, now: datetime) -> dict[str, int]:
    """The health of the TPS's personnel from their newest check-ins here (TpsPublic's fields).

    `lapsed`: on duty by their last word, but silent for longer than CHECKIN_FRESH (not counted once
    the TPS is closed: nobody checks in then). `fatigued` is as of the person's newest check-in.
    """
    counts = {"unwell": 0, "off_duty": 0, "fatigued": 0, "lapsed": 0, "duty_days": 0}
    for info in (tps.checkins or {}).values():
        at = info.get("at") if isinstance(info, dict) else None
        if not at:
            continue
        status = info.get("status")
        if status in ("unwell", "off_duty"):
            counts[status] += 1
        elif status == "on_duty":
            if now - as_utc(datetime.fromisoformat(at)) <= CHECKIN_FRESH:
                counts["fatigued"] += bool(info.get("fatigued"))
            elif tps.phase != "closed":
                counts["lapsed"] += 1
        counts["duty_days"] = max(counts["duty_days"], int(info.get("days") or 0))
    return counts


def tps_public(tps: Tps, open_incidents: list[Incident], now: datetime) -> TpsPublic:
    """The TPS as the dashboard shows it."""
    return TpsPublic(
        tps_id=tps.tps_id,
        name=tps.name,
        kecamatan=tps.kecamatan,
        kabupaten=tps.kabupaten,
        provinsi=tps.provinsi,
        desa=tps.desa,
        lat=tps.lat,
        lon=tps.lon,
        rawan=list(tps.rawan or []),
        phase=Phase(tps.phase) if tps.phase else None,
        state=tps_state(tps, open_incidents),
        assigned=tps.assigned,
        checked_in=coverage(tps, now, CHECKIN_FRESH),
        **duty_counts(tps, now),
        last_checkin_at=_utc(tps.last_checkin_at),
        open_incidents=len(open_incidents),
        escorts=[
            EscortPublic(
                escort_id=e["escort_id"],
                box_ids=e["box_ids"],
                arrived_box_ids=e["arrived_box_ids"],
                to=e["to"],
                personnel_ids=e["personnel_ids"],
                departed_at=datetime.fromisoformat(e["departed_at"]),
                expected_at=datetime.fromisoformat(e["expected_at"]),
                overdue=bool(e.get("incident_id")),
                incident_id=e.get("incident_id"),
            )
            for e in tps.escorts or ()
            if e["state"] == "in_transit"
        ],
        version=tps.version,
    )
