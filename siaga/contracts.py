"""The bus contract: one typed model for every message on every topic (SPEC section 3).

Producers build these models and put `to_bytes()` on the bus; consumers parse with
`model_validate_json` (or the adapters below for topics that carry several kinds) and send what
does not validate to siaga.dead-letter with the reason. Each model knows its topic and its key, so
the code that produces one never names a topic. The field event (`BusEvent`, siaga.field-events)
lives with the device contract in siaga.events. docs/architecture.md shows the JSON of each.

Readers ignore fields they do not know (a newer producer may add some); a producer extends a
model, never renames a field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from siaga import topics
from siaga.events import Category, Id, Phase, ReplyTo, Severity, Text
from siaga.keys import kecamatan_key

RegionName = Annotated[str, StringConstraints(max_length=128, strip_whitespace=True)]
Stakeholder = Literal["bpbd", "kpu", "bawaslu", "health"]
STAKEHOLDERS: tuple[Stakeholder, ...] = ("bpbd", "kpu", "bawaslu", "health")


class IncidentStatus(StrEnum):
    OPEN = "open"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class IncidentSource(StrEnum):
    """How the first report of an incident reached Siaga (SPEC section 5, operator judgement)."""

    FIELD = "field"  # a field device's event
    SMS = "sms"
    WHATSAPP = "whatsapp"
    COMMAND_POST = "command_post"  # taken by radio or phone at the command post (POST /v1/incidents)


class TpsState(StrEnum):
    """How the dashboard map colours a TPS."""

    NORMAL = "normal"
    OPEN = "open"
    ESCALATED = "escalated"
    SILENT = "silent"
    CLOSED = "closed"


class Audience(StrEnum):
    POLICE = "police"  # the ladder: level 1 Polsek, 2 Polres, 3 Polda/Brimob
    STAKEHOLDER = "stakeholder"  # told in parallel: BPBD, KPU/PPK, Bawaslu/Panwascam, health services


class Message(BaseModel):
    """A message on the bus: its topic, its key, its bytes."""

    model_config = ConfigDict(extra="ignore")

    TOPIC: ClassVar[str]

    def bus_key(self) -> str | None:
        """The message's key on its topic (the partition, and for compacted topics the identity)."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """UTF-8 JSON, compact, fields in declaration order."""
        return self.model_dump_json().encode()


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


