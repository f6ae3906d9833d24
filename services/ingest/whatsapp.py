"""Inbound WhatsApp (SPEC section 11): the WhatsApp Cloud API's webhook at `/v1/gateway/whatsapp`.

- `GET` is Meta's verification handshake: `hub.mode=subscribe`, `hub.verify_token` equal to
  `SIAGA_WHATSAPP_VERIFY_TOKEN`, answered with `hub.challenge` as plain text.
- `POST` carries notifications. `X-Hub-Signature-256` (`sha256=` and the hex HMAC-SHA256 of the raw
  body under the app secret, `SIAGA_WHATSAPP_APP_SECRET`) is checked before anything is read: a
  missing or wrong one is 401 and nothing is stored.
- Each text message is read with the SMS grammar by `SmsGateway.understand` (the sender is the
  roster's `phone`; the bound is their own TPS), idempotent by the WhatsApp message id (`wamid…`).
  Its reply goes back through the Cloud API's `messages` endpoint as free text, which WhatsApp allows
  inside the 24-hour window the sender's own message opened.
- Statuses (sent, delivered, read), other message types and other webhook fields are accepted and
  ignored. The webhook is answered 200 once its messages are on the bus, so Meta does not redeliver
  what was taken; the replies are sent after the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.ingest.gateway import Inbound, Outcome
from siaga.phones import normalise_phone

if TYPE_CHECKING:
    from services.ingest.gateway import SmsGateway

log = logging.getLogger("siaga.ingest.whatsapp")
CHANNEL: Final = "whatsapp"
REPLY_TIMEOUT_S = 10.0


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WaText(_Lenient):
    body: str = Field(max_length=4096)


class WaMessage(_Lenient):
    from_: str = Field(alias="from", max_length=40)
    id: str = Field(min_length=1, max_length=256)
    timestamp: str = Field(pattern=r"^[0-9]{1,12}$")  # seconds since 1970, as a string
    type: str
    text: WaText | None = None


class WaValue(_Lenient):
    messaging_product: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    messages: list[WaMessage] = Field(default_factory=list)


class WaChange(_Lenient):
    field: str
    value: WaValue


class WaEntry(_Lenient):
    id: str = ""
    changes: list[WaChange] = Field(default_factory=list)


class WaNotification(_Lenient):
    """What the Cloud API posts: `entry[].changes[].value.messages[]` (statuses and the rest ignored)."""

    object: str
    entry: list[WaEntry] = Field(default_factory=list)


class WhatsAppReceived(BaseModel):
    status: str = Field(description="`received`: the notification was taken.")


EXAMPLE: dict[str, Any] = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": "6281100001111", "phone_number_id": "1098765432"},
                        "contacts": [{"profile": {"name": "Bripka Ahmad"}, "wa_id": "6281211112222"}],
                        "messages": [
                            {
                                "from": "6281211112222",
                                "id": "wamid.HBgNNjI4MTIxMTExMjIyMhUCABIYFjNFQjA",
                                "timestamp": "1732670100",
                                "type": "text",
                                "text": {"body": "LAPOR 12 massa ricuh di depan TPS"},
                            }
                        ],
                    },
                }
            ],
        }
    ],
}


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` is `sha256=` + the HMAC-SHA256 of the body under the app secret."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


def _problem(status: int, detail: Any) -> Outcome:
    return Outcome(status, {"detail": detail})


class WhatsAppWebhook:
    """The webhook's work: verification, signature, messages to the grammar, replies to the Cloud API."""

    def __init__(self, gateway: SmsGateway) -> None:
        self.gateway = gateway
        self.settings = gateway.ctx.settings
        self._sending: set[asyncio.Task[bool]] = set()
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ GET: the handshake
    def verify(self, mode: str | None, token: str | None, challenge: str | None) -> tuple[int, str]:
        """(status, plain-text body) for Meta's subscription check."""
        expected = self.settings.whatsapp_verify_token
        if not expected:
            return 403, "WhatsApp intake is not configured: set SIAGA_WHATSAPP_VERIFY_TOKEN"
        if mode != "subscribe" or not challenge:
            return 400, "expected hub.mode=subscribe and a hub.challenge"
        if not token or not hmac.compare_digest(token.encode(), expected.encode()):
            return 403, "hub.verify_token does not match"
        return 200, challenge

    # ------------------------------------------------------------------ POST: notifications
    async def receive(self, signature: str | None, body: bytes) -> Outcome:
        secret = self.settings.whatsapp_app_secret
        if not secret:
            return _problem(403, "WhatsApp intake is not configured: set SIAGA_WHATSAPP_APP_SECRET")
        if not signature_ok(secret, body, signature):
            return _problem(401, "X-Hub-Signature-256 is missing or does not match the body")
        try:
            note = WaNotification.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                return _problem(400, f"body is not valid JSON: {first['msg']}")
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            return _problem(422, [{"field": where, "message": str(first.get("msg", "invalid"))}])
        replies: list[tuple[str, str, str]] = []  # (phone_number_id, to, text)
        for entry in note.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue
                number_id = str(change.value.metadata.get("phone_number_id") or "")
                for message in change.value.messages:
                    outcome = await self._message(message, number_id)
                    if outcome is None:
                        continue
                    if outcome.status == 503:  # the bus or database is down: Meta retries the whole post
                        return outcome
                    reply = outcome.body.get("reply")
                    if outcome.status == 200 and isinstance(reply, str):
                        replies.append((number_id, message.from_, reply))
                    else:
                        log.info("whatsapp message %s refused: %s %s", message.id, outcome.status, outcome.body)
        for number_id, to, text in replies:
            self._send_later(number_id, to, text)
        return Outcome(200, {"status": "received"})

    async def _message(self, message: WaMessage, number_id: str) -> Outcome | None:
        if message.type != "text" or message.text is None:
            return None  # images, locations, reactions...: not read (the grammar is text)
        phone = normalise_phone(message.from_)
        if phone is None:
            return _problem(422, [{"field": "from", "message": "not a phone number"}])
        received = datetime.fromtimestamp(int(message.timestamp), UTC)
        inbound = Inbound(
            message_id=message.id,
            text=message.text.body,
            received_at=received,
            channel=CHANNEL,
            number_id=number_id if number_id.isdigit() else None,
        )
        return await self.gateway.understand(None, phone, inbound)

    # ------------------------------------------------------------------ replies
    def _send_later(self, number_id: str, to: str, text: str) -> None:
        task = asyncio.create_task(self.send(number_id, to, text))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def send(self, number_id: str, to: str, text: str) -> bool:
        """One free-text reply through the Cloud API; whether it was accepted (failures are logged)."""
        token = self.settings.whatsapp_token
        number_id = number_id or (self.settings.whatsapp_phone_number_id or "")
        if not token or not number_id:
            log.warning("whatsapp reply not sent: SIAGA_WHATSAPP_TOKEN or the phone number id is not set")
            return False
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=REPLY_TIMEOUT_S)
        body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": text}}
        url = f"{self.settings.whatsapp_api_base.rstrip('/')}/{number_id}/messages"
        try:
            r = await self._http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            log.warning("whatsapp reply to a sender failed: %s", type(exc).__name__)
            return False
        if r.status_code >= 300:
            log.warning("whatsapp reply refused: HTTP %d %s", r.status_code, r.text[:200])
            return False
        return True

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the replies in flight, then close the client: at shutdown, and in tests."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout_s)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
