"""The working state of the partitions a dispatch process owns, in memory (SPEC section 3, "Scaling out").

Field events and commands are keyed by kecamatan, so the owner of a partition decides every TPS,
incident and area incident of its kecamatan, in order, and no other process writes them. It can
then keep them in memory: the engine's rules read and change Python objects, not rows, and what a
consumer batch changed is written back in one transaction (`OwnedState.flush`):

- bulk upserts of the changed TPS, personnel and incidents, each row once however often it changed;
- the new timeline rows, report links and applied event ids (a redelivered event is then a no-op);
- the outbox, with incident and TPS updates coalesced per key (latest wins; alerts never).

A kecamatan's state is loaded whole the first time anything touches it (its TPS, open incidents,
their report links and timeline chains), and every owned kecamatan is loaded when its partition is
assigned, so that its pending deadlines and silent posts are in the timers from the start. The
timers are heaps (deadlines by time, TPS by when they were last heard of), never a table scan.

What the database holds stays the truth: a batch that fails (the database down, a bug) drops the
state it may have half-changed, and the next one reloads it.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, func
from sqlalchemy import select as select_rows
from sqlmodel import Session, col, select

from services.dispatch.bulk import Bulk, chunks
from services.dispatch.domain import Correction, Incident, Personnel, SilenceRule, TimelineItem, Tps, order_due_at
from services.dispatch.inbox import inbox_row, insert_inbox
from services.dispatch.store import CHECKIN_FRESH, OPEN_STATUSES, escort_timers, lapse_due
from siaga import models as rows
from siaga import topics
from siaga.audit import chain_hash, entry_content
from siaga.clock import as_utc
from siaga.contracts import Assignment, Broadcast, HelpOnTheWay, Message
from siaga.keys import kecamatan_key
from siaga.models import CommandResult, IncidentReport, Outbox, ProcessedEvent, TimelineEntry
from siaga.models import Correction as CorrectionRow
from siaga.short_codes import new_code

TPS: Table = rows.Tps.__table__  # type: ignore[attr-defined]
PERSONNEL: Table = rows.Personnel.__table__  # type: ignore[attr-defined]
INCIDENT: Table = rows.Incident.__table__  # type: ignore[attr-defined]

log = logging.getLogger("siaga.dispatch.state")

# Columns the registry (the admin API's imports) owns. The partition owner writes everything else of
# a TPS or a person, and never these, so an import is not undone by the owner's next write-back; it
# learns of them from a RefreshTps command (`reload_tps`).
REGISTRY_TPS = ("name", "kecamatan", "kabupaten", "provinsi", "desa", "lat", "lon", "rawan", "assigned")
REGISTRY_PERSONNEL = ("name", "unit", "role", "tps_ids", "phone")
RECENT_EVENT_IDS = 200_000  # applied event ids remembered in memory; older ones are asked of the database
OutboxMessage = tuple[str, str | None, bytes]  # topic, key, value
TIMELINE: Table = TimelineEntry.__table__  # type: ignore[attr-defined]
TIMELINE_COLUMNS = ("incident_id", "seq", "at", "actor", "action", "detail", "prev_hash", "hash")
REPORTS: Table = IncidentReport.__table__  # type: ignore[attr-defined]
PROCESSED: Table = ProcessedEvent.__table__  # type: ignore[attr-defined]
RESULTS: Table = CommandResult.__table__  # type: ignore[attr-defined]
OUTBOX: Table = Outbox.__table__  # type: ignore[attr-defined]
OUTBOX_COLUMNS = ("topic", "key", "value", "created_at")
FieldOrder = Assignment | HelpOnTheWay | Broadcast


@dataclass
class Changes:
    """What the current batch changed: written back in one transaction, then forgotten."""

    tps: set[str] = field(default_factory=set)
    personnel: set[str] = field(default_factory=set)
    incidents: set[str] = field(default_factory=set)
    timeline: list[TimelineItem] = field(default_factory=list)
    reports: list[tuple[str, str]] = field(default_factory=list)  # (report event id, incident id)
    processed: list[tuple[str, datetime]] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    updates_at: dict[str | None, int] = field(default_factory=dict)  # updates key -> index in outbox
    results: list[CommandResult] = field(default_factory=list)  # what the batch's commands came to
    corrections: list[Correction] = field(default_factory=list)  # operators' corrections (classify)
    inbox: list[tuple[FieldOrder, str | None]] = field(default_factory=list)  # field orders, their kecamatan

    def __bool__(self) -> bool:
        return bool(
            self.tps
            or self.personnel
            or self.incidents
            or self.timeline
            or self.reports
            or self.processed
            or self.outbox
            or self.results
            or self.corrections
            or self.inbox
        )


def _deadline(inc: Incident) -> datetime | None:
    times = [as_utc(t) for t in (inc.escalate_at, inc.ack_deadline) if t is not None]
    if inc.orders:  # a field order waiting for its acknowledgement (rules/orders.py)
        times += [t for t in (order_due_at(inc),) if t is not None]
    return min(times) if times else None


class OwnedState:
    """The engine's store for the kecamatan this process owns: memory, written back once a batch.

    `session` opens a database session for loads and read-throughs (the caller's transaction does
    the write-back). Which kecamatan are owned is the caller's to know: it loads and drops them.
    """

    def __init__(self, session: Callable[[], Session]) -> None:
        self._session = session
        # The partition of a kecamatan key (set by the owner once the bus tells it): which block of
        # short codes its new incidents draw from. None: one partition, block 0.
        self.partition_of: Callable[[str], int] | None = None
        self.changes = Changes()
        # The silences not yet over, as the owner last read them (services/dispatch/service.py keeps
        # them fresh); not part of the partitions' state, so a reset keeps them.
        self.silence_rules: list[SilenceRule] = []
        self._reset()

    def _reset(self) -> None:
        self.tps_rows: dict[str, Tps] = {}
        self.people: dict[str, Personnel] = {}
        self.incidents: dict[str, Incident] = {}  # every incident of a loaded kecamatan that is open, and any read
        self._open_at: dict[str, set[str]] = {}  # tps id -> ids of its open incidents
        self._kecamatan_open: dict[str, set[str]] = {}  # kecamatan -> ids of its open incidents
        # (kecamatan, category, area or not) -> ids of its open incidents, and the key each incident
        # is under (an operator's classify can move it): spread detection asks this of every report.
        self._kind_open: dict[tuple[str, str, bool], set[str]] = {}
        self._kind_of: dict[str, tuple[str, str, bool]] = {}
        self._reports: dict[str, str] = {}  # report event id -> incident id
        self._chains: dict[str, tuple[int, str]] = {}  # incident id -> (last seq, last hash)
        self._codes: dict[str, str] = {}  # short code -> incident id (the holder may since be resolved)
        self._loaded: set[str] = set()  # kecamatan whose TPS and open incidents are all here
        self._recent: OrderedDict[str, None] = OrderedDict()  # applied event ids, newest last
        self._batch_seen: set[str] = set()  # event ids of this batch known not to be applied before
        self._batch_absent: set[str] = set()  # personnel ids of this batch known not to be on the roster
        self._deadlines: list[tuple[datetime, str]] = []  # (when, incident id), stale entries skipped
        self._holding: set[str] = set()  # open incidents holding alerts for a silence (few, checked each tick)
        # (when last heard of, tps id): one entry a TPS at most (those in `_in_quiet`). A check-in
        # moves last_seen_at on without touching the heap; an entry that surfaces older than its
        # TPS's last_seen_at goes back in at that time. So the heap never holds more than the TPS.
        self._quiet: list[tuple[datetime, str]] = []
        self._in_quiet: set[str] = set()
        # (due, tps id, escort id) of ballot-box escorts on the road; an escort is pushed once.
        self._escort_due: list[tuple[datetime, str, str]] = []
        self._escort_watched: set[str] = set()
        # (when an on-duty check-in goes stale, tps id): one entry a TPS at most (those in `_in_lapse`),
        # at its earliest unmarked on-duty check-in's expiry; as with `_quiet`, a newer check-in
        # moves that on without touching the heap, and a surfacing entry that is early goes back in.
        self._lapse: list[tuple[datetime, str]] = []
        self._in_lapse: set[str] = set()
        # Rows known to be in the database (read from it, or written back): their write-back is a
        # narrow UPDATE of the owner's columns, not an upsert that binds every registry column too.
        self._stored_tps: set[str] = set()
        self._stored_people: set[str] = set()
        self._evicted = 0  # closed incidents forgotten since the report links were last swept

    # ------------------------------------------------------------------ ownership and loading
    def load(self, kecamatan: Iterable[str]) -> int:
        """Load these kecamatan whole (those not loaded yet); returns how many TPS came in."""
        wanted = sorted(set(kecamatan) - self._loaded)
        if not wanted:
            return 0
        n = 0
        with self._session() as s:
            for chunk in chunks(wanted):
                tps = s.execute(select_rows(TPS).where(TPS.c.kecamatan.in_(chunk))).mappings().all()
                for t in tps:
                    if t["tps_id"] not in self.tps_rows:  # what memory holds is newer than the database
                        self._keep_tps(Tps.from_row(t))
                    self._stored_tps.add(t["tps_id"])
                n += len(tps)
                opened = (
                    s.execute(
                        select_rows(INCIDENT).where(
                            INCIDENT.c.kecamatan.in_(chunk), INCIDENT.c.status.in_(OPEN_STATUSES)
                        )
                    )
                    .mappings()
                    .all()
                )
                self._keep_incidents(s, [Incident.from_row(i) for i in opened if i["id"] not in self.incidents])
        self._loaded.update(wanted)
        return n

    def drop(self, keep: Callable[[str], bool]) -> None:
        """Forget every kecamatan for which `keep` is false (its partition went to another process)."""
        gone = {k for k in self._loaded if not keep(k)}
        gone |= {t.kecamatan for t in self.tps_rows.values() if not keep(t.kecamatan)}
        if not gone:
            return
        self._loaded -= gone
        for tps_id in [t for t, row in self.tps_rows.items() if row.kecamatan in gone]:
            del self.tps_rows[tps_id]
            self._open_at.pop(tps_id, None)
        for iid in [i for i, inc in self.incidents.items() if inc.kecamatan in gone]:
            del self.incidents[iid]
            self._chains.pop(iid, None)
            self._holding.discard(iid)
        for k in gone:
            self._kecamatan_open.pop(k, None)
        for kind in [kind for kind in self._kind_open if kind[0] in gone]:
            del self._kind_open[kind]
        self._kind_of = {i: kind for i, kind in self._kind_of.items() if kind[0] not in gone}
        self._reports = {r: i for r, i in self._reports.items() if i in self.incidents}
        self._deadlines = [e for e in self._deadlines if e[1] in self.incidents]
        heapq.heapify(self._deadlines)
        self._quiet = [e for e in self._quiet if e[1] in self.tps_rows]
        heapq.heapify(self._quiet)
        self._in_quiet = {t for _, t in self._quiet}
        self._escort_due = [e for e in self._escort_due if e[1] in self.tps_rows]
        heapq.heapify(self._escort_due)
        self._escort_watched = {e[2] for e in self._escort_due}
        self._lapse = [e for e in self._lapse if e[1] in self.tps_rows]
        heapq.heapify(self._lapse)
        self._in_lapse = {t for _, t in self._lapse}

    def forget(self) -> None:
        """Drop everything: after a failed batch, what memory holds may be half-changed."""
        self.changes = Changes()
        self._reset()

    def kecamatan_names(self) -> list[str]:
        """Every kecamatan of the registry (to find those of newly assigned partitions)."""
        with self._session() as s:
            return list(s.execute(select_rows(TPS.c.kecamatan).distinct()).scalars().all())

    def _ensure(self, kecamatan: str) -> None:
        if kecamatan not in self._loaded:
            self.load([kecamatan])

    def _keep_tps(self, tps: Tps) -> None:
        self.tps_rows[tps.tps_id] = tps
        self._watch_quiet(tps)
        self._watch_escorts(tps)
        self._watch_lapse(tps)

    def _watch_escorts(self, tps: Tps) -> None:
        """Put the TPS's escorts still waiting for their boxes in the escort timers (once each)."""
        if not tps.escorts:
            return
        for due, escort_id in escort_timers(tps):
            if escort_id not in self._escort_watched:
                heapq.heappush(self._escort_due, (due, tps.tps_id, escort_id))
                self._escort_watched.add(escort_id)

    def _watch_lapse(self, tps: Tps) -> None:
        """Put the TPS in the lapse timers when an on-duty check-in of it can go stale."""
        if tps.tps_id in self._in_lapse or not tps.checkins:
            return
        due = lapse_due(tps, CHECKIN_FRESH)
        if due is not None:
            heapq.heappush(self._lapse, (due, tps.tps_id))
            self._in_lapse.add(tps.tps_id)

    def _watch_quiet(self, tps: Tps) -> None:
        """Put the TPS in the silent-post timers unless it is there already (then it is found in time)."""
        if tps.last_seen_at is not None and tps.tps_id not in self._in_quiet:
            heapq.heappush(self._quiet, (as_utc(tps.last_seen_at), tps.tps_id))
            self._in_quiet.add(tps.tps_id)

    def _keep_incidents(self, s: Session, incidents: Sequence[Incident]) -> None:
        """Take incidents into memory with their report links and timeline chains."""
        if not incidents:
            return
        ids = [i.id for i in incidents]
        for inc in incidents:
            self.incidents[inc.id] = inc
            self._index(inc)
            if inc.code is not None and inc.status in OPEN_STATUSES:
                self._codes[inc.code] = inc.id
        for chunk in chunks(ids):
            for event_id, incident_id in s.exec(
                select(IncidentReport.event_id, IncidentReport.incident_id).where(
                    col(IncidentReport.incident_id).in_(chunk)
                )
            ).all():
                self._reports[event_id] = incident_id
            last = (
                select(TimelineEntry.incident_id, func.max(TimelineEntry.seq).label("seq"))
                .where(col(TimelineEntry.incident_id).in_(chunk))
                .group_by(col(TimelineEntry.incident_id))
                .subquery()
            )
            rows = s.exec(
                select(TimelineEntry.incident_id, TimelineEntry.seq, TimelineEntry.hash).join(
                    last,
                    and_(col(TimelineEntry.incident_id) == last.c.incident_id, col(TimelineEntry.seq) == last.c.seq),
                )
            ).all()
            for incident_id, seq, digest in rows:
                self._chains[incident_id] = (seq, digest)
        for inc in incidents:
            self._chains.setdefault(inc.id, (0, ""))

    def _index(self, inc: Incident) -> None:
        """Keep the open-incident indexes and the deadline heap in step with one incident."""
        is_open = inc.status in OPEN_STATUSES
        if not is_open and inc.code is not None and self._codes.get(inc.code) == inc.id:
            del self._codes[inc.code]  # free for the next incident of the partition
        by_kec = self._kecamatan_open.setdefault(inc.kecamatan, set())
        kind = (inc.kecamatan, inc.category, inc.tps_id is None)
        before = self._kind_of.get(inc.id)
        if before is not None and (before != kind or not is_open):
            self._kind_open.get(before, set()).discard(inc.id)
            del self._kind_of[inc.id]
        if is_open:
            by_kec.add(inc.id)
            self._kind_open.setdefault(kind, set()).add(inc.id)
            self._kind_of[inc.id] = kind
        else:
            by_kec.discard(inc.id)
        if inc.tps_id is not None:
            at_tps = self._open_at.setdefault(inc.tps_id, set())
            if is_open:
                at_tps.add(inc.id)
            else:
                at_tps.discard(inc.id)
        if is_open and inc.held_alerts:
            self._holding.add(inc.id)
        else:
            self._holding.discard(inc.id)
        when = _deadline(inc) if is_open else None
        if when is not None:
            heapq.heappush(self._deadlines, (when, inc.id))
            if len(self._deadlines) > 4 * len(self.incidents) + 1000:  # stale entries: one an incident
                self._deadlines = [
                    (d, i.id) for i in self.incidents.values() if i.status in OPEN_STATUSES and (d := _deadline(i))
                ]
                heapq.heapify(self._deadlines)

    def _read_incident(self, incident_id: str) -> Incident | None:
        with self._session() as s:
            found = s.execute(select_rows(INCIDENT).where(INCIDENT.c.id == incident_id)).mappings().first()
            if found is None:
                return None
            row = Incident.from_row(found)
            kecamatan = row.kecamatan
        self._ensure(kecamatan)  # its kecamatan whole (an open incident is then already here)
        if incident_id not in self.incidents:  # closed: kept as read
            with self._session() as s:
                self._keep_incidents(s, [row])
        return self.incidents[incident_id]

    # ------------------------------------------------------------------ applied events
    def preload_processed(self, event_ids: Sequence[str]) -> None:
        """Learn in one query which of a batch's events, not remembered here, were applied before."""
        unknown = [e for e in event_ids if e not in self._recent]
        self._batch_seen = set(unknown)
        if not unknown:
            return
        with self._session() as s:
            for event_id in Bulk(s.connection()).select_in(PROCESSED, "event_id", unknown):
                self._remember(event_id)
                self._batch_seen.discard(event_id)

    def processed(self, event_id: str) -> bool:
        if event_id in self._recent:
            return True
        if event_id in self._batch_seen:
            return False
        with self._session() as s:
            return s.get(ProcessedEvent, event_id) is not None

    def mark_processed(self, event_id: str, at: datetime) -> None:
        self._remember(event_id)
        self._batch_seen.discard(event_id)
        self.changes.processed.append((event_id, at))

    def _remember(self, event_id: str) -> None:
        self._recent[event_id] = None
        if len(self._recent) > RECENT_EVENT_IDS:
            self._recent.popitem(last=False)

    # ------------------------------------------------------------------ the Store protocol
    def tps(self, tps_id: str) -> Tps | None:
        found = self.tps_rows.get(tps_id)
        if found is not None:
            return found
        with self._session() as s:
            kecamatan = s.execute(select_rows(TPS.c.kecamatan).where(TPS.c.tps_id == tps_id)).scalar()
        if kecamatan is None:
            return None
        self._loaded.discard(kecamatan)  # a TPS registered since the load: load its kecamatan again
        self.load([kecamatan])
        return self.tps_rows.get(tps_id)

    def reload_tps(self, tps_ids: Sequence[str]) -> list[Tps]:
        out: list[Tps] = []
        with self._session() as s:
            for chunk in chunks(sorted(set(tps_ids))):
                for row in s.execute(select_rows(TPS).where(TPS.c.tps_id.in_(chunk))).mappings().all():
                    self._stored_tps.add(row["tps_id"])
                    known = self.tps_rows.get(row["tps_id"])
                    if known is None:
                        known = Tps.from_row(row)
                        self._keep_tps(known)
                    else:
                        fresh = Tps.from_row(row)
                        for name in REGISTRY_TPS:
                            setattr(known, name, getattr(fresh, name))
                    out.append(known)
        return out

    def known_tps(self, tps_ids: Iterable[str]) -> set[str]:
        """Which of these TPS are in the registry."""
        wanted = set(tps_ids)
        found = wanted & self.tps_rows.keys()
        missing = sorted(wanted - found)
        with self._session() as s:
            for chunk in chunks(missing):
                found.update(s.execute(select_rows(TPS.c.tps_id).where(TPS.c.tps_id.in_(chunk))).scalars().all())
        return found

    def save_tps(self, tps: Tps) -> None:
        self.tps_rows[tps.tps_id] = tps  # a new TPS joins its kecamatan; a load never replaces it
        self._watch_quiet(tps)
        self._watch_escorts(tps)
        self._watch_lapse(tps)
        self.changes.tps.add(tps.tps_id)

    def personnel(self, personnel_id: str) -> Personnel | None:
        found = self.people.get(personnel_id)
        if found is not None:
            return found
        if personnel_id in self._batch_absent:
            return None
        with self._session() as s:
            mapping = (
                s.execute(select_rows(PERSONNEL).where(PERSONNEL.c.personnel_id == personnel_id)).mappings().first()
            )
            person = Personnel.from_row(mapping) if mapping is not None else None
        if person is not None:
            self.people[personnel_id] = person
            self._stored_people.add(personnel_id)
        return person

    def preload_personnel(self, personnel_ids: Iterable[str]) -> None:
        """Bring a batch's personnel into memory in one query per chunk."""
        missing = sorted(set(personnel_ids) - self.people.keys())
        self._batch_absent = set(missing)  # not on the roster (a check-in then adds them)
        if not missing:
            return
        with self._session() as s:
            for chunk in chunks(missing):
                for p in s.execute(select_rows(PERSONNEL).where(PERSONNEL.c.personnel_id.in_(chunk))).mappings().all():
                    self.people[p["personnel_id"]] = Personnel.from_row(p)
                    self._stored_people.add(p["personnel_id"])
                    self._batch_absent.discard(p["personnel_id"])

    def save_personnel(self, person: Personnel) -> None:
        self.people[person.personnel_id] = person
        self._batch_absent.discard(person.personnel_id)
        self.changes.personnel.add(person.personnel_id)

    def incident(self, incident_id: str) -> Incident | None:
        return self.incidents.get(incident_id) or self._read_incident(incident_id)

    def incident_for_report(self, report_id: str) -> Incident | None:
        iid = self._reports.get(report_id)
        if iid is None:
            with self._session() as s:
                link = s.get(IncidentReport, report_id)
                iid = link.incident_id if link else None
            if iid is None:
                return None
            self._reports[report_id] = iid
        return self.incident(iid)

    def link_report(self, report_id: str, incident_id: str) -> None:
        self._reports[report_id] = incident_id
        self.changes.reports.append((report_id, incident_id))

    def add_incident(self, incident: Incident) -> None:
        if incident.code is None:
            incident.code = self._new_code(incident)
        self.incidents[incident.id] = incident
        self._codes[incident.code] = incident.id
        self._chains[incident.id] = (0, "")
        self._index(incident)
        self.changes.incidents.add(incident.id)

    def save_incident(self, incident: Incident) -> None:
        self.incidents[incident.id] = incident
        self._index(incident)
        self.changes.incidents.add(incident.id)

    def _new_code(self, incident: Incident) -> str:
        """A short code from the block of the incident's partition, free among the open incidents held here.

        The owner holds every open incident of its partitions, so "not held here" is "not held by
        any open incident of this partition"; other partitions draw from other blocks.
        """
        partition = self.partition_of(kecamatan_key(incident.kecamatan)) if self.partition_of else 0

        def taken(code: str) -> bool:
            holder = self.incidents.get(self._codes.get(code, ""))
            return holder is not None and holder.status in OPEN_STATUSES

        return new_code(partition, incident.id, taken)

    def _open_ids(self, ids: Iterable[str]) -> Iterator[Incident]:
        for iid in ids:
            inc = self.incidents.get(iid)
            if inc is not None and inc.status in OPEN_STATUSES:
                yield inc

    def open_incident(self, tps_id: str, category: str, since: datetime) -> Incident | None:
        tps = self.tps(tps_id)
        if tps is not None:
            self._ensure(tps.kecamatan)
        found = [
            i
            for i in self._open_ids(self._open_at.get(tps_id, ()))
            if i.category == category and as_utc(i.opened_at) >= since
        ]
        return max(found, key=lambda i: as_utc(i.opened_at)) if found else None

    def open_at_tps(self, tps_id: str) -> list[Incident]:
        return list(self._open_ids(self._open_at.get(tps_id, ())))

    def open_at_many(self, tps_ids: Sequence[str]) -> dict[str, list[Incident]]:
        return {t: self.open_at_tps(t) for t in tps_ids}

    def open_in_kecamatan(self, kecamatan: str, category: str, since: datetime, kabupaten: str) -> list[Incident]:
        self._ensure(kecamatan)
        return sorted(
            (
                i
                for i in self._open_ids(self._kind_open.get((kecamatan, category, False), ()))
                if i.category == category
                and i.tps_id is not None
                and i.kabupaten == kabupaten
                and as_utc(i.opened_at) >= since
            ),
            key=lambda i: as_utc(i.opened_at),
        )

    def open_area(self, kecamatan: str, category: str, kabupaten: str) -> Incident | None:
        self._ensure(kecamatan)
        return next(
            (
                i
                for i in self._open_ids(self._kind_open.get((kecamatan, category, True), ()))
                if i.tps_id is None and i.category == category and i.kabupaten == kabupaten
            ),
            None,
        )

    def open_of_kecamatan(self, kecamatan: str) -> list[Incident]:
        self._ensure(kecamatan)
        return list(self._open_ids(self._kecamatan_open.get(kecamatan, ())))

    def kecamatan_personnel(self, kecamatan: str, kabupaten: str) -> list[Personnel]:
        """Everyone on the roster who covers a TPS of the kecamatan (read when an order is sent: rare).

        The roster's TPS lists are JSON, so the rows are filtered here; what memory holds of a
        person (their newest check-in) wins over the row.
        """
        self._ensure(kecamatan)
        here = {t for t, row in self.tps_rows.items() if row.kecamatan == kecamatan and row.kabupaten == kabupaten}
        out: list[Personnel] = []
        with self._session() as s:
            for mapping in s.execute(select_rows(PERSONNEL)).mappings():
                if here.intersection(mapping["tps_ids"] or ()):
                    pid = mapping["personnel_id"]
                    person = self.people.get(pid)
                    if person is None:
                        person = self.people[pid] = Personnel.from_row(mapping)
                    out.append(person)
        return out

    def silences(self) -> Sequence[SilenceRule]:
        return self.silence_rules

    def holding(self) -> list[Incident]:
        return [inc for i in sorted(self._holding) if (inc := self.incidents.get(i)) is not None]

    def due(self, now: datetime) -> list[Incident]:
        """Open incidents whose window or acknowledgement deadline has passed, from the timer heap."""
        out: dict[str, Incident] = {}
        while self._deadlines and self._deadlines[0][0] <= now:
            _, iid = heapq.heappop(self._deadlines)
            inc = self.incidents.get(iid)
            if inc is None or inc.status not in OPEN_STATUSES or iid in out:
                continue
            current = _deadline(inc)
            if current is not None and current <= now:
                out[iid] = inc
            # else: the deadline moved; its own entry is in the heap
        return list(out.values())

    def silent_candidates(self, phases: Sequence[str], seen_before: datetime) -> list[Tps]:
        """TPS in an operating phase, not silent, with personnel, last heard of at or before the cutoff."""
        out: dict[str, Tps] = {}
        operating = set(phases)
        while self._quiet and self._quiet[0][0] <= seen_before:
            seen, tps_id = heapq.heappop(self._quiet)
            tps = self.tps_rows.get(tps_id)
            if tps is None or tps.last_seen_at is None:
                self._in_quiet.discard(tps_id)
                continue
            current = as_utc(tps.last_seen_at)
            if current > seen:  # heard of since: back in at that time (found again now if due)
                heapq.heappush(self._quiet, (current, tps_id))
                continue
            self._in_quiet.discard(tps_id)
            if tps.phase in operating and not tps.silent and tps.assigned > 0:
                out[tps_id] = tps
            # Not operating, silent already, or nobody assigned: a phase change, a check-in or a
            # roster change saves the TPS again, and that puts it back on the heap.
        return list(out.values())

    def overdue_escorts(self, now: datetime) -> list[tuple[Tps, str]]:
        """Escorts past their due time with boxes on the road and no incident yet, from the timer heap."""
        out: list[tuple[Tps, str]] = []
        while self._escort_due and self._escort_due[0][0] <= now:
            _, tps_id, escort_id = heapq.heappop(self._escort_due)
            self._escort_watched.discard(escort_id)
            tps = self.tps_rows.get(tps_id)
            if tps is not None and any(eid == escort_id for _, eid in escort_timers(tps)):
                out.append((tps, escort_id))
            # else: arrived, flagged already, or its TPS went to another owner
        return out

    def lapsed_posts(self, now: datetime, fresh: timedelta) -> list[Tps]:
        """TPS with an on-duty check-in gone stale and not marked yet, from the timer heap."""
        out: dict[str, Tps] = {}
        while self._lapse and self._lapse[0][0] <= now:
            _, tps_id = heapq.heappop(self._lapse)
            self._in_lapse.discard(tps_id)
            tps = self.tps_rows.get(tps_id)
            if tps is None:
                continue
            due = lapse_due(tps, fresh)
            if due is not None and due <= now:
                out[tps_id] = tps  # the engine marks it, and saving the TPS puts its next one in
            elif due is not None:
                heapq.heappush(self._lapse, (due, tps_id))
                self._in_lapse.add(tps_id)
        return list(out.values())

    def timeline(self, incident: Incident, *, at: datetime, actor: str, action: str, detail: dict[str, Any]) -> None:
        seq, prev = self._chains.get(incident.id, (0, ""))
        e = TimelineItem(
            incident_id=incident.id, seq=seq + 1, at=at, actor=actor, action=action, detail=detail, prev_hash=prev
        )
        e.hash = chain_hash(prev, entry_content(e))
        self._chains[incident.id] = (e.seq, e.hash)
        self.changes.timeline.append(e)

    def record_result(
        self, command_id: str, *, status: int, incident_id: str | None, detail: str, at: datetime
    ) -> None:
        """What a command came to: written with the batch, read by the API that sent it."""
        self.changes.results.append(
            CommandResult(command_id=command_id, status=status, incident_id=incident_id, detail=detail, applied_at=at)
        )

    def record_correction(self, correction: Correction) -> None:
        """An operator's correction, kept as a labelled example: written with the batch."""
        self.changes.corrections.append(correction)

    def emit(self, message: Message) -> None:
        topic, key, body = message.TOPIC, message.bus_key(), message.to_bytes()
        ch = self.changes
        if topic == topics.INCIDENT_UPDATES:
            # An update carries the whole state of its key: in one batch only the last one counts.
            at = ch.updates_at.get(key)
            if at is not None:
                ch.outbox[at] = (topic, key, body)
                return
            ch.updates_at[key] = len(ch.outbox)
        elif isinstance(message, Assignment | HelpOnTheWay | Broadcast):
            # Into the devices' inbox in the same transaction (never coalesced: each is an item).
            incident = None if isinstance(message, Broadcast) else self.incidents.get(message.incident_id)
            ch.inbox.append((message, incident.kecamatan if incident else None))
        ch.outbox.append((topic, key, body))

    # ------------------------------------------------------------------ writing back
    def flush(
        self, s: Session, *, created_at: datetime
    ) -> tuple[tuple[list[OutboxMessage], list[int]], list[CommandResult]]:
        """Write the batch's changes in the caller's transaction.

        Returns the outbox messages with their rows' ids (for the relay) and the command results.
        """
        ch, self.changes = self.changes, Changes()
        bulk = Bulk(s.connection())
        _write_back(
            bulk,
            TPS,
            "tps_id",
            [self.tps_rows[t] for t in sorted(ch.tps) if t in self.tps_rows],
            self._stored_tps,
            keep=REGISTRY_TPS,
        )
        _write_back(
            bulk,
            PERSONNEL,
            "personnel_id",
            [self.people[p] for p in sorted(ch.personnel) if p in self.people],
            self._stored_people,
            keep=REGISTRY_PERSONNEL,
        )
        incidents = [self.incidents[i].columns() for i in sorted(ch.incidents) if i in self.incidents]
        bulk.upsert(INCIDENT, ["id"], _names(INCIDENT), incidents)
        bulk.insert(TIMELINE, TIMELINE_COLUMNS, [{c: getattr(e, c) for c in TIMELINE_COLUMNS} for e in ch.timeline])
        bulk.insert_new(
            REPORTS, ("event_id", "incident_id"), [{"event_id": r, "incident_id": i} for r, i in ch.reports]
        )
        processed = [{"event_id": e, "processed_at": at} for e, at in ch.processed]
        bulk.insert_new(PROCESSED, ("event_id", "processed_at"), processed)
        results = [{c: getattr(r, c) for c in _names(RESULTS)} for r in ch.results]
        bulk.insert_new(RESULTS, _names(RESULTS), results)
        if ch.corrections:  # rare (operators' classify commands): plain inserts
            s.add_all(CorrectionRow(**asdict(c)) for c in ch.corrections)
        insert_inbox(s, [inbox_row(m, kecamatan=k, at=created_at) for m, k in ch.inbox])
        self._evict_closed(ch.incidents)
        return (ch.outbox, insert_outbox(s, ch.outbox, created_at)), ch.results

    def _evict_closed(self, changed: Iterable[str]) -> None:
        """Forget the incidents this batch closed, once written: memory holds what is open.

        A resolved incident can still hear of a follow-up (a note, a late backup request): it is read
        back from the database then (`incident`, `incident_for_report`). Without this, a day's closed
        incidents stayed in memory to the end (the soak's slow RSS creep). Should the transaction
        fail, `discard` drops the whole state anyway.
        """
        for iid in changed:
            inc = self.incidents.get(iid)
            if inc is not None and inc.status not in OPEN_STATUSES:
                del self.incidents[iid]
                self._chains.pop(iid, None)
                self._evicted += 1
        if self._evicted > 1000 + len(self._reports) // 4:  # the links of the evicted: swept now and then
            self._reports = {r: i for r, i in self._reports.items() if i in self.incidents}
            self._evicted = 0

    def discard(self) -> None:
        """Undo a batch that did not commit: memory may hold its half-applied changes, so reload."""
        self.forget()


