"""Field orders (SPEC section 9): send a responder, re-send once, flag the unanswered, take the ack.

An order lives on its incident (`Incident.orders`, one dict an order, JSON in the row), so it is
loaded, written back and announced with the incident, and its re-send is one more deadline of the
incident's timer (`order_due_at`). The items for devices' inboxes are the typed field orders of
siaga.contracts, emitted like every other message; the owner's state writes them to the inbox
table in the batch's transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.dispatch.domain import Incident, Personnel, Tps
from services.dispatch.notifier.routing import AlertRouting
from services.dispatch.rules.base import CHECKIN_FRESH, NotAllowed, _short_id
from services.dispatch.rules.operator import Operator
from services.dispatch.rules.presence import hours_on_duty
from services.dispatch.store import OPEN_STATUSES
from siaga.clock import as_utc, iso
from siaga.contracts import Assignment, HelpOnTheWay, OrderTarget, TargetKind
from siaga.events import Severity
from siaga.phones import normalise_phone

NOT_SENT_TO = frozenset({"linmas"})  # civil guards keep their TPS; orders go to police and reserves
EARTH_RADIUS_KM = 6371.0088


class UnknownPerson(LookupError):
    """An assignment names a person who is not on the roster (answered 404)."""


class OrderState:
    SENT = "sent"
    RESENT = "resent"
    ACKNOWLEDGED = "acknowledged"
    UNANSWERED = "unanswered"


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points, in kilometres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class Candidate:
    """A person who could be sent, as the operator sees them."""

    person: Personnel
    distance_km: float | None
    located_by: str | None  # "checkin" (their last check-in's location) or "tps" (the TPS they cover)
    assignment: dict[str, str] | None  # their order on another open incident, if any
    hours_on_duty: float = 0.0  # in the last 24 h
    fatigued: bool = False  # over the policy's max_duty_hours

    @property
    def available(self) -> bool:
        return self.assignment is None

    def public(self, now: datetime) -> dict[str, Any]:
        p = self.person
        age = None if p.last_checkin_at is None else (now - as_utc(p.last_checkin_at)).total_seconds() / 60
        return {
            "personnel_id": p.personnel_id,
            "name": p.name,
            "unit": p.unit,
            "role": p.role,
            "tps_ids": list(p.tps_ids or []),
            "status": p.status,
            "battery": p.battery,
            "last_checkin_at": iso(p.last_checkin_at),
            "checkin_age_minutes": None if age is None else round(age, 1),
            "distance_km": None if self.distance_km is None else round(self.distance_km, 3),
            "located_by": self.located_by,
            "available": self.available,
            "assignment": self.assignment,
            "hours_on_duty_24h": round(self.hours_on_duty, 1),
            "fatigued": self.fatigued,
        }


def busy_people(incidents: Iterable[Incident]) -> dict[str, dict[str, str]]:
    """personnel id -> {incident_id, order_id} of their order on an open incident."""
    out: dict[str, dict[str, str]] = {}
    for inc in incidents:
        if inc.status not in OPEN_STATUSES:
            continue
        for o in inc.orders or ():
            out[o["personnel_id"]] = {"incident_id": inc.id, "order_id": o["order_id"]}
    return out


def _where(person: Personnel, tps_of: Mapping[str, Tps]) -> tuple[tuple[float, float] | None, str | None]:
    if person.lat is not None and person.lon is not None:
        return (person.lat, person.lon), "checkin"
    for tps_id in person.tps_ids or ():
        t = tps_of.get(tps_id)
        if t is not None and t.lat is not None and t.lon is not None:
            return (t.lat, t.lon), "tps"
    return None, None


def ready(person: Personnel, now: datetime) -> str | None:
    """Why this person cannot be sent now (None: they can): on duty, checked in within the hour."""
    if person.role in NOT_SENT_TO:
        return f"{person.personnel_id} is {person.role}, who stay at their TPS"
    if person.last_checkin_at is None:
        return f"{person.personnel_id} has not checked in"
    if person.status != "on_duty":
        return f"{person.personnel_id} is {person.status}"
    if now - as_utc(person.last_checkin_at) > CHECKIN_FRESH:
        return f"{person.personnel_id} has not checked in for over {CHECKIN_FRESH.total_seconds() / 60:g} minutes"
    return None


def rank_candidates(
    incident: Incident,
    *,
    people: Iterable[Personnel],
    tps_of: Mapping[str, Tps],
    busy: Mapping[str, dict[str, str]],
    now: datetime,
    max_duty_hours: float = 24.0,
) -> list[Candidate]:
    """Who could go to the incident: the ready people, the rested nearest first, then the fatigued
    (over `max_duty_hours` in the last 24 h), then those busy elsewhere.

    Distance from their last check-in location, else from the TPS they cover, to the incident's TPS
    (an area incident has no place: nobody has a distance there, and they keep roster order).
    """
    target = tps_of.get(incident.tps_id) if incident.tps_id else None
    spot = (target.lat, target.lon) if target and target.lat is not None and target.lon is not None else None
    out: list[Candidate] = []
    for p in people:
        if ready(p, now) is not None:
            continue
        where, how = _where(p, tps_of)
        distance = haversine_km(where, spot) if where and spot else None
        assignment = busy.get(p.personnel_id)
        hours = hours_on_duty(list(p.duty or []), now)
        out.append(Candidate(p, distance, how, assignment, hours, hours > max_duty_hours))
    out.sort(
        key=lambda c: (
            not c.available,
            c.fatigued,
            c.distance_km is None,
            c.distance_km or 0.0,
            c.person.personnel_id,
        )
    )
    return out


class Orders(Operator):
    """What the command center sends to the field, and what the field answers."""

    def candidates(self, inc: Incident) -> list[Candidate]:
        people = self.store.kecamatan_personnel(inc.kecamatan, inc.kabupaten)
        tps_of = {t: found for p in people for t in p.tps_ids or () if (found := self.store.tps(t)) is not None}
        if inc.tps_id and (here := self.store.tps(inc.tps_id)) is not None:
            tps_of[inc.tps_id] = here
        busy = busy_people(self.store.open_of_kecamatan(inc.kecamatan))
        return rank_candidates(
            inc,
            people=people,
            tps_of=tps_of,
            busy=busy,
            now=self.clock.now(),
            max_duty_hours=self.policy.max_duty_hours,
        )

    def assign(
        self,
        incident_id: str,
        *,
        actor: str,
        personnel_id: str | None,
        note: str = "",
        eta_minutes: int | None = None,
    ) -> dict[str, Any]:
        """Send a person (or, with no id, the nearest available one) to the incident; returns the order.

        Raises KeyError (no incident), UnknownPerson, NotAllowed (resolved, nobody available, the
        person not on duty or already sent elsewhere).
        """
        inc = self._get(incident_id)
        if inc.status not in OPEN_STATUSES:
            raise NotAllowed("the incident is resolved")
        ranked = self.candidates(inc)
        now = self.clock.now()
        if personnel_id is None:
            pick = next((c for c in ranked if c.available), None)
            if pick is None:
                raise NotAllowed(f"nobody in {inc.kecamatan} is checked in, on duty and free to send")
        else:
            person = self.store.personnel(personnel_id)
            if person is None:
                raise UnknownPerson(f"no person {personnel_id!r} on the roster")
            why = ready(person, now)
            if why is not None:
                raise NotAllowed(why)
            busy = busy_people(self.store.open_of_kecamatan(inc.kecamatan)).get(personnel_id)
            if busy is not None:
                raise NotAllowed(f"{personnel_id} is already sent to {busy['incident_id']}")
            pick = next(
                (c for c in ranked if c.person.personnel_id == personnel_id), Candidate(person, None, None, None)
            )
        person = pick.person
        order_id = _short_id("ORD", inc.id, person.personnel_id, iso(now) or "", str(len(inc.orders or ())))
        help_id = f"{order_id}-H"
        order: dict[str, Any] = {
            "order_id": order_id,
            "personnel_id": person.personnel_id,
            "name": person.name,
            "unit": person.unit,
            "distance_km": None if pick.distance_km is None else round(pick.distance_km, 3),
            "eta_minutes": eta_minutes,
            "note": note,
            "issued_at": iso(now),
            "issued_by": actor,
            "attempt": 1,
            "state": OrderState.SENT,
            "acknowledged_at": None,
            "acknowledged_by": None,
            "help_id": help_id if inc.tps_id else None,
            "due_at": iso(now + self._ack_within()),
        }
        inc.orders = [*(inc.orders or ()), order]
        self._timeline(
            inc,
            actor,
            "order_sent",
            {k: order[k] for k in ("order_id", "personnel_id", "name", "distance_km", "eta_minutes", "note")}
            | {"nearest": personnel_id is None},
        )
        self._send_assignment(inc, order, actor=actor, at=now)
        if inc.tps_id:
            self.store.emit(
                HelpOnTheWay(
                    order_id=help_id,
                    target=OrderTarget(kind=TargetKind.TPS, id=inc.tps_id),
                    actor=actor,
                    issued_at=now,
                    incident_id=inc.id,
                    assignment_id=order_id,
                    eta_minutes=eta_minutes,
                )
            )
        self._changed(inc)
        return order

    def acknowledge_order(self, incident_id: str, *, order_id: str, actor: str, note: str = "") -> None:
        """A device acknowledged an inbox item of this incident: on the timeline; an order stops its re-send.

        Raises KeyError for an incident or item it does not know. A second acknowledgement of an
        order changes nothing.
        """
        inc = self._get(incident_id)
        now = self.clock.now()
        for o in inc.orders or ():
            if o["order_id"] == order_id:
                if o["state"] == OrderState.ACKNOWLEDGED:
                    return
                late = o["state"] == OrderState.UNANSWERED
                o.update(state=OrderState.ACKNOWLEDGED, acknowledged_at=iso(now), acknowledged_by=actor, due_at=None)
                inc.orders = list(inc.orders)
                self._timeline(
                    inc,
                    actor,
                    "order_acknowledged",
                    {"order_id": order_id, "personnel_id": o["personnel_id"], "note": note, "late": late},
                )
                self._changed(inc)
                return
            if o.get("help_id") == order_id:
                self._timeline(
                    inc, actor, "notice_acknowledged", {"order_id": order_id, "kind": "help_on_the_way", "note": note}
                )
                self._changed(inc)
                return
        raise KeyError(order_id)

    def reply_ok(self, incident_id: str, *, personnel_id: str | None, phone: str, actor: str) -> str:
        """`OK <code>` from a phone (SPEC section 11): "order" when it acknowledged the sender's order
        for the incident (the newest unanswered; one already acknowledged is a no-op), else
        "incident" when the sender is a recipient of the incident's current level: at level 0 the
        personnel of its TPS, above it a number the alert routing gives that level. Raises
        NotAllowed otherwise, and for a resolved incident."""
        inc = self._get(incident_id)
        if inc.status == "resolved":
            raise NotAllowed("the incident is resolved")
        mine = [o for o in inc.orders or () if personnel_id is not None and o["personnel_id"] == personnel_id]
        waiting = [o for o in mine if o["state"] != OrderState.ACKNOWLEDGED]
        if waiting:
            self.acknowledge_order(incident_id, order_id=waiting[-1]["order_id"], actor=actor, note="OK by reply")
            return "order"
        if mine:
            return "order"
        if self._recipient_of_level(inc, personnel_id, phone):
            self.acknowledge(incident_id, actor=actor)
            return "incident"
        raise NotAllowed(f"{actor} has no order on this incident and is not a recipient of level {inc.level}")

    def _recipient_of_level(self, inc: Incident, personnel_id: str | None, phone: str) -> bool:
        if inc.level == 0:
            person = self.store.personnel(personnel_id) if personnel_id else None
            return person is not None and inc.tps_id is not None and inc.tps_id in (person.tps_ids or ())
        try:
            routing = AlertRouting.model_validate(self.policy.alerts or {})
        except ValidationError:  # checked when the policy was put in force; never trust it blindly
            return False
        kecamatan = inc.kecamatan.casefold()
        severity = Severity(inc.severity)
        return any(
            r.channel in ("sms", "whatsapp")
            and normalise_phone(r.target) == phone
            and inc.level in r.levels
            and (not r.kecamatan or kecamatan in {k.casefold() for k in r.kecamatan})
            and severity.rank >= r.min_severity.rank
            for r in routing.recipients
        )

    def _ack_within(self) -> timedelta:
        return timedelta(minutes=self.policy.order_ack_minutes)

    def _send_assignment(self, inc: Incident, order: dict[str, Any], *, actor: str, at: datetime) -> None:
        self.store.emit(
            Assignment(
                order_id=order["order_id"],
                target=OrderTarget(kind=TargetKind.PERSON, id=order["personnel_id"]),
                actor=actor,
                issued_at=at,
                incident_id=inc.id,
                personnel_id=order["personnel_id"],
                note=order["note"],
                eta_minutes=order["eta_minutes"],
                attempt=order["attempt"],
            )
        )

    def _orders_due(self, inc: Incident, now: datetime) -> int:
        """Re-send each order due once; flag one due after its re-send as unanswered. How many acted."""
        n = 0
        for o in inc.orders or ():
            due = o.get("due_at")
            if not due or datetime.fromisoformat(due) > now:
                continue
            if o["state"] == OrderState.SENT:
                o.update(state=OrderState.RESENT, attempt=2, due_at=iso(now + self._ack_within()))
                self._timeline(inc, "siaga", "order_resent", {"order_id": o["order_id"], "attempt": 2})
                self._send_assignment(inc, o, actor="siaga", at=now)
            else:
                o.update(state=OrderState.UNANSWERED, due_at=None)
                self._timeline(
                    inc,
                    "siaga",
                    "order_unanswered",
                    {"order_id": o["order_id"], "personnel_id": o["personnel_id"], "attempts": o["attempt"]},
                )
            n += 1
        if n:
            inc.orders = list(inc.orders)
            self._changed(inc)
        return n
