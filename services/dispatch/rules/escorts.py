"""Ballot-box escorts (SPEC section 9): boxes leave a TPS for the PPK, and must arrive in time.

An escort lives on its TPS (`Tps.escorts`, so it has the TPS's owner and is loaded with it): one
item per departure, with the boxes, the escorts, where to, when it left and when it is due (the
expected travel time plus the policy's `escort_grace_minutes`). Past that, with boxes still on the
road, an `escort_overdue` incident opens at the TPS (base severity in the policy) and follows the
ladder like any other. The arrival of the boxes resolves it. The item keeps the custody chain —
who took which boxes from where to where, when they left and when they arrived — and the overdue
incident's timeline carries it too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.dispatch.domain import Incident, Tps
from services.dispatch.rules.base import Received, _short_id
from services.dispatch.rules.presence import Presence
from siaga.clock import as_utc, iso
from siaga.events import Category, EscortArrived, EscortDeparted

IN_TRANSIT, ARRIVED = "in_transit", "arrived"
KEEP_ARRIVED = 20  # arrived escorts kept on a TPS (a TPS sends a handful a day)


def in_transit(tps: Tps) -> list[dict[str, Any]]:
    """The TPS's escorts whose boxes are not all in."""
    return [e for e in tps.escorts or () if e["state"] == IN_TRANSIT]


class Escorts(Presence):
    """Departures, arrivals and overdue escorts."""

    def _escort_departed(self, r: Received, tps: Tps, p: EscortDeparted) -> None:
        occurred = as_utc(r.event.occurred_at)
        escort_id = _short_id("ESC", tps.tps_id, r.event.event_id)
        expected = occurred + timedelta(minutes=p.expected_minutes)
        escort = {
            "escort_id": escort_id,
            "state": IN_TRANSIT,
            "box_ids": list(p.box_ids),
            "arrived_box_ids": [],
            "from_tps": tps.tps_id,
            "to": p.to,
            "personnel_ids": list(p.personnel_ids),
            "departed_at": iso(occurred),
            "expected_at": iso(expected),
            "due_at": iso(expected + timedelta(minutes=self.policy.escort_grace_minutes)),
            "reported_by": f"device:{r.device_id}",
            "incident_id": None,
            "arrived_at": None,
            "arrived_to": None,
            "received_by": [],
        }
        tps.escorts = [*(tps.escorts or []), escort]
        self._tps_changed(tps)

    def _escort_arrived(self, r: Received, tps: Tps, p: EscortArrived) -> None:
        occurred = as_utc(r.event.occurred_at)
        boxes = set(p.box_ids)
        escorts = [dict(e) for e in tps.escorts or ()]
        matched = False
        for e in escorts:
            if e["state"] != IN_TRANSIT or not boxes & set(e["box_ids"]):
                continue
            matched = True
            e["arrived_box_ids"] = sorted({*e["arrived_box_ids"], *(boxes & set(e["box_ids"]))})
            if set(e["arrived_box_ids"]) < set(e["box_ids"]):
                self._on_overdue(e, "escort_partly_arrived", r, p, occurred)
                continue
            e |= {"state": ARRIVED, "arrived_at": iso(occurred), "arrived_to": p.at}
            e["received_by"] = list(p.personnel_ids)
            self._on_overdue(e, "escort_arrived", r, p, occurred)
        if not matched:
            # Boxes arrived that no departure names: kept, so the custody chain shows the gap.
            escorts.append(
                {
                    "escort_id": _short_id("ESC", tps.tps_id, r.event.event_id),
                    "state": ARRIVED,
                    "box_ids": sorted(boxes),
                    "arrived_box_ids": sorted(boxes),
                    "from_tps": tps.tps_id,
                    "to": p.at,
                    "personnel_ids": [],
                    "departed_at": None,
                    "expected_at": None,
                    "due_at": None,
                    "reported_by": f"device:{r.device_id}",
                    "incident_id": None,
                    "arrived_at": iso(occurred),
                    "arrived_to": p.at,
                    "received_by": list(p.personnel_ids),
                    "note": "no departure on record for these boxes",
                }
            )
        arrived = [e for e in escorts if e["state"] == ARRIVED]
        tps.escorts = [e for e in escorts if e["state"] != ARRIVED] + arrived[-KEEP_ARRIVED:]
        self._tps_changed(tps)

    def _on_overdue(
        self, escort: dict[str, Any], action: str, r: Received, p: EscortArrived, occurred: datetime
    ) -> None:
        """Write an arrival on the overdue incident's timeline; a whole arrival resolves it."""
        inc = self.store.incident(escort["incident_id"]) if escort.get("incident_id") else None
        if inc is None:
            return
        actor = f"device:{r.device_id}"
        detail = {
            "escort_id": escort["escort_id"],
            "box_ids": sorted(set(p.box_ids) & set(escort["box_ids"])),
            "at": p.at,
            "personnel_ids": list(p.personnel_ids),
            "occurred_at": iso(occurred),
            "late_minutes": round((occurred - datetime.fromisoformat(escort["expected_at"])).total_seconds() / 60, 1),
        }
        self._timeline(inc, actor, action, detail)
        if action == "escort_arrived" and inc.status != "resolved":
            self._resolve(inc, actor=actor, resolution=f"kotak suara tiba di {p.at}", at=occurred)
        else:
            self._changed(inc)

    def _escorts_due(self, now: datetime) -> int:
        """Open an `escort_overdue` incident for each escort past its due time with boxes on the road."""
        n = 0
        for tps, escort_id in self.store.overdue_escorts(now):
            escorts = [dict(e) for e in tps.escorts or ()]
            escort = next((e for e in escorts if e["escort_id"] == escort_id), None)
            if escort is None or escort["state"] != IN_TRANSIT or escort.get("incident_id"):
                continue
            inc = self._overdue_incident(tps, escort, now)
            escort["incident_id"] = inc.id
            tps.escorts = escorts
            self._tps_changed(tps)
            n += 1
        return n

    def _overdue_incident(self, tps: Tps, escort: dict[str, Any], now: datetime) -> Incident:
        missing = [b for b in escort["box_ids"] if b not in escort["arrived_box_ids"]]
        inc = self._new_system_incident(
            tps,
            Category.ESCORT_OVERDUE,
            incident_id=_short_id("ESCO", tps.tps_id, escort["escort_id"]),
            why=[
                f"boxes {', '.join(missing)} not at {escort['to']} by {escort['expected_at']} "
                f"plus {self.policy.escort_grace_minutes:g} minutes' grace"
            ],
            description=f"Kotak suara {', '.join(missing)} belum tiba di {escort['to']}",
            opened_at=now,
        )
        # The custody chain so far: who took which boxes from where, to where, when.
        self._timeline(
            inc,
            escort["reported_by"],
            "escort_departed",
            {k: escort[k] for k in ("escort_id", "box_ids", "from_tps", "to", "personnel_ids", "departed_at")}
            | {"expected_at": escort["expected_at"], "missing_box_ids": missing},
        )
        self._start_system(inc, tps)
        return inc
