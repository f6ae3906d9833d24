"""Operator actions: acknowledge, escalate, resolve, notes, and delivery outcomes on the timeline."""

from __future__ import annotations

from services.dispatch.domain import Incident
from services.dispatch.rules.base import NotAllowed
from services.dispatch.rules.presence import Presence


class Operator(Presence):
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