def validation_problems(exc: ValidationError, limit: int = 5) -> str:
    """`field.path: what is wrong; ...` for a dead-letter reason (the first few problems)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:limit])


# -- siaga.incident-updates -------------------------------------------------------------------------
class IncidentPublic(_Part):
    """The incident as the API, the bus, the dashboard and alert webhooks show it (no timeline)."""

    id: Id
    tps_id: str | None = None  # None for an area incident
    tps_name: str | None = None
    kecamatan: str
    kabupaten: str = Field(default="", description="Its TPS's kabupaten/kota (SPEC section 10).")
    provinsi: str = Field(default="", description="Its TPS's provinsi.")
    category: Category
    severity: Severity
    level: int = Field(ge=0, le=3)
    status: IncidentStatus
    reports: int = Field(default=1, ge=0)
    opened_at: AwareDatetime  # event time of the first report
    received_at: AwareDatetime | None = None
    local_deadline: AwareDatetime | None = None
    ack_deadline: AwareDatetime | None = None
    why: list[str] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    parent_id: str | None = None
    children: list[str] = Field(default_factory=list)
    policy_version: int = 0
    updated_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    resolution: str | None = None
    last_alert_failure: str | None = None
    source: IncidentSource = IncidentSource.FIELD
    orders: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Field orders sent for it (SPEC section 9): who, when, attempt, and state "
        "(sent, resent, acknowledged, unanswered).",
    )
    code: str | None = Field(default=None, description="Short code for SMS follow-ups (`SELESAI <code>`).")
    held_alerts: int = Field(
        default=0, ge=0, description="Alerts a silence holds back now (SPEC section 5); they go out once it ends."
    )
    silenced_by: list[str] = Field(default_factory=list, description="The silences holding them back.")
    version: StrictInt = Field(ge=0, description="Grows with every change; a reader keeps only newer copies.")


class EscortPublic(_Part):
    """Ballot boxes on the road from a TPS to the PPK (SPEC section 9)."""

    escort_id: Id
    box_ids: list[str]
    arrived_box_ids: list[str] = Field(default_factory=list)
    to: str
    personnel_ids: list[str] = Field(default_factory=list)
    departed_at: AwareDatetime
    expected_at: AwareDatetime
    overdue: bool = Field(default=False, description="Past expected time plus grace: an escort_overdue incident.")
    incident_id: Id | None = None


class TpsPublic(_Part):
    """A TPS as the dashboard shows it."""

    tps_id: Id
    name: str = ""
    kecamatan: str
    kabupaten: str = Field(
        default="", description="The kabupaten/kota of the kecamatan (SPEC section 10).", exclude_if=lambda v: not v
    )
    provinsi: str = Field(default="", description="The provinsi of the kabupaten.", exclude_if=lambda v: not v)
    desa: str = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    rawan: list[str] = Field(default_factory=list)  # categories, and `remote`
    phase: Phase | None = None
    state: TpsState
    assigned: int = Field(default=0, ge=0)
    checked_in: int = Field(default=0, ge=0)
    last_checkin_at: AwareDatetime | None = None
    open_incidents: int = Field(default=0, ge=0)
    # The health of its personnel (SPEC section 9), summed per kecamatan by the dashboard. Each is
    # left out when zero: a national snapshot carries every TPS, and most have nothing to say.
    unwell: int = Field(
        default=0, ge=0, description="Personnel whose newest check-in here says unwell.", exclude_if=lambda v: not v
    )
    off_duty: int = Field(
        default=0, ge=0, description="Personnel whose newest check-in here says off_duty.", exclude_if=lambda v: not v
    )
    fatigued: int = Field(
        default=0,
        ge=0,
        description="Personnel on duty here over the policy's max_duty_hours in the last 24 h.",
        exclude_if=lambda v: not v,
    )
    lapsed: int = Field(
        default=0,
        ge=0,
        description="Personnel on duty here whose last check-in is over an hour old (gone silent).",
        exclude_if=lambda v: not v,
    )
    duty_days: int = Field(
        default=0,
        ge=0,
        description="The most days on duty of anyone checked in here (dates, WIB, with an on-duty check-in).",
        exclude_if=lambda v: not v,
    )
    # Left out when empty: most TPS have none, and a national snapshot carries every TPS.
    escorts: list[EscortPublic] = Field(
        default_factory=list, description="Boxes in transit from this TPS.", exclude_if=lambda v: not v
    )
    version: StrictInt = Field(ge=0)


class IncidentChanged(Message):
    """An incident's whole new state (siaga.incident-updates, key: the incident id)."""

    TOPIC: ClassVar[str] = topics.INCIDENT_UPDATES

    type: Literal["incident"] = "incident"
    incident: IncidentPublic

    def bus_key(self) -> str:
        return self.incident.id


class TpsChanged(Message):
    """A TPS's whole new state (siaga.incident-updates, key: `tps:<tps_id>`)."""

    TOPIC: ClassVar[str] = topics.INCIDENT_UPDATES

    type: Literal["tps"] = "tps"
    tps: TpsPublic

    def bus_key(self) -> str:
        return f"tps:{self.tps.tps_id}"


IncidentUpdate = Annotated[IncidentChanged | TpsChanged, Field(discriminator="type")]
INCIDENT_UPDATE: TypeAdapter[IncidentChanged | TpsChanged] = TypeAdapter(IncidentUpdate)


