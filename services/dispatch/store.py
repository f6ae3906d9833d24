"""Where the engine keeps incidents and the registry, and how it announces changes.

The engine only talks to this protocol. `MemoryStore` backs the unit tests (an hour of policy in a
millisecond); the real one is `services.dispatch.state.OwnedState`: the partition owner's state in
memory, written back to the database in one transaction a batch, the outbox included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.dispatch.domain import Correction, Incident, Personnel, SilenceRule, Tps, order_due_at
from siaga.audit import chain_hash, entry_content
from siaga.clock import as_utc
from siaga.contracts import Message
from siaga.models import TimelineEntry
from siaga.short_codes import new_code

OPEN_STATUSES = ("open", "escalated", "acknowledged")
CHECKIN_FRESH = timedelta(minutes=60)  # a check-in this old still counts its person on duty


class Store(Protocol):
    def processed(self, event_id: str) -> bool: ...
    def mark_processed(self, event_id: str, at: datetime) -> None: ...
    def tps(self, tps_id: str) -> Tps | None: ...
    def save_tps(self, tps: Tps) -> None: ...
    def personnel(self, personnel_id: str) -> Personnel | None: ...
    def save_personnel(self, person: Personnel) -> None: ...
    def incident(self, incident_id: str) -> Incident | None: ...
    def incident_for_report(self, report_id: str) -> Incident | None: ...
    def link_report(self, report_id: str, incident_id: str) -> None: ...
    def add_incident(self, incident: Incident) -> None:
        """Take a new incident; one without a `code` is given a short code (siaga.short_codes)."""
        ...

    def save_incident(self, incident: Incident) -> None: ...
    def open_incident(self, tps_id: str, category: str, since: datetime) -> Incident | None: ...
    def open_at_tps(self, tps_id: str) -> list[Incident]: ...
    def open_at_many(self, tps_ids: Sequence[str]) -> dict[str, list[Incident]]: ...
    def open_in_kecamatan(self, kecamatan: str, category: str, since: datetime, kabupaten: str) -> list[Incident]:
        """Open TPS incidents of the category in the kecamatan (of that kabupaten: names repeat) since then."""
        ...

    def open_area(self, kecamatan: str, category: str, kabupaten: str) -> Incident | None: ...
    def open_of_kecamatan(self, kecamatan: str) -> list[Incident]:
        """Every open incident of the kecamatan (TPS and area incidents)."""
        ...

    def kecamatan_personnel(self, kecamatan: str, kabupaten: str) -> list[Personnel]:
        """The roster of the kecamatan (of that kabupaten): everyone who covers one of its TPS."""
        ...

    def due(self, now: datetime) -> list[Incident]: ...
    def silent_candidates(self, phases: Sequence[str], seen_before: datetime) -> list[Tps]: ...
    def overdue_escorts(self, now: datetime) -> list[tuple[Tps, str]]:
        """(TPS, escort id) of each escort in transit whose `due_at` has passed and has no incident yet."""
        ...

    def lapsed_posts(self, now: datetime, fresh: timedelta) -> list[Tps]:
        """TPS where an on-duty check-in not yet marked `lapsed` is older than `fresh` (rules/duty.py)."""
        ...

    def reload_tps(self, tps_ids: Sequence[str]) -> list[Tps]:
        """Take these TPS's registry fields (name, place, rawan, assigned) as the registry holds them now."""
        ...

    def timeline(
        self, incident: Incident, *, at: datetime, actor: str, action: str, detail: dict[str, Any]
    ) -> None: ...
    def emit(self, message: Message) -> None:
        """Announce a message; it goes on the bus only if the transaction commits."""
        ...

    def record_correction(self, correction: Correction) -> None:
        """Keep an operator's correction (a labelled example); written with the transaction."""
        ...

    def silences(self) -> Sequence[SilenceRule]:
        """The silences not yet over (the engine asks each whether it is in force now)."""
        ...

    def holding(self) -> list[Incident]:
        """The open incidents that hold alerts back for a silence."""
        ...


