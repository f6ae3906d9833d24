"""Dispatch's notifier: alert intents from siaga.alerts to Telegram, WhatsApp, Slack and webhooks.

- `routing.py`: who gets what (the policy's `alerts:` section plus the zero-config channels)
- `messages.py` + `templates/`: the words, in Indonesian or English
- `channels.py`: the providers' HTTP APIs
- `delivery.py`: retries, rate limits, circuit breakers
- `worker.py`: the consumer (`Notifier`); `telegram.py`: the Acknowledge/Resolve buttons

Dispatch implements the two protocols below (timeline entries, incident changes).
"""

from __future__ import annotations

from typing import Protocol

from services.dispatch.notifier.intent import delivery_key
from services.dispatch.notifier.routing import (
    AlertRouting,
    Recipient,
    routing_from_settings,
    select,
)
from services.dispatch.notifier.telegram import telegram_router
from services.dispatch.notifier.worker import Notifier
from siaga.contracts import AlertIntent


class DeliveryRecorder(Protocol):
    """Told of every delivery that reached a final state, so it shows on the incident timeline.

    May be told twice about the same key (at least once): it should be idempotent by key.
    """

    async def delivery(
        self, incident_id: str, *, key: str, channel: str, recipient: str, outcome: str, detail: str
    ) -> None: ...  # outcome: sent | failed


class IncidentActions(Protocol):
    """What a Telegram button may do to an incident.

    Raises LookupError for an unknown incident, ValueError when the incident does not allow it.
    """

    async def acknowledge(self, incident_id: str, *, actor: str) -> None: ...

    async def resolve(self, incident_id: str, *, actor: str, resolution: str) -> None: ...


__all__ = [
    "AlertIntent",
    "AlertRouting",
    "DeliveryRecorder",
    "IncidentActions",
    "Notifier",
    "Recipient",
    "delivery_key",
    "routing_from_settings",
    "select",
    "telegram_router",
]
