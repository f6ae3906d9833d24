"""The ladder: windows, escalation up the levels, reminders, resolution, alerts and stakeholders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.dispatch.classify import Facts, severity_for
from services.dispatch.domain import Incident, SilenceRule, Tps
from services.dispatch.rules.base import LEVEL_NAMES, SYSTEM, RuleBase, incident_public
from services.dispatch.store import OPEN_STATUSES
from siaga.clock import as_utc, iso
from siaga.contracts import (
    AlertIntent,
    Audience,
    Stakeholder,
)
from siaga.events import (
    Category,
    Severity,
)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert the ladder sends: to a police level or a stakeholder, a first one or a reminder."""

    level: int
    audience: Audience
    stakeholder: Stakeholder | None
    reminder: int
    reason: str

    def held(self, silence_id: str, at: str | None) -> dict[str, Any]:
        """As kept on the incident (`held_alerts`) while a silence holds it."""
        return {
            "level": self.level,
            "audience": self.audience.value,
            "stakeholder": self.stakeholder,
            "reminder": self.reminder,
            "reason": self.reason,
            "silence_id": silence_id,
            "at": at,
        }

    @classmethod
    def of_held(cls, h: dict[str, Any]) -> Alert:
        return cls(h["level"], Audience(h["audience"]), h["stakeholder"], h["reminder"], h["reason"])


class Ladder(RuleBase):
    """Up the police ladder and out to the stakeholders (SPEC section 5)."""

    def _new_system_incident(
        self, tps: Tps, category: Category, *, incident_id: str, why: list[str], description: str, opened_at: datetime
    ) -> Incident:
        """An incident Siaga raises itself at a TPS (silent post, overdue escort, coverage): its severity
        from the policy's base and the TPS's rawan, stored, with its `opened` entry. `_start_system`
        then puts it on the ladder (after any entries of its own)."""
        now = self.clock.now()
        severity, steps = severity_for(category, Facts(), tps.rawan or [], self.policy.severity)
        inc = Incident(
            id=incident_id,
            tps_id=tps.tps_id,
            kecamatan=tps.kecamatan,
            kabupaten=tps.kabupaten,
            provinsi=tps.provinsi,
            category=category.value,
            severity=severity.value,
            opened_at=opened_at,
            received_at=now,
            why=[*why, *steps],
            description=description,
            policy_version=self.policy.version,
            updated_at=now,
            reports=0,
        )
        self.store.add_incident(inc)
        self._timeline(inc, SYSTEM, "opened", {"category": inc.category, "severity": inc.severity, "why": inc.why})
        return inc

    def _start_system(self, inc: Incident, tps: Tps) -> None:
        """Onto the ladder as a report would go: critical straight to level 2, else the on-site window."""
        severity = Severity(inc.severity)
        if severity is Severity.CRITICAL:
            self._escalate(inc, 2, reason="critical", also_tell=[1])
        else:
            self._start_window(inc, severity, self.clock.now())
            if severity.rank >= Severity.HIGH.rank:
                self._tell_stakeholders(inc, "opened at high severity")
        self._changed(inc, tps)

    def _start_window(self, inc: Incident, severity: Severity, now: datetime) -> None:
        window = self.policy.window(severity)
        assert window is not None
        deadline = as_utc(inc.opened_at) + window
        inc.local_deadline = deadline
        grace = timedelta(seconds=self.policy.late_grace_seconds)
        # A report that arrives after its window closed waits a grace for the rest of its backlog.
        inc.escalate_at = deadline if now < deadline else now + grace

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
        if inc.held_alerts:  # a silence's held alerts go out only for incidents still open
            self._timeline(
                inc,
                SYSTEM,
                "held_alerts_dropped",
                {"alerts": len(inc.held_alerts), "why": "resolved while a silence held its alerts"},
            )
            inc.held_alerts = []
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
        self._emit_alert(inc, Alert(level, Audience.POLICE, None, reminder, reason))

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
            self._emit_alert(inc, Alert(inc.level, Audience.STAKEHOLDER, name, 0, why))

    def _held_back(self, inc: Incident, what: str) -> bool:
        """Children of an open area incident keep their alerts: the area incident speaks for them."""
        if not inc.parent_id:
            return False
        parent = self.store.incident(inc.parent_id)
        if parent is None or parent.status not in OPEN_STATUSES:
            return False
        self._timeline(inc, SYSTEM, "alert_held_back", {"what": what, "area_incident": parent.id})
        return True

    def _emit_alert(self, inc: Incident, alert: Alert) -> None:
        """Send the alert, or keep it on the incident while a silence holds it."""
        silence = self._silence_of(inc)
        if silence is not None:
            self._hold(inc, silence, alert)
        else:
            self._send_alert(inc, alert)

    def _send_alert(self, inc: Incident, alert: Alert) -> None:
        who = alert.stakeholder or alert.audience.value
        self.store.emit(
            AlertIntent(
                alert_id=f"{inc.id}:{alert.level}:{who}:{alert.reminder}",
                incident_id=inc.id,
                level=alert.level,
                audience=alert.audience,
                stakeholder=alert.stakeholder,
                reminder=alert.reminder,
                reason=alert.reason,
                created_at=self.clock.now(),
                incident=incident_public(inc, self._tps_of(inc)),
            )
        )

    # ------------------------------------------------------------------ silences (SPEC section 5)
    def _silence_of(self, inc: Incident) -> SilenceRule | None:
        """The silence in force that matches the incident; never one for a critical incident."""
        if inc.severity == Severity.CRITICAL.value:
            return None
        now = self.clock.now()
        return next((s for s in self.store.silences() if s.in_force(now) and s.matches(inc)), None)

    def _hold(self, inc: Incident, silence: SilenceRule, alert: Alert) -> None:
        """Keep the alert on the incident until no silence holds it; a reminder replaces the one before."""
        held = alert.held(silence.id, iso(self.clock.now()))
        kept = [h for h in inc.held_alerts if not (alert.reminder and h["reminder"] and h["level"] == alert.level)]
        inc.held_alerts = [*kept, held]
        self._timeline(
            inc,
            SYSTEM,
            "alert_silenced",
            {
                "to_whom": alert.stakeholder or LEVEL_NAMES[alert.level],
                "level": alert.level,
                "reminder": alert.reminder,
                "silence_id": silence.id,
                "silence_reason": silence.reason,
                "until": iso(silence.ends_at),
            },
        )
        self.store.save_incident(inc)

    def _release_held(self) -> int:
        """Send, once, the held alerts of each open incident that no silence holds any more (the silence
        ended or was ended, or the incident became critical); returns how many incidents it released."""
        released = 0
        for inc in self.store.holding():
            if self._silence_of(inc) is not None:  # never for a critical incident
                continue
            critical = inc.severity == Severity.CRITICAL.value
            held, inc.held_alerts = inc.held_alerts, []
            self._timeline(
                inc,
                SYSTEM,
                "alerts_released",
                {
                    "alerts": len(held),
                    "silence_ids": sorted({h["silence_id"] for h in held}),
                    "why": "critical is never silenced" if critical else "no silence holds it any more",
                },
            )
            for h in held:
                self._send_alert(inc, Alert.of_held(h))
            self._changed(inc)
            released += 1
        return released