# -- siaga.alerts -----------------------------------------------------------------------------------
class AlertIntent(Message):
    """Tell the recipients the routing selects about this incident, at this level or stakeholder.

    siaga.alerts, key: the incident id. The notifier turns one intent into one message per recipient.
    """

    TOPIC: ClassVar[str] = topics.ALERTS

    alert_id: Id
    incident_id: Id
    level: int = Field(ge=0, le=3)
    audience: Audience
    stakeholder: Stakeholder | None = None
    reminder: int = Field(default=0, ge=0)
    reason: str = ""
    created_at: AwareDatetime | None = None
    incident: IncidentPublic

    @model_validator(mode="after")
    def _consistent(self) -> AlertIntent:
        if self.audience is Audience.STAKEHOLDER and self.stakeholder is None:
            raise ValueError("a stakeholder alert names its stakeholder")
        if self.incident.id != self.incident_id:
            raise ValueError(f"incident_id {self.incident_id!r} is not the incident's id {self.incident.id!r}")
        return self

    def bus_key(self) -> str:
        return self.incident_id

    @property
    def audience_key(self) -> str:
        """`police`, or the stakeholder: the audience part of the idempotency key."""
        return self.stakeholder if self.audience is Audience.STAKEHOLDER and self.stakeholder else "police"

    @property
    def message_level(self) -> int:
        """The level a message names: the ladder level, or for a stakeholder the incident's level."""
        return self.level if self.audience is Audience.POLICE else self.incident.level


class SitrepDue(Message):
    """Send the scheduled situation report of this moment to the routing's sitrep recipients (SPEC section 10).

    siaga.alerts, key `sitrep`: every notifier's scheduler may publish the same one, and the delivery
    key (`sitrep:<sitrep_id>/<recipient>`) makes each recipient get it once.
    """

    TOPIC: ClassVar[str] = topics.ALERTS

    sitrep_id: str = Field(min_length=1, max_length=64, description="The due moment, e.g. 2024-11-27T10:00+07:00.")
    at: AwareDatetime
    created_at: AwareDatetime | None = None

    def bus_key(self) -> str:
        return "sitrep"


# -- siaga.commands ---------------------------------------------------------------------------------
class KecamatanKey(_Part):
    """A kecamatan anywhere in the country: names repeat, so the triple is the identity.

    A registry that does not record provinsi and kabupaten yet leaves them empty (siaga.keys).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    provinsi: RegionName = ""
    kabupaten: RegionName = ""
    kecamatan: Id

    @property
    def key(self) -> str:
        """The bus key (`provinsi/kabupaten/kecamatan`, as field events are keyed): siaga.keys.kecamatan_key."""
        return kecamatan_key(self.kecamatan, kabupaten=self.kabupaten, provinsi=self.provinsi)


class CommandKind(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    NOTE = "note"
    CLASSIFY = "classify"
    REPORT = "report"  # a report taken by the command post (radio, phone)
    ASSIGN = "assign"
    ORDER_ACK = "order_ack"
    REPLY_OK = "reply_ok"  # `OK <code>` by SMS or WhatsApp (SPEC section 11)
    DELIVERY_OUTCOME = "delivery_outcome"
    REFRESH_TPS = "refresh_tps"


class DeliveryOutcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"


class _Command(Message):
    """An action for the owner of a kecamatan's partition to apply (siaga.commands, key: the kecamatan)."""

    TOPIC: ClassVar[str] = topics.COMMANDS

    command_id: Id = Field(description="Unique per action: a redelivered command is applied once.")
    kecamatan: KecamatanKey
    actor: Id = Field(description="Who: `operator:<token name>`, `device:<id>`, `notifier:<channel>`.")
    issued_at: AwareDatetime
    # A command from an SMS or WhatsApp message: the owner tells the sender what it made of it.
    reply_to: ReplyTo | None = None

    def bus_key(self) -> str:
        return self.kecamatan.key


class _IncidentCommand(_Command):
    incident_id: Id


