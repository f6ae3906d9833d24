"""The escalation engine: SPEC section 5 as code. Pure — events and a clock in, decisions out.

It reads and changes incidents only through a `Store`, and announces every change there too
(incident and TPS updates, alert intents). No HTTP, Kafka or SQL here, and no wall clock: the
tests drive it with a ManualClock, so an hour of policy runs in a millisecond.

Times: `occurred_at` (device clock) decides windows and grouping ("event time"); the clock
(server time) decides when a deadline is acted on, with a grace for backlogs that arrive late.
"""

from __future__ import annotations

from services.dispatch.rules.base import (  # re-exported: the engine's public names
    CHECKIN_FRESH,
    LEVEL_NAMES,
    SYSTEM,
    NotAllowed,
    Received,
    UnknownReport,
    UnknownTps,
    incident_public,
    public_incident,
    tps_public,
    tps_state,
)
from services.dispatch.rules.duty import Duty
from services.dispatch.store import OPEN_STATUSES
from siaga.clock import as_utc
from siaga.events import (
    BackupRequested,
    Checkin,
    EscortArrived,
    EscortDeparted,
    EventType,
    IncidentReported,
    IncidentResolved,
    IncidentUpdate,
    TpsStatus,
)

__all__ = [
    "CHECKIN_FRESH",
    "LEVEL_NAMES",
    "SYSTEM",
    "Engine",
    "NotAllowed",
    "Received",
    "UnknownReport",
    "UnknownTps",
    "incident_public",
    "public_incident",
    "tps_public",
    "tps_state",
]


class Engine(Duty):
    """Applies field events, deadlines and operator actions to incidents, per the policy in force.

    The rules live by concern in services/dispatch/rules/: `base` (state, announcing), `ladder`,
    `spread`, `reports` (and grouping), `presence` (and silent posts), `escorts`, `operator`, `orders`,
    `duty` (coverage). This class routes each field event to its rule and runs the clock's rules.
    """

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
            inc = self._report(r, tps, payload, source=r.channel)
            if r.reply_to is not None:  # by SMS or WhatsApp: its code, category and severity, to the sender
                self.reply(r.reply_to, ev.event_id, "reported" if inc.reports == 1 else "joined", inc)
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
            self._coverage(r, tps, payload)
        elif ev.type is EventType.TPS_STATUS:
            assert isinstance(payload, TpsStatus)
            self._phase(r, tps, payload)
        elif ev.type is EventType.ESCORT_DEPARTED:
            assert isinstance(payload, EscortDeparted)
            self._escort_departed(r, tps, payload)
        elif ev.type is EventType.ESCORT_ARRIVED:
            assert isinstance(payload, EscortArrived)
            self._escort_arrived(r, tps, payload)
        self.store.mark_processed(ev.event_id, self.clock.now())

    # ------------------------------------------------------------------ the clock
    def tick(self) -> int:
        """Act on every deadline that passed and raise silent posts; returns how many changes it made."""
        now = self.clock.now()
        changes = self._release_held()  # first: what a silence held is older than what falls due now
        for inc in self.store.due(now):
            if inc.status not in OPEN_STATUSES:
                continue
            changes += self._orders_due(inc, now)
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
        changes += self._escorts_due(now)
        changes += self._lapsed_posts(now)
        return changes
