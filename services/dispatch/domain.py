"""What the escalation engine reasons about: TPS, personnel and incidents as plain objects.

They have the fields of the database rows of the same names (siaga.models), so the partition
owner's state loads and writes them by column name, but they are not rows: no session, no ORM
instrumentation, no validation on every assignment. The engine changes thousands of them a second;
a mapped SQLModel object costs several times as much for each attribute it sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, Self


class _Row:
    """Conversion from and to a row's columns (same names)."""

    __slots__ = ()

    @classmethod
    def from_row(cls, row: Any) -> Self:
        """From a mapped row or a mapping of its columns (copying the JSON lists and dicts)."""
        get = row.get if isinstance(row, Mapping) else lambda name, default=None: getattr(row, name, default)
        values: dict[str, Any] = {}
        for f in _FIELDS[cls]:
            v = get(f)
            if isinstance(v, list):
                v = list(v)
            elif isinstance(v, dict):
                v = dict(v)
            if v is not None or f not in _DEFAULTED[cls]:
                values[f] = v
        return cls(**values)

    def columns(self) -> dict[str, Any]:
        """The row's columns, for a bulk write."""
        return {f: getattr(self, f) for f in _FIELDS[type(self)]}


@dataclass(slots=True, eq=False)
class Tps(_Row):
    """A polling station: its registry facts and its live state (check-ins, phase, silence)."""

    tps_id: str
    name: str
    kecamatan: str
    kabupaten: str = ""
    provinsi: str = ""
    desa: str = ""
    lat: float | None = None
    lon: float | None = None
    rawan: list[str] = field(default_factory=list)
    phase: str | None = None
    phase_at: datetime | None = None
    last_checkin_at: datetime | None = None  # device time of the newest check-in
    last_seen_at: datetime | None = None  # server time: newest check-in received, or phase start
    silent: bool = False
    assigned: int = 0  # personnel on the roster for this TPS
    checkins: dict[str, Any] = field(default_factory=dict)  # personnel id -> status, at, battery
    escorts: list[dict[str, Any]] = field(default_factory=list)  # ballot-box escorts: rules/escorts.py
    version: int = 1


@dataclass(slots=True, eq=False)
class Personnel(_Row):
    personnel_id: str
    name: str
    unit: str = ""
    role: str = ""
    tps_ids: list[str] = field(default_factory=list)
    status: str | None = None
    battery: int | None = None
    last_checkin_at: datetime | None = None
    lat: float | None = None  # the newest check-in location, when one was sent
    lon: float | None = None
    duty: list[list[str]] = field(default_factory=list)  # on-duty stretches of the last 24 h: rules/presence.py
    duty_days: list[str] = field(default_factory=list)  # dates (WIB) with an on-duty check-in: rules/presence.py


@dataclass(slots=True, eq=False)
class Incident(_Row):
    """An incident (or, with no TPS, an area incident over a kecamatan)."""

    id: str
    kecamatan: str
    category: str
    severity: str
    opened_at: datetime  # occurred_at of the first report (event time)
    received_at: datetime  # server time the first report arrived
    updated_at: datetime
    tps_id: str | None = None
    kabupaten: str = ""  # the TPS's regions (SPEC section 10)
    provinsi: str = ""
    level: int = 0
    status: str = "open"
    reports: int = 1
    report_ids: list[str] = field(default_factory=list)
    local_deadline: datetime | None = None  # event-time end of the on-site window
    escalate_at: datetime | None = None  # server time the window expiry acts
    ack_deadline: datetime | None = None
    reminders: int = 0
    levels_alerted: list[int] = field(default_factory=list)
    stakeholders_told: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    why: list[str] = field(default_factory=list)
    description: str = ""
    parent_id: str | None = None
    children: list[str] = field(default_factory=list)
    policy_version: int = 0
    resolved_at: datetime | None = None
    resolution: str | None = None
    last_alert_failure: str | None = None
    source: str = "field"  # how the first report came: field | sms | whatsapp | command_post
    orders: list[dict[str, Any]] = field(default_factory=list)  # field orders: services/dispatch/rules/orders.py
    code: str | None = None  # short code, unique among open incidents (siaga.short_codes)
    held_alerts: list[dict[str, Any]] = field(default_factory=list)  # held by a silence: rules/ladder.py
    version: int = 1


@dataclass(slots=True, eq=False)
class TimelineItem:
    """One link of an incident's hash-chained timeline, as the engine writes it (a row of `timelineentry`)."""

    incident_id: str
    seq: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True, slots=True)
class SilenceRule:
    """A silence as the engine applies it (a `silence` row): holds the alerts of what it matches."""

    id: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    kecamatan: str | None = None
    tps_id: str | None = None
    category: str | None = None
    kabupaten: str | None = None
    provinsi: str | None = None

    def in_force(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, inc: Incident) -> bool:
        return (
            (self.provinsi is None or self.provinsi == inc.provinsi)
            and (self.kabupaten is None or self.kabupaten == inc.kabupaten)
            and (self.kecamatan is None or self.kecamatan == inc.kecamatan)
            and (self.tps_id is None or self.tps_id == inc.tps_id)
            and (self.category is None or self.category == inc.category)
        )


def order_due_at(inc: Incident) -> datetime | None:
    """When the earliest unacknowledged order of the incident is due for its re-send or its flag."""
    due = [o["due_at"] for o in inc.orders if o.get("due_at")] if inc.orders else []
    return datetime.fromisoformat(min(due)) if due else None


@dataclass(slots=True, eq=False)
class Correction:
    """An operator's correction of an incident's category or severity, kept as a labelled example."""

    incident_id: str
    at: datetime
    actor: str
    text: str
    facts: dict[str, Any]
    rawan: list[str]
    source: str
    before: dict[str, Any]  # what the incident said: category, severity, why
    after: dict[str, Any]  # what the operator said: category, severity
    reason: str
    override: bool  # a severity below what the facts demand


_FIELDS: dict[type[Any], tuple[str, ...]] = {c: tuple(f.name for f in fields(c)) for c in (Tps, Personnel, Incident)}
# Fields whose default stands in for a NULL column (a JSON list or dict never stored).
_DEFAULTED: dict[type[Any], frozenset[str]] = {
    c: frozenset(f.name for f in fields(c) if f.default_factory is not MISSING) for c in _FIELDS
}
