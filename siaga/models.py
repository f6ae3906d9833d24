"""Database tables shared by the services (the registry, tokens, incidents and their records).

Dispatch owns and writes the registry; ingest reads devices and writes seen event ids;
the dashboard reads tokens and the TPS registry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


def _json(default: Any = None) -> Any:
    return Field(default_factory=lambda: [] if default is None else default, sa_column=Column(JSON))


# -- registry -----------------------------------------------------------------------------------
class Tps(SQLModel, table=True):
    """A polling station (tempat pemungutan suara)."""

    tps_id: str = Field(primary_key=True, max_length=128)
    name: str
    kecamatan: str = Field(index=True)
    kabupaten: str = Field(default="", index=True)  # the regions above it (SPEC section 10)
    provinsi: str = Field(default="", index=True)
    desa: str = ""
    lat: float | None = None
    lon: float | None = None
    rawan: list[str] = _json()
    phase: str | None = None
    phase_at: datetime | None = None
    last_checkin_at: datetime | None = None  # device time of the newest check-in
    last_seen_at: datetime | None = None  # server time: newest check-in received, or phase start
    silent: bool = False
    assigned: int = 0  # personnel on the roster for this TPS
    checkins: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # personnel id -> status, at
    # Ballot-box escorts from this TPS (SPEC section 9), in transit and arrived: the custody chain.
    escorts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    version: int = 1

    # The silent-post check runs every second: find operating TPS that went quiet without a scan.
    __table_args__ = (Index("ix_tps_silence", "phase", "silent", "last_seen_at"),)


class Personnel(SQLModel, table=True):
    personnel_id: str = Field(primary_key=True, max_length=128)
    name: str
    unit: str = ""
    role: str = ""
    tps_ids: list[str] = _json()
    status: str | None = None
    battery: int | None = None
    last_checkin_at: datetime | None = None
    lat: float | None = None  # where the newest check-in that carried a location was sent from
    lon: float | None = None
    # E.164 (+62...), how an SMS or WhatsApp sender is known (siaga.phones); one person a number.
    phone: str | None = Field(default=None, index=True, unique=True, max_length=20)
    # Stretches on duty in the last 24 h, [[start, end], ...] (ISO times): the fatigue flag's input.
    duty: list[list[str]] = _json()
    # The dates (WIB) of the duty period on which the person checked in on duty: days on duty.
    duty_days: list[str] = _json()


class Device(SQLModel, table=True):
    """A field device, bound to TPS (or, for a gateway, to whole kecamatan)."""

    device_id: str = Field(primary_key=True, max_length=64)
    personnel_id: str | None = None
    token_hash: str = Field(index=True, unique=True)
    tps_ids: list[str] = _json()
    kecamatan: list[str] = _json()
    created_at: datetime
    revoked_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    """An operator, viewer or admin token; only its hash is stored."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    role: str
    token_hash: str = Field(index=True, unique=True)
    created_at: datetime
    revoked_at: datetime | None = None
    # {"provinsi": [...], "kabupaten": [...], "kecamatan": [...]} (SPEC section 10); None: sees everything
    scope: dict[str, list[str]] | None = Field(default=None, sa_column=Column(JSON))


class PolicyVersion(SQLModel, table=True):
    """Every escalation policy that was put in force (the newest wins)."""

    version: int | None = Field(default=None, primary_key=True)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime
    created_by: str = ""


# -- ingest ---------------------------------------------------------------------------------------
class SeenEvent(SQLModel, table=True):
    """An event id that the bus acknowledged, with a hash of its content (duplicate vs conflict)."""

    event_id: str = Field(primary_key=True, max_length=128)
    content_hash: str
    device_id: str
    received_at: datetime = Field(index=True)  # pruning: see services/ingest/service.py


# -- dispatch -------------------------------------------------------------------------------------
class ProcessedEvent(SQLModel, table=True):
    """A field event dispatch has applied; a redelivered copy is dropped by its id."""

    event_id: str = Field(primary_key=True, max_length=128)
    processed_at: datetime


class Silence(SQLModel, table=True):
    """A silence (SPEC section 5): while it is in force, the alerts of the incidents it matches are held.

    Every match field given must equal the incident's (at least one is). `ends_at` is moved to the
    time an operator ended it early, so "in force" is `starts_at <= now < ends_at` alone.
    """

    id: str = Field(primary_key=True, max_length=40)
    provinsi: str | None = None
    kabupaten: str | None = None
    kecamatan: str | None = None
    tps_id: str | None = None
    category: str | None = None
    starts_at: datetime
    ends_at: datetime = Field(index=True)
    reason: str
    created_by: str
    created_at: datetime
    ended_by: str | None = None  # who ended it early


class CommandResult(SQLModel, table=True):
    """What the partition owner made of a command (siaga.commands); the API that sent it waits for it.

    Written in the owner's batch transaction, so a redelivered command finds it and is not applied
    again. `status` is the HTTP status the action answers: 200, 404 (no such incident) or 409.
    """

    command_id: str = Field(primary_key=True, max_length=128)
    status: int
    incident_id: str | None = None
    detail: str = ""
    applied_at: datetime = Field(index=True)