class Acknowledge(_IncidentCommand):
    kind: Literal[CommandKind.ACKNOWLEDGE] = CommandKind.ACKNOWLEDGE


class Escalate(_IncidentCommand):
    kind: Literal[CommandKind.ESCALATE] = CommandKind.ESCALATE
    note: Text = ""


class Resolve(_IncidentCommand):
    kind: Literal[CommandKind.RESOLVE] = CommandKind.RESOLVE
    resolution: Text = ""


class AddNote(_IncidentCommand):
    kind: Literal[CommandKind.NOTE] = CommandKind.NOTE
    text: Text = Field(min_length=1)


class Classify(_IncidentCommand):
    """An operator's correction of category and/or severity (SPEC section 5, operator judgement)."""

    kind: Literal[CommandKind.CLASSIFY] = CommandKind.CLASSIFY
    category: Category | None = None
    severity: Severity | None = None
    reason: Text = Field(min_length=1)

    @model_validator(mode="after")
    def _something(self) -> Classify:
        if self.category is None and self.severity is None:
            raise ValueError("a correction names a category, a severity or both")
        return self


class ReportFromCommandPost(_Command):
    """A report that reached the command post by radio or phone, on behalf of a TPS."""

    kind: Literal[CommandKind.REPORT] = CommandKind.REPORT
    tps_id: Id
    description: Text = Field(min_length=1)
    category: Category | None = None
    injuries: int | None = Field(default=None, ge=0, le=100_000)  # the field event's bounds
    weapons: bool | None = None
    crowd_size: int | None = Field(default=None, ge=0, le=10_000_000)
    occurred_at: AwareDatetime | None = None  # None: when the command post took it


