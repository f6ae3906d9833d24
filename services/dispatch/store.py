"""Where the engine keeps incidents and the registry, and how it announces changes.

The engine only talks to this protocol. `MemoryStore` backs the unit tests (an hour of policy in a
millisecond); `SqlStore` is the real one: one database transaction per batch, with outgoing
messages written to the outbox in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_
from sqlmodel import Session, col, select

from siaga import topics
from siaga.audit import chain_hash, entry_content
from siaga.clock import as_utc
from siaga.contracts import Message
from siaga.models import Incident, IncidentReport, Outbox, Personnel, ProcessedEvent, TimelineEntry, Tps

OPEN_STATUSES = ("open", "escalated", "acknowledged")


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
    def add_incident(self, incident: Incident) -> None: ...
    def save_incident(self, incident: Incident) -> None: ...
    def open_incident(self, tps_id: str, category: str, since: datetime) -> Incident | None: ...
    def open_at_tps(self, tps_id: str) -> list[Incident]: ...
    def open_at_many(self, tps_ids: Sequence[str]) -> dict[str, list[Incident]]: ...
    def open_in_kecamatan(self, kecamatan: str, category: str, since: datetime) -> list[Incident]: ...
    def open_area(self, kecamatan: str, category: str) -> Incident | None: ...
    def due(self, now: datetime) -> list[Incident]: ...
    def silent_candidates(self, phases: Sequence[str], seen_before: datetime) -> list[Tps]: ...
    def timeline(
        self, incident: Incident, *, at: datetime, actor: str, action: str, detail: dict[str, Any]
    ) -> None: ...
    def emit(self, message: Message) -> None:
        """Announce a message; it goes on the bus only if the transaction commits."""
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

    def open_in_kecamatan(self, kecamatan: str, category: str, since: datetime) -> list[Incident]:
        return sorted(
            (
                i
                for i in self._open()
                if i.kecamatan == kecamatan
                and i.category == category
                and i.tps_id is not None
                and as_utc(i.opened_at) >= since
            ),
            key=lambda i: i.opened_at,
        )

    def open_area(self, kecamatan: str, category: str) -> Incident | None:
        return next(
            (i for i in self._open() if i.tps_id is None and i.kecamatan == kecamatan and i.category == category), None
        )

    def due(self, now: datetime) -> list[Incident]:
        return [
            i
            for i in self._open()
            if (i.escalate_at is not None and as_utc(i.escalate_at) <= now)
            or (i.ack_deadline is not None and as_utc(i.ack_deadline) <= now)
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

    # -- for tests
    def emitted(self, topic: str) -> list[dict[str, Any]]:
        return [v for t, _, v in self.out if t == topic]


class SqlStore:
    """The store on one SQLModel session (one transaction); the caller commits."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.outbox: list[Outbox] = []
        self._pending_updates: dict[str | None, Outbox] = {}  # key -> its not yet flushed update row
        self._chain: dict[str, tuple[int, str]] = {}  # incident id -> (last seq, last hash)
        self._processed: set[str] | None = None
        self._checked: set[str] = set()

    def preload_processed(self, event_ids: Sequence[str]) -> None:
        """Learn in one query which of a batch's events were applied before."""
        self._checked = set(event_ids)
        self._processed = set(
            self.s.exec(select(ProcessedEvent.event_id).where(col(ProcessedEvent.event_id).in_(list(event_ids)))).all()
        )

    def processed(self, event_id: str) -> bool:
        if self._processed is not None and event_id in self._checked:
            return event_id in self._processed
        return self.s.get(ProcessedEvent, event_id) is not None

    def mark_processed(self, event_id: str, at: datetime) -> None:
        self.s.add(ProcessedEvent(event_id=event_id, processed_at=at))
        if self._processed is not None:
            self._processed.add(event_id)

    def tps(self, tps_id: str) -> Tps | None:
        return self.s.get(Tps, tps_id)

    def save_tps(self, tps: Tps) -> None:
        self.s.add(tps)

    def personnel(self, personnel_id: str) -> Personnel | None:
        return self.s.get(Personnel, personnel_id)

    def save_personnel(self, person: Personnel) -> None:
        self.s.add(person)

    def incident(self, incident_id: str) -> Incident | None:
        return self.s.get(Incident, incident_id)

    def incident_for_report(self, report_id: str) -> Incident | None:
        link = self.s.get(IncidentReport, report_id)
        return self.s.get(Incident, link.incident_id) if link else None

    def link_report(self, report_id: str, incident_id: str) -> None:
        self.s.add(IncidentReport(event_id=report_id, incident_id=incident_id))  # new: the report was never applied

    def add_incident(self, incident: Incident) -> None:
        self.s.add(incident)
        self._chain[incident.id] = (0, "")  # a new incident's timeline starts here

    def save_incident(self, incident: Incident) -> None:
        self.s.add(incident)

    def open_incident(self, tps_id: str, category: str, since: datetime) -> Incident | None:
        q = (
            select(Incident)
            .where(
                Incident.tps_id == tps_id,
                Incident.category == category,
                col(Incident.status).in_(OPEN_STATUSES),
                Incident.opened_at >= since,
            )
            .order_by(col(Incident.opened_at).desc())
        )
        return self.s.exec(q).first()

    def open_at_tps(self, tps_id: str) -> list[Incident]:
        return self.open_at_many([tps_id])[tps_id]

    def open_at_many(self, tps_ids: Sequence[str]) -> dict[str, list[Incident]]:
        found: dict[str, list[Incident]] = {t: [] for t in tps_ids}
        for chunk in (list(tps_ids)[i : i + 500] for i in range(0, len(tps_ids), 500)):
            q = select(Incident).where(col(Incident.tps_id).in_(chunk), col(Incident.status).in_(OPEN_STATUSES))
            for inc in self.s.exec(q).all():
                found[inc.tps_id or ""].append(inc)
        return found

    def open_in_kecamatan(self, kecamatan: str, category: str, since: datetime) -> list[Incident]:
        q = (
            select(Incident)
            .where(
                Incident.kecamatan == kecamatan,
                Incident.category == category,
                col(Incident.tps_id).is_not(None),
                col(Incident.status).in_(OPEN_STATUSES),
                Incident.opened_at >= since,
            )
            .order_by(col(Incident.opened_at))
        )
        return list(self.s.exec(q).all())

    def open_area(self, kecamatan: str, category: str) -> Incident | None:
        q = select(Incident).where(
            Incident.kecamatan == kecamatan,
            Incident.category == category,
            col(Incident.tps_id).is_(None),
            col(Incident.status).in_(OPEN_STATUSES),
        )
        return self.s.exec(q).first()

    def due(self, now: datetime) -> list[Incident]:
        q = select(Incident).where(
            col(Incident.status).in_(OPEN_STATUSES),
            or_(col(Incident.escalate_at) <= now, col(Incident.ack_deadline) <= now),
        )
        return list(self.s.exec(q.limit(500)).all())

    def silent_candidates(self, phases: Sequence[str], seen_before: datetime) -> list[Tps]:
        q = select(Tps).where(
            col(Tps.phase).in_(list(phases)),
            Tps.silent == False,  # noqa: E712
            Tps.assigned > 0,
            col(Tps.last_seen_at) <= seen_before,
        )
        return list(self.s.exec(q.limit(2000)).all())

    def timeline(self, incident: Incident, *, at: datetime, actor: str, action: str, detail: dict[str, Any]) -> None:
        if incident.id not in self._chain:
            last = self.s.exec(
                select(TimelineEntry.seq, TimelineEntry.hash)
                .where(TimelineEntry.incident_id == incident.id)
                .order_by(col(TimelineEntry.seq).desc())
            ).first()
            self._chain[incident.id] = (last[0], last[1]) if last else (0, "")
        seq, prev = self._chain[incident.id]
        e = TimelineEntry(
            incident_id=incident.id, seq=seq + 1, at=at, actor=actor, action=action, detail=detail, prev_hash=prev
        )
        e.hash = chain_hash(prev, entry_content(e))
        self._chain[incident.id] = (e.seq, e.hash)
        self.s.add(e)

    def emit(self, message: Message) -> None:
        topic, key, body = message.TOPIC, message.bus_key(), message.to_bytes()
        if topic == topics.INCIDENT_UPDATES:
            # Updates carry the whole state of their key: within one transaction only the last counts.
            pending = self._pending_updates.get(key)
            if pending is not None:
                pending.value = body
                return
        row = Outbox(topic=topic, key=key, value=body, created_at=_now_for_outbox())
        self.s.add(row)
        self.outbox.append(row)
        if topic == topics.INCIDENT_UPDATES:
            self._pending_updates[key] = row


def _now_for_outbox() -> datetime:
    return datetime.now(UTC)  # bookkeeping only: the relay's order is the row id


def coverage(tps: Tps, now: datetime, fresh: timedelta) -> int:
    """How many of the TPS's personnel checked in on duty within `fresh`."""
    n = 0
    for info in (tps.checkins or {}).values():
        at = info.get("at") if isinstance(info, dict) else None
        if at and info.get("status") == "on_duty" and now - as_utc(datetime.fromisoformat(at)) <= fresh:
            n += 1
    return n
