"""Operator actions: acknowledge, escalate, resolve, notes, corrections, command-post reports, and
delivery outcomes on the timeline."""

from __future__ import annotations

from services.dispatch.classify import severity_for
from services.dispatch.domain import Correction, Incident
from services.dispatch.rules.base import NotAllowed, Received, UnknownTps, _facts_of
from services.dispatch.rules.escorts import Escorts
from siaga.clock import as_utc
from siaga.contracts import IncidentSource, ReportFromCommandPost
from siaga.events import Category, EventType, FieldEvent, IncidentReported, Severity

COMMAND_POST_DEVICE = "command-post"  # the device id a command-post report carries (it has none)


class Operator(Escorts):
    """What the command center (and the notifier) do to an incident."""

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

    def classify(
        self,
        incident_id: str,
        *,
        actor: str,
        category: Category | None,
        severity: Severity | None,
        reason: str,
    ) -> Incident:
        """An operator's correction (SPEC section 5, operator judgement); the policy re-runs on it.

        Without a severity, the facts decide it for the (new) category. A higher severity acts at
        once, as a merged report's does; a lower one never lowers the level, but a pending on-site
        window is set again for it. Stakeholders of a new category are told if the incident was
        already past the point of telling them. A severity below the facts' is an override.
        """
        inc = self._get(incident_id)
        if inc.status == "resolved":
            raise NotAllowed("the incident is resolved")
        tps = self._tps_of(inc)
        now = self.clock.now()
        old_category, old_severity = Category(inc.category), Severity(inc.severity)
        new_category = category or old_category
        demanded, _ = severity_for(new_category, _facts_of(inc), (tps.rawan or []) if tps else [], self.policy.severity)
        new_severity = severity or demanded
        override = new_severity.rank < demanded.rank
        self.store.record_correction(
            Correction(
                incident_id=inc.id,
                at=now,
                actor=actor,
                text=inc.description,
                facts=dict(inc.facts or {}),
                rawan=list(tps.rawan or []) if tps else [],
                source=inc.source,
                before={"category": old_category.value, "severity": old_severity.value, "why": list(inc.why or [])},
                after={"category": new_category.value, "severity": new_severity.value},
                reason=reason,
                override=override,
            )
        )
        inc.category, inc.severity = new_category.value, new_severity.value
        inc.why = [*(inc.why or []), f"corrected by {actor}: {reason}"]
        detail = {
            "from": {"category": old_category.value, "severity": old_severity.value},
            "to": {"category": new_category.value, "severity": new_severity.value},
            "reason": reason,
            "override": override,
        }
        if override:
            detail["facts_demand"] = demanded.value
        self._timeline(inc, actor, "classified", detail)
        if new_severity.rank > old_severity.rank:
            self._severity_rose(inc, new_severity, now)
        elif new_severity.rank < old_severity.rank and inc.level == 0 and inc.status == "open":
            window = self.policy.window(new_severity)
            if window is not None:
                self._start_window(inc, new_severity, now)
        told_already = inc.level > 0 or old_severity.rank >= Severity.HIGH.rank
        if new_category is not old_category and told_already and inc.status != "resolved":
            self._tell_stakeholders(inc, f"category corrected to {new_category.value}")
        self._changed(inc, tps)
        return inc

    def report_from_command_post(self, command: ReportFromCommandPost) -> Incident:
        """A report taken by radio or phone: the field report's path, with the operator as the actor.

        Its `command_id` stands for the report's event id (a redelivered command is applied once).
        Raises UnknownTps.
        """
        tps = self.store.tps(command.tps_id)
        if tps is None:
            raise UnknownTps(f"TPS {command.tps_id!r} is not in the registry")
        now = self.clock.now()
        payload = IncidentReported(
            category=command.category,
            description=command.description,
            injuries=command.injuries,
            weapons=command.weapons,
            crowd_size=command.crowd_size,
        )
        event = FieldEvent(
            event_id=command.command_id,
            type=EventType.INCIDENT_REPORTED,
            tps_id=command.tps_id,
            occurred_at=as_utc(command.occurred_at or now),
            payload=payload.model_dump(mode="json", exclude_none=True),
        )
        received = Received(event=event, device_id=COMMAND_POST_DEVICE, received_at=now)
        self._report(received, tps, payload, actor=command.actor, source=IncidentSource.COMMAND_POST.value)
        inc = self.store.incident_for_report(command.command_id)
        assert inc is not None, "a report always opens or joins an incident"
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