class Assign(_IncidentCommand):
    """Send a responder: a named person, or the nearest available one (SPEC section 9)."""

    kind: Literal[CommandKind.ASSIGN] = CommandKind.ASSIGN
    personnel_id: Id | None = None
    nearest: bool = False
    note: Text = ""
    eta_minutes: int | None = Field(default=None, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _one_way(self) -> Assign:
        if (self.personnel_id is not None) == self.nearest:
            raise ValueError("an assignment names personnel_id or asks for nearest, not both or neither")
        return self


class AcknowledgeOrder(_IncidentCommand):
    """A device (or `OK <code>` by SMS) acknowledges a field order; it goes on the incident's timeline."""

    kind: Literal[CommandKind.ORDER_ACK] = CommandKind.ORDER_ACK
    order_id: Id
    note: Text = ""


class ReplyOk(_IncidentCommand):
    """`OK <code>` from a phone (SPEC section 11): the sender's open order for the incident, if they
    have one; else, from a recipient of the incident's current level, the incident itself."""

    kind: Literal[CommandKind.REPLY_OK] = CommandKind.REPLY_OK
    personnel_id: Id | None = None  # None: a number the routing policy names, not on the roster
    reply_to: ReplyTo


class RecordDelivery(_IncidentCommand):
    """The notifier reports an alert delivery that reached a final state."""

    kind: Literal[CommandKind.DELIVERY_OUTCOME] = CommandKind.DELIVERY_OUTCOME
    key: Id  # the delivery's idempotency key
    channel: str
    recipient: str
    outcome: DeliveryOutcome
    detail: Text = ""


class RefreshTps(_Command):
    """The registry (TPS or roster import) changed these TPS: the owner reloads and announces them."""

    kind: Literal[CommandKind.REFRESH_TPS] = CommandKind.REFRESH_TPS
    tps_ids: list[Id] = Field(min_length=1)


Command = Annotated[
    Acknowledge
    | Escalate
    | Resolve
    | AddNote
    | Classify
    | ReportFromCommandPost
    | Assign
    | AcknowledgeOrder
    | ReplyOk
    | RecordDelivery
    | RefreshTps,
    Field(discriminator="kind"),
]
COMMAND: TypeAdapter[
    Acknowledge
    | Escalate
    | Resolve
    | AddNote
    | Classify
    | ReportFromCommandPost
    | Assign
    | AcknowledgeOrder
    | ReplyOk
    | RecordDelivery
    | RefreshTps
] = TypeAdapter(Command)
CommandBase = _Command  # what every command has: command_id, kecamatan, actor, issued_at


# -- siaga.replies ----------------------------------------------------------------------------------
class FieldReply(Message):
    """A confirmation to the sender of an SMS or WhatsApp message: what dispatch made of it.

    siaga.replies, key: the phone. The notifier sends it through the SMS gateway's API or WhatsApp's
    `messages` (free text: the sender's own message opened the 24-hour window).
    """

    TOPIC: ClassVar[str] = topics.REPLIES

    reply_id: Id = Field(description="Derived from the event or command it answers: a redelivery is one SMS.")
    to: ReplyTo
    text: Annotated[str, StringConstraints(min_length=1, max_length=160)]
    incident_id: Id | None = None
    created_at: AwareDatetime

    def bus_key(self) -> str:
        return self.to.phone


# -- siaga.field-orders -----------------------------------------------------------------------------
class TargetKind(StrEnum):
    TPS = "tps"
    KECAMATAN = "kecamatan"
    PERSON = "person"
    ALL = "all"


class OrderTarget(_Part):
    """Whose devices get it: a TPS, a kecamatan (its key), a person, or every device."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: TargetKind
    id: Id | None = None

    @model_validator(mode="after")
    def _id_unless_all(self) -> OrderTarget:
        if (self.kind is TargetKind.ALL) != (self.id is None):
            raise ValueError("a target names its id, except `all`, which has none")
        return self

    @property
    def key(self) -> str:
        """`tps:<id>`, `kecamatan:<provinsi/kabupaten/kecamatan>`, `person:<id>` or `all`."""
        return "all" if self.id is None else f"{self.kind.value}:{self.id}"


class OrderKind(StrEnum):
    ASSIGNMENT = "assignment"
    HELP_ON_THE_WAY = "help_on_the_way"
    MESSAGE = "message"


class Priority(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class _FieldOrder(Message):
    """Something for field devices' inboxes (siaga.field-orders, key: the target)."""

    TOPIC: ClassVar[str] = topics.FIELD_ORDERS

    order_id: Id = Field(description="The inbox item's id; a device acknowledges by it.")
    target: OrderTarget
    actor: Id
    issued_at: AwareDatetime

    def bus_key(self) -> str:
        return self.target.key


class Assignment(_FieldOrder):
    """Go to this incident (to the assignee's devices). Sent again once when not acknowledged in time."""

    kind: Literal[OrderKind.ASSIGNMENT] = OrderKind.ASSIGNMENT
    incident_id: Id
    personnel_id: Id
    note: Text = ""
    eta_minutes: int | None = Field(default=None, ge=0, le=24 * 60)
    attempt: int = Field(default=1, ge=1, le=2)


class HelpOnTheWay(_FieldOrder):
    """Help on the way ("bantuan dalam perjalanan"), to the devices of the incident's TPS."""

    kind: Literal[OrderKind.HELP_ON_THE_WAY] = OrderKind.HELP_ON_THE_WAY
    incident_id: Id
    assignment_id: Id  # the order_id of the assignment it announces
    eta_minutes: int | None = Field(default=None, ge=0, le=24 * 60)


class Broadcast(_FieldOrder):
    """An operator's message to field devices (`POST /v1/messages`), one per target."""

    kind: Literal[OrderKind.MESSAGE] = OrderKind.MESSAGE
    text: Text = Field(min_length=1)
    priority: Priority = Priority.NORMAL


FieldOrder = Annotated[Assignment | HelpOnTheWay | Broadcast, Field(discriminator="kind")]
FIELD_ORDER: TypeAdapter[Assignment | HelpOnTheWay | Broadcast] = TypeAdapter(FieldOrder)
