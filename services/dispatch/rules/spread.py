"""Spread: several incidents of one category in one kecamatan become an area incident.

A kecamatan is its name within its kabupaten: names repeat across the country (SPEC section 10)."""

from __future__ import annotations

from datetime import timedelta

from services.dispatch.domain import Incident
from services.dispatch.rules.base import SYSTEM, _short_id
from services.dispatch.rules.ladder import Ladder
from siaga.clock import as_utc
from siaga.events import (
    Category,
    Severity,
)


class Spread(Ladder):
    """Spread detection, a local decision of the kecamatan's partition owner."""

    def _detect_spread(self, inc: Incident) -> None:
        rule = self.policy.spread
        if Category(inc.category) in rule.categories_excluded or inc.tps_id is None:
            return
        area = self.store.open_area(inc.kecamatan, inc.category, inc.kabupaten)
        if area is not None:
            self._adopt(area, inc)
            return
        since = as_utc(inc.opened_at) - timedelta(minutes=rule.window_minutes)
        siblings = [
            i
            for i in self.store.open_in_kecamatan(inc.kecamatan, inc.category, since, inc.kabupaten)
            if i.parent_id is None
        ]
        if len({i.tps_id for i in siblings}) < rule.min_incidents:
            return
        now = self.clock.now()
        worst = max((Severity(i.severity) for i in siblings), key=lambda s: s.rank)
        severity = worst.step_up(rule.severity_step)
        area = Incident(
            id=_short_id("AREA", inc.kecamatan, inc.category, siblings[0].id),
            tps_id=None,
            kecamatan=inc.kecamatan,
            kabupaten=inc.kabupaten,
            provinsi=inc.provinsi,
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