class MemoryStore:
    """The store in memory, for unit tests of the engine."""

    def __init__(self) -> None:
        self.tps_rows: dict[str, Tps] = {}
        self.people: dict[str, Personnel] = {}
        self.incidents: dict[str, Incident] = {}
        self.reports: dict[str, str] = {}
        self.done: set[str] = set()
        self.entries: dict[str, list[TimelineEntry]] = {}
        self.out: list[tuple[str, str | None, dict[str, Any]]] = []
        self.corrections: list[Correction] = []
        self.silence_rules: list[SilenceRule] = []

    def silences(self) -> Sequence[SilenceRule]:
        return self.silence_rules

    def holding(self) -> list[Incident]:
        return [i for i in self._open() if i.held_alerts]

    def processed(self, event_id: str) -> bool:
        return event_id in self.done

    def mark_processed(self, event_id: str, at: datetime) -> None:
        self.done.add(event_id)

    def tps(self, tps_id: str) -> Tps | None:
        return self.tps_rows.get(tps_id)

    def save_tps(self, tps: Tps) -> None:
        self.tps_rows[tps.tps_id] = tps

    def personnel(self, personnel_id: str) -> Personnel | None:
        return self.people.get(personnel_id)

    def save_personnel(self, person: Personnel) -> None:
        self.people[person.personnel_id] = person

    def incident(self, incident_id: str) -> Incident | None:
        return self.incidents.get(incident_id)

    def incident_for_report(self, report_id: str) -> Incident | None:
        iid = self.reports.get(report_id)
        return self.incidents.get(iid) if iid else None

    def link_report(self, report_id: str, incident_id: str) -> None:
        self.reports[report_id] = incident_id

    def add_incident(self, incident: Incident) -> None:
        if incident.code is None:  # one partition: block 0 (the real store: OwnedState._new_code)
            held = {i.code for i in self._open()}
            incident.code = new_code(0, incident.id, held.__contains__)
        self.incidents[incident.id] = incident

    def save_incident(self, incident: Incident) -> None:
        self.incidents[incident.id] = incident

    def _open(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.status in OPEN_STATUSES]

    def open_incident(self, tps_id: str, category: str, since: datetime) -> Incident | None:
        found = [
            i for i in self._open() if i.tps_id == tps_id and i.category == category and as_utc(i.opened_at) >= since
        ]
        return max(found, key=lambda i: as_utc(i.opened_at)) if found else None

    def open_at_tps(self, tps_id: str) -> list[Incident]:
        return [i for i in self._open() if i.tps_id == tps_id]

    def open_at_many(self, tps_ids: Sequence[str]) -> dict[str, list[Incident]]:
        return {t: self.open_at_tps(t) for t in tps_ids}

    def open_in_kecamatan(self, kecamatan: str, category: str, since: datetime, kabupaten: str) -> list[Incident]:
        return sorted(
            (
                i
                for i in self._open()
                if i.kecamatan == kecamatan
                and i.kabupaten == kabupaten
                and i.category == category
                and i.tps_id is not None
                and as_utc(i.opened_at) >= since
            ),
            key=lambda i: i.opened_at,
        )

    def open_area(self, kecamatan: str, category: str, kabupaten: str) -> Incident | None:
        return next(
            (
                i
                for i in self._open()
                if i.tps_id is None and i.kecamatan == kecamatan and i.kabupaten == kabupaten and i.category == category
            ),
            None,
        )

    def open_of_kecamatan(self, kecamatan: str) -> list[Incident]:
        return [i for i in self._open() if i.kecamatan == kecamatan]

    def kecamatan_personnel(self, kecamatan: str, kabupaten: str) -> list[Personnel]:
        here = {t for t, row in self.tps_rows.items() if row.kecamatan == kecamatan and row.kabupaten == kabupaten}
        return [p for p in self.people.values() if here.intersection(p.tps_ids or ())]

    def due(self, now: datetime) -> list[Incident]:
        return [
            i
            for i in self._open()
            if (i.escalate_at is not None and as_utc(i.escalate_at) <= now)
            or (i.ack_deadline is not None and as_utc(i.ack_deadline) <= now)
            or ((d := order_due_at(i)) is not None and d <= now)
        ]

    def silent_candidates(self, phases: Sequence[str], seen_before: datetime) -> list[Tps]:
        return [
            t
            for t in self.tps_rows.values()
            if t.phase in phases
            and not t.silent
            and t.assigned > 0
            and t.last_seen_at is not None
            and as_utc(t.last_seen_at) <= seen_before
        ]

    def overdue_escorts(self, now: datetime) -> list[tuple[Tps, str]]:
        return [(t, eid) for t in self.tps_rows.values() for due, eid in escort_timers(t) if due <= now]

    def lapsed_posts(self, now: datetime, fresh: timedelta) -> list[Tps]:
        return [t for t in self.tps_rows.values() if (due := lapse_due(t, fresh)) is not None and due <= now]

    def reload_tps(self, tps_ids: Sequence[str]) -> list[Tps]:
        return [self.tps_rows[t] for t in tps_ids if t in self.tps_rows]  # the tests change the rows themselves

    def timeline(self, incident: Incident, *, at: datetime, actor: str, action: str, detail: dict[str, Any]) -> None:
        entries = self.entries.setdefault(incident.id, [])
        prev = entries[-1].hash if entries else ""
        e = TimelineEntry(
            incident_id=incident.id,
            seq=len(entries) + 1,
            at=at,
            actor=actor,
            action=action,
            detail=detail,
            prev_hash=prev,
        )
        e.hash = chain_hash(prev, entry_content(e))
        entries.append(e)

    def emit(self, message: Message) -> None:
        # Dumped as the bus would carry it, so a test also sees the message serialize.
        self.out.append((message.TOPIC, message.bus_key(), message.model_dump(mode="json")))

    def record_correction(self, correction: Correction) -> None:
        self.corrections.append(correction)

    # -- for tests
    def emitted(self, topic: str) -> list[dict[str, Any]]:
        return [v for t, _, v in self.out if t == topic]


def escort_timers(tps: Tps) -> list[tuple[datetime, str]]:
    """(due, escort id) of the TPS's escorts that wait for their boxes and have no overdue incident yet."""
    return [
        (as_utc(datetime.fromisoformat(e["due_at"])), e["escort_id"])
        for e in tps.escorts or ()
        if e["state"] == "in_transit" and not e.get("incident_id") and e.get("due_at")
    ]


def lapse_due(tps: Tps, fresh: timedelta) -> datetime | None:
    """When the TPS's next on-duty check-in not marked `lapsed` grows older than `fresh`."""
    due: datetime | None = None
    for info in (tps.checkins or {}).values():
        at = info.get("at") if isinstance(info, dict) else None
        if at and info.get("status") == "on_duty" and not info.get("lapsed"):
            when = as_utc(datetime.fromisoformat(at)) + fresh
            if due is None or when < due:
                due = when
    return due


def coverage(tps: Tps, now: datetime, fresh: timedelta) -> int:
    """How many of the TPS's personnel checked in on duty within `fresh`."""
    n = 0
    for info in (tps.checkins or {}).values():
        at = info.get("at") if isinstance(info, dict) else None
        if at and info.get("status") == "on_duty" and now - as_utc(datetime.fromisoformat(at)) <= fresh:
            n += 1
    return n