class IncidentReport(SQLModel, table=True):
    """Which incident a field report (by its event_id) was merged into."""

    event_id: str = Field(primary_key=True, max_length=128)
    incident_id: str = Field(index=True)


_incident_version = Column("version", Integer, nullable=False, default=1)


class Incident(SQLModel, table=True):
    """An incident; `version` guards concurrent writers (an UPDATE that lost the race fails)."""

    id: str = Field(primary_key=True, max_length=40)
    tps_id: str | None = Field(default=None, index=True)
    kecamatan: str = Field(index=True)
    kabupaten: str = Field(default="", index=True)  # its TPS's regions (SPEC section 10): scoped reads
    provinsi: str = Field(default="", index=True)
    category: str
    severity: str
    level: int = 0
    status: str = Field(default="open", index=True)
    reports: int = 1
    report_ids: list[str] = _json()
    opened_at: datetime  # occurred_at of the first report (event time)
    received_at: datetime  # server time the first report arrived
    local_deadline: datetime | None = None  # event-time end of the on-site window
    escalate_at: datetime | None = Field(default=None, index=True)  # server time the window expiry acts
    ack_deadline: datetime | None = Field(default=None, index=True)
    reminders: int = 0
    levels_alerted: list[int] = _json()
    stakeholders_told: list[str] = _json()
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    why: list[str] = _json()
    description: str = ""
    parent_id: str | None = Field(default=None, index=True)
    children: list[str] = _json()
    policy_version: int = 0
    updated_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None
    last_alert_failure: str | None = None
    source: str = "field"  # field | sms | whatsapp | command_post (siaga.contracts.IncidentSource)
    orders: list[dict[str, Any]] = _json()  # field orders sent for it (SPEC section 9), with their state
    code: str | None = Field(default=None, index=True, max_length=8)  # short code (siaga.short_codes)
    held_alerts: list[dict[str, Any]] = _json()  # alerts a silence holds back (services/dispatch/rules/ladder.py)
    version: int = Field(default=1, sa_column=_incident_version)

    __table_args__ = (Index("ix_incident_tps_cat_status", "tps_id", "category", "status"),)
    __mapper_args__ = {"version_id_col": _incident_version, "version_id_generator": False}


class TimelineEntry(SQLModel, table=True):
    """One change of an incident: who or what did it, when, and why. Hash-chained per incident."""

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    seq: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    prev_hash: str = ""
    hash: str = ""

    __table_args__ = (UniqueConstraint("incident_id", "seq"),)


class Correction(SQLModel, table=True):
    """An operator's correction of an incident's classification: a labelled example for the lexicon.

    Written by the partition owner in the batch that applied the `classify` command.
    """

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    at: datetime = Field(index=True)
    actor: str
    text: str = ""  # the incident's description (the first report's text)
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # as dispatch read them
    rawan: list[str] = _json()  # the TPS's rawan categories when it was corrected
    source: str = "field"
    before: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # category, severity, why
    after: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # category, severity
    reason: str = ""
    override: bool = False  # a severity below what the facts demand


class Outbox(SQLModel, table=True):
    """Messages written in the same transaction as the change they announce; a relay publishes them."""

    id: int | None = Field(default=None, primary_key=True)
    topic: str
    key: str | None = None
    value: bytes
    created_at: datetime


class AlertDelivery(SQLModel, table=True):
    """One alert to one recipient, by idempotency key: sent at most once by this side.

    `sent` and `failed` (dead-lettered) are final: a redelivered alert intent finds them and
    sends nothing; `pending` is taken up again by the notifier that gets the intent next.
    """

    key: str = Field(primary_key=True, max_length=300)
    incident_id: str = Field(index=True)
    level: int = 0
    audience: str = ""  # police, or the stakeholder
    reminder: int = 0
    channel: str
    recipient: str  # the recipient's name in the routing (never the target: a hook URL is a credential)
    status: str  # pending | sent | failed
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None
    updated_at: datetime


class InboxItem(SQLModel, table=True):
    """One item of field devices' inboxes (SPEC section 9): an order, a notice or a message, per target.

    Written in the same transaction as the outbox row that puts it on siaga.field-orders, so an item
    is on the bus if and only if it is here. `seq` is the devices' cursor: inbox writers take a lock
    before inserting (PostgreSQL; SQLite has one writer), so items commit in `seq` order and a
    reader that resumes after `seq` misses none. `body` is the FieldOrder's JSON, as on the bus.
    """

    seq: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(index=True, max_length=128)  # the order_id a device acknowledges
    attempt: int = 1
    target_key: str = Field(max_length=300)  # tps:<id>, kecamatan:<key>, person:<id>, all
    kind: str
    incident_id: str | None = None
    kecamatan: str | None = None  # the incident's kecamatan: where an acknowledgement is sent
    body: str
    created_at: datetime

    __table_args__ = (Index("ix_inboxitem_target_seq", "target_key", "seq"),)
