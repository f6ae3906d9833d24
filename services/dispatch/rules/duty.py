"""Personnel on duty (SPEC section 9, "keep personnel healthy"): a TPS below its minimums.

A TPS in an operating phase is covered while both minimums of the policy's `min_on_duty` hold:
`police` (on-duty people whose role is not `linmas`) and `people` (everyone on duty), counted from
fresh check-ins as the dashboard counts them. When a check-in `unwell` or `off_duty` takes it
below either, or someone on duty goes silent (no check-in for CHECKIN_FRESH) while others at the TPS
still check in, a `coverage` incident opens at the TPS with replacement suggestions: the nearest
free people of the kecamatan who do not cover it, reserves first. A check-in that brings the TPS
back to its minimums resolves the incident.
"""

from __future__ import annotations

from datetime import datetime

from services.dispatch.domain import Tps
from services.dispatch.rules.base import SYSTEM, Received, _short_id
from services.dispatch.rules.orders import NOT_SENT_TO, Orders
from services.dispatch.store import CHECKIN_FRESH
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
        occurred = as_utc(r.event.occurred_at)
        cause = f"{p.personnel_id} checked in {p.status}"
        self._open_coverage(
            tps,
            p.personnel_id,
            p.status,
            iso(occurred) or "",
            cause,
            police,
            people,
            seed=r.event.event_id,
            opened_at=occurred,
        )

    def _lapsed_posts(self, now: datetime) -> int:
        """People on duty whose check-ins stopped while others' did not: mark them, and open a coverage
        incident if that leaves their TPS short. A post where everyone fell silent is a silent post's."""
        n = 0
        operating = {ph.value for ph in self.policy.operating_phases}
        for tps in self.store.lapsed_posts(now, CHECKIN_FRESH):
            checkins = dict(tps.checkins or {})
            lapsed: list[tuple[str, str]] = []
            for pid, info in checkins.items():
                at = info.get("at") if isinstance(info, dict) else None
                if not at or info.get("status") != "on_duty" or info.get("lapsed"):
                    continue
                if now - as_utc(_parse(at)) > CHECKIN_FRESH:
                    checkins[pid] = {**info, "lapsed": True}
                    lapsed.append((pid, at))
            if not lapsed:
                continue
            tps.checkins = checkins
            self._tps_changed(tps)
            n += 1
            if tps.phase not in operating or tps.silent:
                continue
            police, people = self.on_duty_at(tps)
            need = self.policy.min_on_duty
            if people == 0 or (police >= need.police and people >= need.people):
                continue
            if any(i.category == Category.COVERAGE.value for i in self.store.open_at_tps(tps.tps_id)):
                continue
            pid, at = min(lapsed, key=lambda item: item[1])
            why = f"{pid} went silent (last on-duty check-in {at})"
            self._open_coverage(tps, pid, "silent", at, why, police, people, seed=f"{pid}@{at}", opened_at=now)
        return n

    def _open_coverage(
        self,
        tps: Tps,
        personnel_id: str,
        status: str,
        at: str,
        cause: str,
        police: int,
        people: int,
        *,
        seed: str,
        opened_at: datetime,
    ) -> None:
        now, need = self.clock.now(), self.policy.min_on_duty
        inc = self._new_system_incident(
            tps,
            Category.COVERAGE,
            incident_id=_short_id("COV", tps.tps_id, seed),
            why=[
                f"{cause}: {police} police and {people} people on duty, "
                f"below the minimum of {need.police} police and {need.people} people"
            ],
            description=f"Personel TPS kurang: {people} bertugas ({police} polisi)",
            opened_at=opened_at,
        )
        picks = [c for c in self.candidates(inc) if c.available and tps.tps_id not in (c.person.tps_ids or ())]
        picks.sort(key=lambda c: (c.fatigued, c.person.role != "reserve", c.distance_km is None, c.distance_km or 0.0))
        inc.facts = {
            "on_duty": people,
            "police_on_duty": police,
            "min_on_duty": {"police": need.police, "people": need.people},
            "dropped_out": {"personnel_id": personnel_id, "status": status, "at": at},
            "replacements": [c.public(now) for c in picks[:REPLACEMENTS]],
        }
        self._start_system(inc, tps)


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at)
