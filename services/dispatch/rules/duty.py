"""Personnel on duty (SPEC section 9, "keep personnel healthy"): a TPS below its minimums.

A TPS in an operating phase is covered while both minimums of the policy's `min_on_duty` hold:
`police` (on-duty people whose role is not `linmas`) and `people` (everyone on duty), counted from
fresh check-ins as the dashboard counts them. When a check-in `unwell` or `off_duty` takes it
below either, a `coverage` incident opens at the TPS with replacement suggestions: the nearest
free people of the kecamatan who do not cover it, reserves first. A check-in that brings the TPS
back to its minimums resolves the incident.
"""

from __future__ import annotations

from datetime import datetime

from services.dispatch.domain import Tps
from services.dispatch.rules.base import CHECKIN_FRESH, SYSTEM, Received, _short_id
from services.dispatch.rules.orders import NOT_SENT_TO, Orders
from siaga.clock import as_utc, iso
from siaga.events import Category, Checkin

REPLACEMENTS = 3  # suggestions on a coverage incident


class Duty(Orders):
    """Coverage of each TPS by its personnel."""

    def on_duty_at(self, tps: Tps) -> tuple[int, int]:
        """(police, people) on duty at the TPS now: fresh `on_duty` check-ins, Linmas not police."""
        now = self.clock.now()
        police = people = 0
        for pid, info in (tps.checkins or {}).items():
            at = info.get("at") if isinstance(info, dict) else None
            if not at or info.get("status") != "on_duty":
                continue
            if now - as_utc(_parse(at)) > CHECKIN_FRESH:
                continue
            people += 1
            person = self.store.personnel(pid)
            if person is None or person.role not in NOT_SENT_TO:
                police += 1
        return police, people

    def _coverage(self, r: Received, tps: Tps, p: Checkin) -> None:
        """After a check-in: open a coverage incident if the TPS fell short, resolve it once whole again."""
        if tps.phase not in {ph.value for ph in self.policy.operating_phases}:
            return
        opened = [i for i in self.store.open_at_tps(tps.tps_id) if i.category == Category.COVERAGE.value]
        if p.status == "on_duty" and not opened:
            return  # the usual check-in: it can neither open a gap nor close one (and counts nobody)
        police, people = self.on_duty_at(tps)
        need = self.policy.min_on_duty
        short = police < need.police or people < need.people
        if not short:
            for inc in opened:
                text = f"covered again: {police} police and {people} people on duty"
                self._resolve(inc, actor=SYSTEM, resolution=text, at=r.event.occurred_at)
            return
        if opened or p.status == "on_duty":
            return  # already flagged; or short, but nobody just dropped out
        self._open_coverage(r, tps, p, police, people)

    def _open_coverage(self, r: Received, tps: Tps, p: Checkin, police: int, people: int) -> None:
        now, need = self.clock.now(), self.policy.min_on_duty
        inc = self._new_system_incident(
            tps,
            Category.COVERAGE,
            incident_id=_short_id("COV", tps.tps_id, r.event.event_id),
            why=[
                f"{p.personnel_id} checked in {p.status}: {police} police and {people} people on duty, "
                f"below the minimum of {need.police} police and {need.people} people"
            ],
            description=f"Personel TPS kurang: {people} bertugas ({police} polisi)",
            opened_at=as_utc(r.event.occurred_at),
        )
        picks = [c for c in self.candidates(inc) if c.available and tps.tps_id not in (c.person.tps_ids or ())]
        picks.sort(key=lambda c: (c.fatigued, c.person.role != "reserve", c.distance_km is None, c.distance_km or 0.0))
        inc.facts = {
            "on_duty": people,
            "police_on_duty": police,
            "min_on_duty": {"police": need.police, "people": need.people},
            "dropped_out": {"personnel_id": p.personnel_id, "status": p.status, "at": iso(r.event.occurred_at)},
            "replacements": [c.public(now) for c in picks[:REPLACEMENTS]],
        }
        self._start_system(inc, tps)


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at)
