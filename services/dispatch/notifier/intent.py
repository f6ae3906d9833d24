"""An alert intent as dispatch publishes it on siaga.alerts (docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from siaga.events import Severity


class AlertIntent(BaseModel):
    """Tell the recipients the routing selects about this incident, at this level or stakeholder."""

    model_config = ConfigDict(extra="ignore")

    alert_id: str
    incident_id: str = Field(min_length=1)
    level: int = Field(ge=0, le=3)
    audience: Literal["police", "stakeholder"]
    stakeholder: Literal["bpbd", "kpu", "bawaslu", "health"] | None = None
    reminder: int = Field(default=0, ge=0)
    reason: str = ""
    created_at: datetime | None = None
    incident: dict[str, Any] = Field(description="The public incident, as GET /v1/incidents/{id} returns it.")

    @model_validator(mode="after")
    def _consistent(self) -> AlertIntent:
        if self.audience == "stakeholder" and self.stakeholder is None:
            raise ValueError("a stakeholder alert names its stakeholder")
        Severity(self.incident.get("severity") or Severity.LOW)  # an unknown severity is refused here
        return self

    @property
    def audience_key(self) -> str:
        """`police`, or the stakeholder: the audience part of the idempotency key."""
        return self.stakeholder if self.audience == "stakeholder" and self.stakeholder else "police"

    @property
    def message_level(self) -> int:
        """The level a message names: the ladder level, or for a stakeholder the incident's level."""
        if self.audience == "police":
            return self.level
        try:
            return int(self.incident.get("level", self.level))
        except (TypeError, ValueError):
            return self.level


def delivery_key(intent: AlertIntent, recipient_name: str) -> str:
    """`<incident_id>:<level>:<audience or stakeholder>/<recipient>:<reminder>` (docs/architecture.md)."""
    return f"{intent.incident_id}:{intent.level}:{intent.audience_key}/{recipient_name}:{intent.reminder}"