def _names(table: Table, *, without: Sequence[str] = ()) -> list[str]:
    return [c.name for c in table.columns if c.name not in without]


def _write_back(
    bulk: Bulk,
    table: Table,
    key: str,
    changed: Sequence[Tps | Personnel],
    stored: set[str],
    *,
    keep: Sequence[str],
) -> None:
    """Write changed TPS or people: rows the database has get an UPDATE of the owner's columns only.

    A check-in changes a handful of a TPS's columns; binding the registry's (name, coordinates,
    JSON lists) for every row of every batch was most of the write-back's time. New rows are upserted
    (the registry's columns of a row that exists after all are left as they are).
    `stored` learns the ids written, so that their next write-back is narrow too.
    """
    owned = _names(table, without=(key, *keep))
    present: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    for item in changed:
        values = item.columns()
        (present if values[key] in stored else new).append(values)
    bulk.update(table, key, owned, present)
    if new:  # the columns the domain row has (a person's phone is the registry's alone)
        bulk.upsert(table, [key], [c for c in _names(table) if c in new[0]], new, keep=keep)
    stored.update(v[key] for v in new)


def insert_outbox(s: Session, messages: list[OutboxMessage], created_at: datetime) -> list[int]:
    """The outbox rows; returns their ids (the relay deletes them by id once they are on the bus).

    Multi-row INSERT … RETURNING. The ids may come back in any order: they are only deleted, and the
    messages go out in the order of `messages`.
    """
    values = [{"topic": t, "key": k, "value": v, "created_at": created_at} for t, k, v in messages]
    return [int(i) for i in Bulk(s.connection()).insert_returning(OUTBOX, OUTBOX_COLUMNS, values, "id")]
