"""The delivery key of an alert intent (the intent itself is siaga.contracts.AlertIntent)."""

from __future__ import annotations

from siaga.contracts import AlertIntent


def delivery_key(intent: AlertIntent, recipient_name: str) -> str:
    """`<incident_id>:<level>:<audience or stakeholder>/<recipient>:<reminder>` (docs/architecture.md)."""
    return f"{intent.incident_id}:{intent.level}:{intent.audience_key}/{recipient_name}:{intent.reminder}"
