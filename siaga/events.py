"""The field event contract of SPEC section 4, as typed, validated models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator


class Category(StrEnum):
    FLOOD = "flood"
    VIOLENCE = "violence"
    CROWD = "crowd"
    INTIMIDATION = "intimidation"
    MONEY_POLITICS = "money_politics"
    LOGISTICS = "logistics"
    NEUTRALITY = "neutrality"
    FIRE = "fire"
    MEDICAL = "medical"
    EQUIPMENT = "equipment"
    TRAFFIC = "traffic"
    HOAX = "hoax"
    SILENT_POST = "silent_post"
    ESCORT_OVERDUE = "escort_overdue"
    COVERAGE = "coverage"
    OTHER = "other"


# Raised by Siaga itself (SPEC section 9), never chosen by a device, the classifier or an operator.
SYSTEM_CATEGORIES = frozenset({Category.SILENT_POST, Category.ESCORT_OVERDUE, Category.COVERAGE})
DEVICE_CATEGORIES = [c.value for c in Category if c not in SYSTEM_CATEGORIES]


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return SEVERITY_ORDER.index(self)

    def step_up(self, steps: int = 1) -> Severity:
        return SEVERITY_ORDER[min(self.rank + steps, len(SEVERITY_ORDER) - 1)]

    def at_least(self, other: Severity) -> Severity:
        return self if self.rank >= other.rank else other


SEVERITY_ORDER = [Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]


class EventType(StrEnum):
    INCIDENT_REPORTED = "incident.reported"
    INCIDENT_UPDATE = "incident.update"
    INCIDENT_RESOLVED = "incident.resolved"
    BACKUP_REQUESTED = "backup.requested"
    CHECKIN = "checkin"
    TPS_STATUS = "tps.status"
    ESCORT_DEPARTED = "escort.departed"
    ESCORT_ARRIVED = "escort.arrived"


class Phase(StrEnum):
    PREPARATION = "preparation"
    OPENING = "opening"
    VOTING = "voting"
    COUNTING = "counting"
    TRANSPORT = "transport"
    CLOSED = "closed"


def _no_nul(v: str) -> str:
    # PostgreSQL refuses NUL in text, and no device has a reason to send one.
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


Text = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_no_nul)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True), AfterValidator(_no_nul)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class Location(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class IncidentReported(_Payload):
    category: Category | None = Field(default=None, description="Omitted or `other`: classify from the text.")
    description: Text = ""
    injuries: int | None = Field(default=None, ge=0, le=100000)
    weapons: bool | None = None
    crowd_size: int | None = Field(default=None, ge=0, le=10_000_000)
    needs_backup: bool = False
    location: Location | None = None

    @field_validator("category")
    @classmethod
    def _not_internal(cls, v: Category | None) -> Category | None:
        if v in SYSTEM_CATEGORIES:
            raise ValueError(f"{v.value} is raised by Siaga itself, not by devices")
        return v

    @field_validator("injuries", "crowd_size", mode="before")
    @classmethod
    def _strict_int(cls, v: Any) -> Any:
        if isinstance(v, (bool, str)):
            raise ValueError("must be a whole number")
        return v

    @field_validator("weapons", "needs_backup", mode="before")
    @classmethod
    def _strict_bool(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v


class IncidentUpdate(_Payload):
    report_id: Id
    note: Text = ""


class IncidentResolved(_Payload):
    report_id: Id
    resolution: Text = ""


class BackupRequested(_Payload):
    report_id: Id
    reason: Text = ""


class Checkin(_Payload):
    personnel_id: Id
    status: Literal["on_duty", "off_duty", "unwell"]
    battery: int | None = Field(default=None, ge=0, le=100)
    location: Location | None = None


class TpsStatus(_Payload):
    phase: Phase
    note: Text = ""


BoxId = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True), AfterValidator(_no_nul)]
Place = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), AfterValidator(_no_nul)]
MAX_BOXES = 50  # a TPS has a handful of boxes (one per ballot); 50 leaves room for a PPK convoy


def _distinct(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("lists a box twice")
    return v


class EscortDeparted(_Payload):
    """Ballot boxes leave a TPS for the PPK under escort (SPEC section 9)."""

    box_ids: Annotated[list[BoxId], Field(min_length=1, max_length=MAX_BOXES), AfterValidator(_distinct)]
    from_tps: Id | None = Field(default=None, description="The TPS the boxes leave; omitted: the event's tps_id.")
    to: Place = Field(description="Where they go: the PPK, by name (for example `PPK Cikande`).")
    personnel_ids: list[Id] = Field(default_factory=list, max_length=50, description="Who escorts them.")
    expected_minutes: float = Field(gt=0, le=24 * 60, allow_inf_nan=False, description="Expected travel time.")


class EscortArrived(_Payload):
    """Ballot boxes of an escort reached their destination."""

    box_ids: Annotated[list[BoxId], Field(min_length=1, max_length=MAX_BOXES), AfterValidator(_distinct)]
    at: Place = Field(description="Where they arrived (the PPK).")
    personnel_ids: list[Id] = Field(default_factory=list, max_length=50, description="Who handed them over.")


PAYLOADS: dict[EventType, type[_Payload]] = {
    EventType.INCIDENT_REPORTED: IncidentReported,
    EventType.INCIDENT_UPDATE: IncidentUpdate,
    EventType.INCIDENT_RESOLVED: IncidentResolved,
    EventType.BACKUP_REQUESTED: BackupRequested,
    EventType.CHECKIN: Checkin,
    EventType.TPS_STATUS: TpsStatus,
    EventType.ESCORT_DEPARTED: EscortDeparted,
    EventType.ESCORT_ARRIVED: EscortArrived,
}


class FieldEvent(BaseModel):
    """One event from a field device, as posted to ingest."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "3f1c9a2e-8d4b-4b7e-9f7a-2c1d5e6f7a8b",
                    "type": "incident.reported",
                    "tps_id": "SRG-CKD-001",
                    "occurred_at": "2024-11-27T08:15:00+07:00",
                    "payload": {
                        "description": "Keributan antar pendukung, dua orang luka ringan",
                        "injuries": 2,
                        "weapons": False,
                        "crowd_size": 30,
                    },
                }
            ]
        },
    )

    event_id: Id = Field(description="Client-generated UUID: the idempotency key.")
    type: EventType
    tps_id: Id
    occurred_at: datetime = Field(description="RFC 3339 timestamp from the device clock, with offset.")
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a UTC offset (for example 2024-11-27T08:15:00+07:00 or ...Z)")
        return v

    @model_validator(mode="after")
    def _escort_leaves_its_tps(self) -> FieldEvent:
        if self.type is EventType.ESCORT_DEPARTED and self.payload.get("from_tps") not in (None, self.tps_id):
            raise ValueError("payload.from_tps must be the event's tps_id: an escort is reported by its own TPS")
        return self

    def typed_payload(self) -> _Payload:
        return PAYLOADS[self.type].model_validate(self.payload)


class ReplyTo(BaseModel):
    """Where the confirmation of a gateway message goes (SPEC section 11): the sender, by its channel."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    channel: Literal["sms", "whatsapp"]
    phone: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="The sender (E.164).")
    # WhatsApp: the business number the message reached (the notification's phone_number_id).
    number_id: str | None = Field(default=None, max_length=64, pattern=r"^[0-9]+$")


class BusEvent(BaseModel):
    """A field event as it travels on siaga.field-events: the device's event plus what ingest knew."""

    event: FieldEvent
    device_id: str
    received_at: datetime
    # How the event reached ingest: "sms" or "whatsapp" through a gateway (SPEC section 11). Left
    # out of the JSON for a field device, so its records keep the bytes they had before.
    channel: Literal["field", "sms", "whatsapp"] = Field(default="field", exclude_if=lambda v: v == "field")
    # The sender of a gateway message, told what dispatch made of it; left out for a field device.
    reply_to: ReplyTo | None = Field(default=None, exclude_if=lambda v: v is None)
