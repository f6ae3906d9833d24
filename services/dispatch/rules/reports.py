"""Reports and grouping: a report opens an incident or joins the open one of its TPS and category."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.dispatch.classify import Facts, severity_for
from services.dispatch.domain import Incident, Tps
from services.dispatch.rules.base import SYSTEM, Received, _facts_dict, _facts_of, _short_id
from services.dispatch.rules.spread import Spread
from siaga.clock import as_utc
from siaga.events import (
    Category,
    IncidentReported,
    Severity,
)


class Reports(Spread):
    """Classification, grouping, severity that only rises."""

    def _report(
        self, r: Received, tps: Tps, p: IncidentReported, *, actor: str | None = None, source: str = "field"
    ) -> Incident:
        """A report: opens an incident, or joins the open one of its TPS and category (returned).

        `actor` is who the timeline names (the device unless given: an operator for a command-post
        report); `source` how a new incident's first report came.
        """
        ev, now = r.event, self.clock.now()
        actor = actor or f"device:{r.device_id}"
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
            self._merge(existing, r, a.facts, a.why, tps, actor=actor)
            self.store.link_report(ev.event_id, existing.id)
            if p.needs_backup and existing.status != "resolved":
                self._escalate(
                    existing,
                    min(existing.level + 1, 3),
                    reason="backup_requested",
                    actor=actor,
                    note="needs_backup in report",
                )
            return existing
        inc = Incident(
            id=_short_id("INC", ev.event_id),
            tps_id=tps.tps_id,
            kecamatan=tps.kecamatan,
            kabupaten=tps.kabupaten,
            provinsi=tps.provinsi,
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
            source=source,
        )
        self.store.add_incident(inc)
        self.store.link_report(ev.event_id, inc.id)
        self._timeline(
            inc,
            actor,
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
                self._escalate(inc, 1, reason="backup_requested", actor=actor, note="needs_backup in report")
        self._changed(inc, tps)
        return inc

    def _merge(self, inc: Incident, r: Received, facts: Facts, why: list[str], tps: Tps, *, actor: str) -> None:
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
            actor,
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
