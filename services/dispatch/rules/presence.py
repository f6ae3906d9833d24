"""Presence and silent posts: check-ins, TPS phases, and the TPS that went quiet."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.dispatch.domain import Personnel, Tps
from services.dispatch.rules.base import CHECKIN_FRESH, SYSTEM, Received, _short_id
from services.dispatch.rules.reports import Reports
from siaga.clock import as_utc, iso
from siaga.events import (
    Category,
    Checkin,
    TpsStatus,
)

DUTY_WINDOW = timedelta(hours=24)
# Days on duty are counted by the date in WIB, the regency's clock; a day with an on-duty check-in
# is a day on duty. A five-day period needs a handful of dates: the newest are kept.
DUTY_DAY_TZ = ZoneInfo("Asia/Jakarta")
KEEP_DUTY_DAYS = 14


def record_duty(stretches: list[list[str]], *, on_duty: bool, was_on_duty: bool, at: datetime) -> list[list[str]]:
    """The on-duty stretches after a check-in at `at`: an on-duty check-in extends the last stretch
    when the person was on duty and checked in within the hour (CHECKIN_FRESH), else starts one;
    any other status ends it there. Stretches ended over 24 h before `at` are dropped."""
    out = [s for s in stretches if at - as_utc(datetime.fromisoformat(s[1])) <= DUTY_WINDOW]
    if not on_duty:
        return out
    stamp = iso(at) or ""
    if was_on_duty and out and timedelta(0) <= at - as_utc(datetime.fromisoformat(out[-1][1])) <= CHECKIN_FRESH:
        out[-1] = [out[-1][0], stamp]
    else:
        out.append([stamp, stamp])
    return out


def record_day(days: list[str], at: datetime) -> list[str]:
    """The dates on duty after an on-duty check-in at `at` (sorted, the newest KEEP_DUTY_DAYS)."""
    day = as_utc(at).astimezone(DUTY_DAY_TZ).date().isoformat()
    if day in days:
        return days
    return sorted({*days, day})[-KEEP_DUTY_DAYS:]


def hours_on_duty(stretches: list[list[str]], now: datetime) -> float:
    """Hours on duty in the 24 h before `now`."""
    since = now - DUTY_WINDOW
    total = timedelta(0)
    for start, end in stretches:
        a, b = max(as_utc(datetime.fromisoformat(start)), since), min(as_utc(datetime.fromisoformat(end)), now)
        if b > a:
            total += b - a
    return total.total_seconds() / 3600


class Presence(Reports):
    """Who is on duty where, what phase a TPS is in, and silence."""

    def _checkin(self, r: Received, tps: Tps, p: Checkin) -> None:
        now, occurred = self.clock.now(), as_utc(r.event.occurred_at)
        person = self.store.personnel(p.personnel_id)
        if person is None:
            person = Personnel(personnel_id=p.personnel_id, name=p.personnel_id, tps_ids=[tps.tps_id])
        if person.last_checkin_at is None or occurred >= as_utc(person.last_checkin_at):
            was_on_duty = person.status == "on_duty"
            person.duty = record_duty(
                list(person.duty or []), on_duty=p.status == "on_duty", was_on_duty=was_on_duty, at=occurred
            )
            if p.status == "on_duty":
                person.duty_days = record_day(list(person.duty_days or []), occurred)
            person.status, person.last_checkin_at = p.status, occurred
            if p.battery is not None:
                person.battery = p.battery
            if p.location is not None:  # where to send them from (rules/orders.py)
                person.lat, person.lon = p.location.lat, p.location.lon
        self.store.save_personnel(person)
        checkins = dict(tps.checkins or {})
        prior = checkins.get(p.personnel_id)
        if not prior or occurred >= as_utc(datetime.fromisoformat(prior["at"])):
            # What the dashboard counts per kecamatan (rules/base.py duty_counts): the status, the
            # days on duty, and the fatigue flag as of this check-in. A new check-in replaces the
            # entry, and with it a `lapsed` mark (rules/duty.py).
            entry: dict[str, Any] = {"status": p.status, "at": iso(occurred), "battery": p.battery}
            if person.duty_days:
                entry["days"] = len(person.duty_days)
            if p.status == "on_duty" and hours_on_duty(list(person.duty or []), occurred) > self.policy.max_duty_hours:
                entry["fatigued"] = True
            checkins[p.personnel_id] = entry
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

    def _silent_posts(self, now: datetime) -> int:
        cutoff = now - timedelta(minutes=self.policy.silent_post_minutes)
        n = 0
        for tps in self.store.silent_candidates([p.value for p in self.policy.operating_phases], cutoff):
            tps.silent = True
            last = iso(tps.last_checkin_at) or "never"
            inc = self._new_system_incident(
                tps,
                Category.SILENT_POST,
                incident_id=_short_id("SIL", tps.tps_id, iso(now) or ""),
                why=[
                    f"no check-in from the TPS's personnel for {self.policy.silent_post_minutes:g} minutes "
                    f"(last: {last})"
                ],
                description="Pos diam: personel belum melapor",
                opened_at=now,
            )
            self._start_system(inc, tps)
            self._tps_changed(tps)
            n += 1
        return n
