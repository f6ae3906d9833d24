"""The escalation engine: SPEC section 5 as code. Pure — events and a clock in, decisions out.

It reads and changes incidents only through a `Store`, and announces every change there too
(incident and TPS updates, alert intents). No HTTP, Kafka or SQL here, and no wall clock: the
tests drive it with a ManualClock, so an hour of policy runs in a millisecond.

Times: `occurred_at` (device clock) decides windows and grouping ("event time"); the clock
(server time) decides when a deadline is acted on, with a grace for backlogs that arrive late.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.dispatch.classify import Classifier, Facts, severity_for
from services.dispatch.domain import Incident, Personnel, Tps
from services.dispatch.policy import EscalationPolicy
from services.dispatch.store import OPEN_STATUSES, Store, coverage
from siaga.clock import Clock, as_utc, iso
from siaga.contracts import (
    AlertIntent,
    Audience,
    IncidentChanged,
    IncidentPublic,
    IncidentStatus,
    Stakeholder,
    TpsChanged,
    TpsPublic,
    TpsState,
)
from siaga.events import (
    BackupRequested,
    Category,
    Checkin,
    EventType,
    FieldEvent,
    IncidentReported,
    IncidentResolved,
    IncidentUpdate,
    Phase,
    Severity,
    TpsStatus,
)

SYSTEM = "siaga"
LEVEL_NAMES = {0: "on site", 1: "Polsek", 2: "Polres command center", 3: "Polda/Brimob"}
CHECKIN_FRESH = timedelta(minutes=60)


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


class Engine:
    """Applies field events, deadlines and operator actions to incidents, per the policy in force."""

    def __init__(self, store: Store, policy: EscalationPolicy, classifier: Classifier, clock: Clock) -> None:
        self.store, self.policy, self.classifier, self.clock = store, policy, classifier, clock
        self._dirty_tps: dict[str, Tps] = {}  # announced once per transaction, by finish()

    # ------------------------------------------------------------------ field events
    def apply(self, r: Received) -> None:
        """Apply one field event once: a redelivered copy (same event_id) changes nothing."""
        ev = r.event
        if self.store.processed(ev.event_id):
            return
        tps = self.store.tps(ev.tps_id)
        if tps is None:
            raise UnknownTps(f"TPS {ev.tps_id!r} is not in the registry")
        payload = ev.typed_payload()
        if ev.type is EventType.INCIDENT_REPORTED:
            assert isinstance(payload, IncidentReported)
            self._report(r, tps, payload)
        elif ev.type is EventType.INCIDENT_UPDATE:
            assert isinstance(payload, IncidentUpdate)
            inc = self._incident_for(payload.report_id)
            self._note(inc, actor=f"device:{r.device_id}", text=payload.note, at=ev.occurred_at)
        elif ev.type is EventType.INCIDENT_RESOLVED:
            assert isinstance(payload, IncidentResolved)
            inc = self._incident_for(payload.report_id)
            if inc.status != "resolved":
                self._resolve(inc, actor=f"device:{r.device_id}", resolution=payload.resolution, at=ev.occurred_at)
        elif ev.type is EventType.BACKUP_REQUESTED:
            assert isinstance(payload, BackupRequested)
            inc = self._incident_for(payload.report_id)
            if inc.status == "resolved":
                self._timeline(
                    inc,
                    f"device:{r.device_id}",
                    "backup_ignored",
                    {"reason": payload.reason, "why": "the incident is already resolved"},
                )
                self._changed(inc)
            else:
                self._escalate(
                    inc,
                    min(inc.level + 1, 3),
                    reason="backup_requested",
                    actor=f"device:{r.device_id}",
                    note=payload.reason,
                )
        elif ev.type is EventType.CHECKIN:
            assert isinstance(payload, Checkin)
            self._checkin(r, tps, payload)
        elif ev.type is EventType.TPS_STATUS:
            assert isinstance(payload, TpsStatus)
            self._phase(r, tps, payload)
        self.store.mark_processed(ev.event_id, self.clock.now())

    def _incident_for(self, report_id: str) -> Incident:
        inc = self.store.incident_for_report(report_id)
        if inc is None:
            raise UnknownReport(f"no incident for report {report_id!r}")
        return inc

    def _report(self, r: Received, tps: Tps, p: IncidentReported) -> None:
        ev, now = r.event, self.clock.now()
        device_category = None if p.category in (None, Category.OTHER) else p.category
        a = self.classifier.assess(
            description=p.description,
            category=device_category,
            injuries=p.injuries,
            weapons=p.weapons,
            crowd_size=p.crowd_size,
            rawan=tps.rawan or [],
            rules=self.policy.severity,
        )
        occurred = as_utc(ev.occurred_at)
        since = occurred - timedelta(minutes=self.policy.grouping_minutes)
        existing = self.store.open_incident(tps.tps_id, a.category.value, since)
        if existing is not None:
            self._merge(existing, r, a.facts, a.why, tps)
            self.store.link_report(ev.event_id, existing.id)
            if p.needs_backup and existing.status != "resolved":
                self._escalate(
                    existing,
                    min(existing.level + 1, 3),
                    reason="backup_requested",
                    actor=f"device:{r.device_id}",
                    note="needs_backup in report",
                )
            return
        inc = Incident(
            id=_short_id("INC", ev.event_id),
            tps_id=tps.tps_id,
            kecamatan=tps.kecamatan,
            category=a.category.value,
            severity=a.severity.value,
            level=0,
            status="open",
            reports=1,
            report_ids=[ev.event_id],
            opened_at=occurred,
            received_at=now,
            facts=_facts_dict(a.facts),
            why=list(a.why),
            description=p.description,
            policy_version=self.policy.version,
            updated_at=now,
        )
        self.store.add_incident(inc)
        self.store.link_report(ev.event_id, inc.id)
        self._timeline(
            inc,
            f"device:{r.device_id}",
            "opened",
            {
                "report": ev.event_id,
                "category": inc.category,
                "severity": inc.severity,
                "why": inc.why,
                "policy_version": self.policy.version,
            },
        )
        # Joining an open area incident first: its children's alerts are held back.
        self._detect_spread(inc)
        severity = Severity(inc.severity)
        if severity is Severity.CRITICAL:
            self._escalate(inc, 2, reason="critical", also_tell=[1])
        else:
            self._start_window(inc, severity, now)
            if severity.rank >= Severity.HIGH.rank:
                self._tell_stakeholders(inc, "opened at high severity")
            if p.needs_backup:
                self._escalate(
                    inc, 1, reason="backup_requested", actor=f"device:{r.device_id}", note="needs_backup in report"
                )
        self._changed(inc, tps)

    def _start_window(self, inc: Incident, severity: Severity, now: datetime) -> None:
        window = self.policy.window(severity)
        assert window is not None
        deadline = as_utc(inc.opened_at) + window
        inc.local_deadline = deadline
        grace = timedelta(seconds=self.policy.late_grace_seconds)
        # A report that arrives after its window closed waits a grace for the rest of its backlog.
        inc.escalate_at = deadline if now < deadline else now + grace

    def _merge(self, inc: Incident, r: Received, facts: Facts, why: list[str], tps: Tps) -> None:
        now = self.clock.now()
        inc.reports += 1
        inc.report_ids = [*inc.report_ids, r.event.event_id]
        merged = _facts_of(inc).merge(facts)
        inc.facts = _facts_dict(merged)
        before = Severity(inc.severity)
        after, sev_why = severity_for(Category(inc.category), merged, tps.rawan or [], self.policy.severity)
        after = after.at_least(before)  # merging never lowers what was already decided
        self._timeline(
            inc,
            f"device:{r.device_id}",
            "report_merged",
            {"report": r.event.event_id, "reports": inc.reports, "why": why},
        )
        if after is not before:
            inc.severity = after.value
            inc.why = [*inc.why, *sev_why]
            self._timeline(inc, SYSTEM, "severity_raised", {"from": before.value, "to": after.value, "why": sev_why})
            self._severity_rose(inc, after, now)
        self._changed(inc, tps)

    def _severity_rose(self, inc: Incident, severity: Severity, now: datetime) -> None:
        """A rise in severity acts at once (SPEC section 5)."""
        if inc.status == "resolved":
            return
        if severity is Severity.CRITICAL and inc.level < 2:
            self._escalate(inc, 2, reason="critical", also_tell=[1] if inc.level < 1 else [])
            return
        if severity.rank >= Severity.HIGH.rank:
            self._tell_stakeholders(inc, "severity rose to high")
        if inc.level == 0 and inc.status == "open":
            window = self.policy.window(severity)
            if window is not None:
                deadline = as_utc(inc.opened_at) + window
                if inc.local_deadline is None or deadline < as_utc(inc.local_deadline):
                    inc.local_deadline = deadline
                    if deadline <= now:
                        self._escalate(inc, 1, reason="severity_raised")
                    else:
                        inc.escalate_at = deadline

    def _checkin(self, r: Received, tps: Tps, p: Checkin) -> None:
        now, occurred = self.clock.now(), as_utc(r.event.occurred_at)
        person = self.store.personnel(p.personnel_id)
        if person is None:
            person = Personnel(personnel_id=p.personnel_id, name=p.personnel_id, tps_ids=[tps.tps_id])
        if person.last_checkin_at is None or occurred >= as_utc(person.last_checkin_at):
            person.status, person.last_checkin_at = p.status, occurred
            if p.battery is not None:
                person.battery = p.battery
        self.store.save_personnel(person)
        checkins = dict(tps.checkins or {})
        prior = checkins.get(p.personnel_id)
        if not prior or occurred >= as_utc(datetime.fromisoformat(prior["at"])):
            checkins[p.personnel_id] = {"status": p.status, "at": iso(occurred), "battery": p.battery}
        tps.checkins = checkins
        if tps.last_checkin_at is None or occurred > as_utc(tps.last_checkin_at):
            tps.last_checkin_at = occurred
        tps.last_seen_at = now
        if tps.silent:
            tps.silent = False
            for inc in self.store.open_at_tps(tps.tps_id):
                if inc.category == Category.SILENT_POST.value:
                    inside = occurred <= as_utc(inc.opened_at)
                    text = (
                        f"backlog shows a check-in at {iso(occurred)}, inside the silent period"
                        if inside
                        else f"the post checked in again at {iso(occurred)}"
                    )
                    self._resolve(inc, actor=SYSTEM, resolution=text, at=occurred)
        self._tps_changed(tps)

    def _phase(self, r: Received, tps: Tps, p: TpsStatus) -> None:
        now, occurred = self.clock.now(), as_utc(r.event.occurred_at)
        if tps.phase_at is not None and occurred < as_utc(tps.phase_at):
            return  # an older phase from a backlog does not undo a newer one
        operating = set(self.policy.operating_phases)
        was_operating = tps.phase in operating
        tps.phase, tps.phase_at = p.phase.value, occurred
        if p.phase in operating and not was_operating:
            tps.last_seen_at = now  # the silence clock starts when operation starts
        if p.phase not in operating and tps.silent:
            tps.silent = False
            for inc in self.store.open_at_tps(tps.tps_id):
                if inc.category == Category.SILENT_POST.value:
                    self._resolve(inc, actor=SYSTEM, resolution=f"TPS phase is now {p.phase.value}", at=occurred)
        self._tps_changed(tps)

    # ------------------------------------------------------------------ the clock
    def tick(self) -> int:
        """Act on every deadline that passed and raise silent posts; returns how many changes it made."""
        now = self.clock.now()
        changes = 0
        for inc in self.store.due(now):
            if inc.status not in OPEN_STATUSES:
                continue
            if inc.escalate_at is not None and as_utc(inc.escalate_at) <= now and inc.level == 0:
                self._escalate(inc, 1, reason="window_expired")
                changes += 1
            elif inc.ack_deadline is not None and as_utc(inc.ack_deadline) <= now and inc.status == "escalated":
                if inc.level < 3:
                    self._escalate(inc, inc.level + 1, reason="ack_timeout")
                else:
                    self._remind(inc)
                changes += 1
            else:
                inc.escalate_at = None if inc.level > 0 else inc.escalate_at
                if inc.status != "escalated":
                    inc.ack_deadline = None
                self.store.save_incident(inc)
        changes += self._silent_posts(now)
        return changes

    def _silent_posts(self, now: datetime) -> int:
        cutoff = now - timedelta(minutes=self.policy.silent_post_minutes)
        n = 0
        for tps in self.store.silent_candidates([p.value for p in self.policy.operating_phases], cutoff):
            tps.silent = True
            last = iso(tps.last_checkin_at) or "never"
            severity, why = severity_for(Category.SILENT_POST, Facts(), tps.rawan or [], self.policy.severity)
            inc = Incident(
                id=_short_id("SIL", tps.tps_id, iso(now) or ""),
                tps_id=tps.tps_id,
                kecamatan=tps.kecamatan,
                category=Category.SILENT_POST.value,
                severity=severity.value,
                opened_at=now,
                received_at=now,
                why=[
                    f"no check-in from the TPS's personnel for {self.policy.silent_post_minutes:g} minutes "
                    f"(last: {last})",
                    *why,
                ],
                description="Pos diam: personel belum melapor",
                policy_version=self.policy.version,
                updated_at=now,
                reports=0,
            )
            self.store.add_incident(inc)
            self._timeline(inc, SYSTEM, "opened", {"category": inc.category, "severity": inc.severity, "why": inc.why})
            self._start_window(inc, severity, now)
            self._changed(inc, tps)
            self._tps_changed(tps)
            n += 1
        return n

    # ------------------------------------------------------------------ operator actions
    def acknowledge(self, incident_id: str, *, actor: str) -> Incident:
        inc = self._get(incident_id)
        if inc.status == "resolved":
            raise NotAllowed("the incident is resolved")
        if inc.status != "acknowledged":
            inc.status = "acknowledged"
            inc.ack_deadline = None
            inc.escalate_at = None
            self._timeline(inc, actor, "acknowledged", {"level": inc.level})
            self._changed(inc)
        return inc

    def escalate(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        inc = self._get(incident_id)
        if inc.status == "resolved":
            raise NotAllowed("the incident is resolved")
        if inc.level >= 3:
            self._remind(inc, actor=actor)
        else:
            self._escalate(inc, inc.level + 1, reason="operator", actor=actor, note=note)
        return inc

    def resolve(self, incident_id: str, *, actor: str, resolution: str) -> Incident:
        inc = self._get(incident_id)
        if inc.status != "resolved":
            self._resolve(inc, actor=actor, resolution=resolution, at=self.clock.now())
        return inc

    def note(self, incident_id: str, *, actor: str, text: str) -> Incident:
        inc = self._get(incident_id)
        self._note(inc, actor=actor, text=text, at=self.clock.now())
        return inc

    def record_delivery(
        self, incident_id: str, *, key: str, channel: str, recipient: str, outcome: str, detail: str
    ) -> None:
        """Put an alert's delivery result on the incident's timeline (and a failure on the dashboard)."""
        inc = self.store.incident(incident_id)
        if inc is None:
            return
        self._timeline(
            inc, f"notifier:{channel}", f"alert_{outcome}", {"key": key, "recipient": recipient, "detail": detail}
        )
        if outcome == "failed":
            inc.last_alert_failure = f"{channel} {recipient}: {detail}"[:500]
        self._changed(inc)

    def _get(self, incident_id: str) -> Incident:
        inc = self.store.incident(incident_id)
        if inc is None:
            raise KeyError(incident_id)
        return inc

    # ------------------------------------------------------------------ the ladder
    def _escalate(
        self,
        inc: Incident,
        level: int,
        *,
        reason: str,
        actor: str = SYSTEM,
        note: str = "",
        also_tell: list[int] | None = None,
    ) -> None:
        now = self.clock.now()
        before = inc.level
        inc.level = max(inc.level, min(level, 3))
        inc.status = "escalated"
        inc.escalate_at = None
        inc.ack_deadline = now + self.policy.ack_timeout(inc.level)
        self._timeline(
            inc,
            actor,
            "escalated",
            {"from": before, "to": inc.level, "reason": reason, "to_whom": LEVEL_NAMES[inc.level], "note": note},
        )
        for lv in sorted({*(also_tell or []), inc.level}):
            if 0 < lv <= inc.level:
                self._alert(inc, lv, reason=reason)
        if before == 0:
            self._tell_stakeholders(inc, "left level 0")
        self._changed(inc)

    def _remind(self, inc: Incident, *, actor: str = SYSTEM) -> None:
        now = self.clock.now()
        inc.reminders += 1
        inc.ack_deadline = now + timedelta(minutes=self.policy.reminder_minutes)
        self._timeline(inc, actor, "reminder", {"level": inc.level, "reminder": inc.reminders})
        self._alert(inc, inc.level, reason="reminder", reminder=inc.reminders)
        self._changed(inc)

    def _resolve(self, inc: Incident, *, actor: str, resolution: str, at: datetime) -> None:
        now = self.clock.now()
        inc.status = "resolved"
        inc.resolved_at = now
        inc.resolution = resolution
        inc.escalate_at = None
        inc.ack_deadline = None
        on_site = inc.level == 0
        self._timeline(inc, actor, "resolved", {"resolution": resolution, "on_site": on_site, "occurred_at": iso(at)})
        self._changed(inc)

    def _note(self, inc: Incident, *, actor: str, text: str, at: datetime) -> None:
        self._timeline(inc, actor, "note", {"text": text, "occurred_at": iso(at)})
        self._changed(inc)

    def _alert(self, inc: Incident, level: int, *, reason: str, reminder: int = 0) -> None:
        if reminder == 0 and level in (inc.levels_alerted or []):
            return  # a level is told once; reminders have their own numbers
        if self._held_back(inc, f"level {level}"):
            return
        if reminder == 0:
            inc.levels_alerted = [*(inc.levels_alerted or []), level]
        self._emit_alert(inc, level=level, audience=Audience.POLICE, stakeholder=None, reminder=reminder, reason=reason)

    def _tell_stakeholders(self, inc: Incident, why: str) -> None:
        names = [
            s
            for s in self.policy.stakeholders.get(Category(inc.category), [])
            if s not in (inc.stakeholders_told or [])
        ]
        if not names or self._held_back(inc, "stakeholders"):
            return
        inc.stakeholders_told = [*(inc.stakeholders_told or []), *names]
        self._timeline(inc, SYSTEM, "stakeholders_told", {"stakeholders": names, "why": why})
        for name in names:
            self._emit_alert(
                inc, level=inc.level, audience=Audience.STAKEHOLDER, stakeholder=name, reminder=0, reason=why
            )

    def _held_back(self, inc: Incident, what: str) -> bool:
        """Children of an open area incident keep their alerts: the area incident speaks for them."""
        if not inc.parent_id:
            return False
        parent = self.store.incident(inc.parent_id)
        if parent is None or parent.status not in OPEN_STATUSES:
            return False
        self._timeline(inc, SYSTEM, "alert_held_back", {"what": what, "area_incident": parent.id})
        return True

    def _emit_alert(
        self,
        inc: Incident,
        *,
        level: int,
        audience: Audience,
        stakeholder: Stakeholder | None,
        reminder: int,
        reason: str,
    ) -> None:
        who = stakeholder or audience.value
        self.store.emit(
            AlertIntent(
                alert_id=f"{inc.id}:{level}:{who}:{reminder}",
                incident_id=inc.id,
                level=level,
                audience=audience,
                stakeholder=stakeholder,
                reminder=reminder,
                reason=reason,
                created_at=self.clock.now(),
                incident=incident_public(inc, self._tps_of(inc)),
            )
        )

    # ------------------------------------------------------------------ spread
    def _detect_spread(self, inc: Incident) -> None:
        rule = self.policy.spread
        if Category(inc.category) in rule.categories_excluded or inc.tps_id is None:
            return
        area = self.store.open_area(inc.kecamatan, inc.category)
        if area is not None:
            self._adopt(area, inc)
            return
        since = as_utc(inc.opened_at) - timedelta(minutes=rule.window_minutes)
        siblings = [i for i in self.store.open_in_kecamatan(inc.kecamatan, inc.category, since) if i.parent_id is None]
        if len({i.tps_id for i in siblings}) < rule.min_incidents:
            return
        now = self.clock.now()
        worst = max((Severity(i.severity) for i in siblings), key=lambda s: s.rank)
        severity = worst.step_up(rule.severity_step)
        area = Incident(
            id=_short_id("AREA", inc.kecamatan, inc.category, siblings[0].id),
            tps_id=None,
            kecamatan=inc.kecamatan,
            category=inc.category,
            severity=severity.value,
            level=0,
            status="open",
            reports=len(siblings),
            opened_at=min(as_utc(i.opened_at) for i in siblings),
            received_at=now,
            why=[
                f"spread: {len(siblings)} open {inc.category} incidents in kecamatan {inc.kecamatan} within "
                f"{rule.window_minutes:g} minutes",
                f"severity {severity.value}: one step above {worst.value}",
            ],
            description=f"{len(siblings)} TPS di kecamatan {inc.kecamatan}",
            policy_version=self.policy.version,
            updated_at=now,
            children=[],
        )
        self.store.add_incident(area)
        self._timeline(area, SYSTEM, "opened", {"category": area.category, "severity": area.severity, "why": area.why})
        for child in siblings:
            self._adopt(area, child, announce=False)
        self._escalate(area, rule.level, reason="spread", also_tell=list(range(1, rule.level)))

    def _adopt(self, area: Incident, child: Incident, *, announce: bool = True) -> None:
        if child.id in (area.children or []):
            return
        area.children = [*(area.children or []), child.id]
        area.reports = len(area.children)
        child.parent_id = area.id
        self._timeline(child, SYSTEM, "grouped_into_area", {"area_incident": area.id})
        self._timeline(area, SYSTEM, "child_added", {"incident": child.id, "tps_id": child.tps_id})
        self._changed(child)
        if announce:
            self._changed(area)

    # ------------------------------------------------------------------ announcing
    def _timeline(self, inc: Incident, actor: str, action: str, detail: dict[str, Any]) -> None:
        self.store.timeline(inc, at=self.clock.now(), actor=actor, action=action, detail=detail)

    def _tps_of(self, inc: Incident) -> Tps | None:
        return self.store.tps(inc.tps_id) if inc.tps_id else None

    def _changed(self, inc: Incident, tps: Tps | None = None) -> None:
        inc.version += 1
        inc.updated_at = self.clock.now()
        self.store.save_incident(inc)
        tps = tps or self._tps_of(inc)
        self.store.emit(IncidentChanged(incident=incident_public(inc, tps)))
        if tps is not None:
            self._tps_changed(tps)

    def refresh_tps(self, tps_ids: Sequence[str]) -> None:
        """The registry changed these TPS (an import): take their new registry rows and announce them."""
        for tps in self.store.reload_tps(tps_ids):
            self._tps_changed(tps)

    def announce_tps(self, tps: Tps) -> None:
        """Store a registry change of a TPS and announce it to the dashboards."""
        self._tps_changed(tps)

    def _tps_changed(self, tps: Tps) -> None:
        self.store.save_tps(tps)
        self._dirty_tps[tps.tps_id] = tps

    def finish(self) -> None:
        """Announce each TPS that changed, once, with its final state (call before the commit)."""
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


def tps_public(tps: Tps, open_incidents: list[Incident], now: datetime) -> TpsPublic:
    """The TPS as the dashboard shows it."""
    return TpsPublic(
        tps_id=tps.tps_id,
        name=tps.name,
        kecamatan=tps.kecamatan,
        desa=tps.desa,
        lat=tps.lat,
        lon=tps.lon,
        rawan=list(tps.rawan or []),
        phase=Phase(tps.phase) if tps.phase else None,
        state=tps_state(tps, open_incidents),
        assigned=tps.assigned,
        checked_in=coverage(tps, now, CHECKIN_FRESH),
        last_checkin_at=_utc(tps.last_checkin_at),
        open_incidents=len(open_incidents),
        version=tps.version,
    )
