"""What Meta posts to a WhatsApp Cloud API webhook: notifications, text messages and the
`X-Hub-Signature-256` header, written from Meta's documented format (not from Siaga's parser)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Any

PHONE_NUMBER_ID = "1098765432"  # the business number the messages were sent to


def notification(*messages: dict[str, Any], statuses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One `whatsapp_business_account` notification carrying `messages` and/or `statuses`."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "6281100001111", "phone_number_id": PHONE_NUMBER_ID},
    }
    if messages:
        value["contacts"] = [{"profile": {"name": "Petugas"}, "wa_id": m["from"]} for m in messages]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1022", "changes": [{"field": "messages", "value": value}]}],
    }


def text(body: str, *, sender: str, at: datetime, wamid: str | None = None) -> dict[str, Any]:
    """A text message from `sender` (digits, country code first, as WhatsApp writes a number)."""
    return {
        "from": sender,
        "id": wamid or f"wamid.{uuid.uuid4().hex}",
        "timestamp": str(int(at.timestamp())),
        "type": "text",
        "text": {"body": body},
    }


def signature(secret: str, raw: bytes) -> str:
    """The `X-Hub-Signature-256` value Meta sends: HMAC-SHA256 of the raw body with the app secret."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
