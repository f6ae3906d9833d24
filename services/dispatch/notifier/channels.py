"""The four channels, each speaking its provider's real HTTP API (base URLs from settings).

A channel sends one message or raises DeliveryFailure saying whether trying again could help:
timeouts, connection errors, 429 and 5xx can; any other 4xx cannot.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from services.dispatch.notifier.messages import Message, load_templates
from services.dispatch.notifier.routing import Recipient
from siaga.clock import as_utc, iso
from siaga.contracts import AlertIntent, FieldReply, IncidentStatus
from siaga.settings import Settings

TELEGRAM_TEXT_MAX = 4096
USER_AGENT = "siaga-notifier/0.1"
# WhatsApp Cloud API error codes that mean "later" (rate limits, temporary trouble), sent with a 4xx.
WHATSAPP_RETRYABLE_CODES = frozenset({4, 80007, 130429, 131000, 131016, 131056})


@dataclass(frozen=True)
class Delivery:
    """One message to one recipient, and the idempotency key that names it: an alert (`intent`), a
    confirmation to the sender of an SMS or WhatsApp message (`reply`, by those two channels), or a
    scheduled situation report (`sitrep`, the JSON of services/dispatch/sitrep.py)."""

    key: str
    intent: AlertIntent | None
    recipient: Recipient
    message: Message
    reply: FieldReply | None = None
    sitrep: dict[str, Any] | None = None

    @property
    def alert(self) -> AlertIntent:
        if self.intent is None:
            raise TypeError(f"delivery {self.key} is a reply: it goes by sms or whatsapp, as text")
        return self.intent


REPLY_RECIPIENT = "field-reply"  # the recipient name of every confirmation (its target is the sender)


def reply_delivery(reply: FieldReply) -> Delivery:
    """The delivery of a confirmation: the reply's text as the message, to the sender's number."""
    # Built without validation: the routing's rule that a recipient gets some level or stakeholder
    # is about alerts; the number itself was validated with the reply.
    recipient = Recipient.model_construct(name=REPLY_RECIPIENT, channel=reply.to.channel, target=reply.to.phone)
    message = Message(title=reply.text, fields=(), link="", language="id", whatsapp_values=())
    return Delivery(key=reply.reply_id, intent=None, recipient=recipient, message=message, reply=reply)


class DeliveryFailure(Exception):
    """A send that did not go through.

    `retryable`: trying again later could work. `retry_after`: the provider said how long to wait.
    `destination_fault`: the destination itself is unwell (counts towards its circuit breaker).
    """

    def __init__(
        self, reason: str, *, retryable: bool, retry_after: float | None = None, destination_fault: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.destination_fault = destination_fault


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header as seconds from now: either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (as_utc(when) - as_utc(now)).total_seconds())


def _snippet(response: httpx.Response) -> str:
    return " ".join(response.text[:200].split())


def check_response(response: httpx.Response, now: datetime) -> None:
    """Raise DeliveryFailure unless the provider answered 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}: {_snippet(response)}"
    if status == 429:
        raise DeliveryFailure(
            detail,
            retryable=True,
            destination_fault=False,
            retry_after=retry_after_seconds(response.headers.get("retry-after"), now),
        )
    if status >= 500 or status == 408:
        raise DeliveryFailure(
            detail, retryable=True, retry_after=retry_after_seconds(response.headers.get("retry-after"), now)
        )
    raise DeliveryFailure(detail, retryable=False, destination_fault=False)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class Channel(ABC):
    """Sends messages of one kind; holds nothing but settings and the shared HTTP client."""

    name: str

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self.client, self.settings = client, settings

    def secrets(self) -> list[str | None]:
        """Values that must never appear in a log line."""
        return []

    @abstractmethod
    def misconfigured(self, recipient: Recipient) -> str | None:
        """Why this recipient cannot be sent to with the current settings, or None."""

    @abstractmethod
    async def send(self, delivery: Delivery, *, timeout_s: float, now: datetime) -> None:
        """Send once; raise DeliveryFailure on anything but success."""

    async def _post(self, url: str, *, timeout_s: float, **kw: Any) -> httpx.Response:
        try:
            return await self.client.post(url, timeout=timeout_s, **kw)
        except httpx.TimeoutException as exc:
            raise DeliveryFailure(f"timeout after {timeout_s:g}s ({type(exc).__name__})", retryable=True) from None
        except httpx.TransportError as exc:
            # The message of a transport error names the cause, not the URL (which may hold a token).
            raise DeliveryFailure(f"connection failed: {type(exc).__name__}: {exc}", retryable=True) from None


class TelegramChannel(Channel):
    """Bot API sendMessage, HTML parse mode, Acknowledge/Resolve buttons for chats that may act."""

    name = "telegram"

    def secrets(self) -> list[str | None]:
        return [self.settings.telegram_bot_token]

    def misconfigured(self, recipient: Recipient) -> str | None:
        if not self.settings.telegram_bot_token:
            return "telegram is not configured: set SIAGA_TELEGRAM_BOT_TOKEN"
        return None

    def method_url(self, method: str) -> str:
        return f"{self.settings.telegram_api_base.rstrip('/')}/bot{self.settings.telegram_bot_token}/{method}"

    def body(self, delivery: Delivery) -> dict[str, Any]:
        text = delivery.message.telegram_html()
        if len(text) > TELEGRAM_TEXT_MAX:
            # Cut on a line break so no HTML tag is left open.
            text = text[:TELEGRAM_TEXT_MAX].rsplit("\n", 1)[0]
        body: dict[str, Any] = {
            "chat_id": delivery.recipient.target,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if (
            delivery.intent is not None
            and delivery.recipient.can_act
            and delivery.intent.incident.status is not IncidentStatus.RESOLVED
        ):
            actions = load_templates(delivery.message.language).actions
            incident_id = delivery.alert.incident_id
            body["reply_markup"] = {
                "inline_keyboard": [
                    [
                        {"text": actions.acknowledge, "callback_data": callback_data("ack", incident_id)},
                        {"text": actions.resolve, "callback_data": callback_data("resolve", incident_id)},
                    ]
                ]
            }
        return body

    async def send(self, delivery: Delivery, *, timeout_s: float, now: datetime) -> None:
        response = await self._post(
            self.method_url("sendMessage"),
            json=self.body(delivery),
            timeout_s=timeout_s,
            headers={"User-Agent": USER_AGENT},
        )
        body = _json(response)
        if response.status_code == 429:
            seconds = (body.get("parameters") or {}).get("retry_after")
            header = retry_after_seconds(response.headers.get("retry-after"), now)
            raise DeliveryFailure(
                f"HTTP 429: {body.get('description', 'Too Many Requests')}",
                retryable=True,
                destination_fault=False,
                retry_after=float(seconds) if isinstance(seconds, int | float) else header,
            )
        check_response(response, now)
        if body.get("ok") is not True:
            raise DeliveryFailure(
                f"telegram refused: {body.get('description', _snippet(response))}",
                retryable=False,
                destination_fault=False,
            )


CALLBACK_ACTIONS = {"ack": "acknowledge", "resolve": "resolve"}


def callback_data(action: str, incident_id: str) -> str:
    """`<action>:<incident id>`; Telegram allows 64 bytes, incident ids are at most 40."""
    return f"{action}:{incident_id}"[:64]


def parse_callback_data(data: str) -> tuple[str, str] | None:
    """(acknowledge|resolve, incident id) from a button's callback_data, or None."""
    action, _, incident_id = data.partition(":")
    if action not in CALLBACK_ACTIONS or not incident_id:
        return None
    return CALLBACK_ACTIONS[action], incident_id


class WhatsAppChannel(Channel):
    """Cloud API messages with an approved template (free text is refused outside a 24 h window)."""

    name = "whatsapp"
    DEFAULT_TEMPLATE = "siaga_alert"
    SITREP_TEMPLATE = "siaga_sitrep"  # five parameters: title, TPS, incidents, oldest escalations, link

    def secrets(self) -> list[str | None]:
        return [self.settings.whatsapp_token]

    def misconfigured(self, recipient: Recipient) -> str | None:
        if not self.settings.whatsapp_token or not self.settings.whatsapp_phone_number_id:
            return "whatsapp is not configured: set SIAGA_WHATSAPP_TOKEN and SIAGA_WHATSAPP_PHONE_NUMBER_ID"
        return None

    def body(self, delivery: Delivery) -> dict[str, Any]:
        if delivery.reply is not None:
            # Free text: the sender's own message opened the 24-hour customer-service window.
            return {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": delivery.recipient.target.lstrip("+"),
                "type": "text",
                "text": {"preview_url": False, "body": delivery.reply.text},
            }
        templates = load_templates(delivery.message.language)
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": delivery.recipient.target.lstrip("+"),
            "type": "template",
            "template": {
                "name": self.SITREP_TEMPLATE
                if delivery.sitrep is not None
                else delivery.recipient.template or self.DEFAULT_TEMPLATE,
                "language": {"code": templates.whatsapp_language},
                "components": [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": v} for v in delivery.message.whatsapp_values],
                    }
                ],
            },
        }

    async def send(self, delivery: Delivery, *, timeout_s: float, now: datetime) -> None:
        # A reply goes from the business number the sender wrote to (the notification named it).
        number_id = (delivery.reply.to.number_id if delivery.reply else None) or self.settings.whatsapp_phone_number_id
        url = f"{self.settings.whatsapp_api_base.rstrip('/')}/{number_id}/messages"
        response = await self._post(
            url,
            json=self.body(delivery),
            timeout_s=timeout_s,
            headers={"Authorization": f"Bearer {self.settings.whatsapp_token}", "User-Agent": USER_AGENT},
        )
        if 400 <= response.status_code < 500 and response.status_code != 429:
            error = _json(response).get("error") or {}
            if error.get("code") in WHATSAPP_RETRYABLE_CODES:
                raise DeliveryFailure(
                    f"HTTP {response.status_code}: whatsapp error {error.get('code')}: {error.get('message', '')}",
                    retryable=True,
                    destination_fault=False,
                )
        check_response(response, now)


class SlackChannel(Channel):
    """Incoming webhook: the hook URL is the destination and the credential."""

    name = "slack"

    def misconfigured(self, recipient: Recipient) -> str | None:
        return None

    def body(self, delivery: Delivery) -> dict[str, Any]:
        return {"text": delivery.message.plain(), "blocks": delivery.message.slack_blocks()}

    async def send(self, delivery: Delivery, *, timeout_s: float, now: datetime) -> None:
        response = await self._post(
            delivery.recipient.target, json=self.body(delivery), timeout_s=timeout_s, headers={"User-Agent": USER_AGENT}
        )
        check_response(response, now)


class WebhookChannel(Channel):
    """A JSON POST signed with HMAC-SHA256 of the raw body (`X-Siaga-Signature: sha256=<hex>`)."""

    name = "webhook"

    def secrets(self) -> list[str | None]:
        return [self.settings.webhook_secret]

    def misconfigured(self, recipient: Recipient) -> str | None:
        return None

    @staticmethod
    def body(delivery: Delivery, now: datetime) -> bytes:
        if delivery.sitrep is not None:
            return orjson.dumps(
                {
                    "idempotency_key": delivery.key,
                    "sent_at": iso(now),
                    "recipient": delivery.recipient.name,
                    "text": delivery.message.plain(),
                    "sitrep": delivery.sitrep,
                }
            )
        incident = delivery.alert.incident.model_dump(mode="json")
        return orjson.dumps(
            {
                "idempotency_key": delivery.key,
                "sent_at": iso(now),
                "level": delivery.alert.message_level,
                "recipient": delivery.recipient.name,
                "text": delivery.message.plain(),
                "incident": incident,
            }
        )

    async def send(self, delivery: Delivery, *, timeout_s: float, now: datetime) -> None:
        raw = self.body(delivery, now)
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.key, "User-Agent": USER_AGENT}
        if delivery.recipient.secret:
            headers["X-Siaga-Signature"] = signature(delivery.recipient.secret, raw)
        response = await self._post(delivery.recipient.target, content=raw, headers=headers, timeout_s=timeout_s)
        check_response(response, now)


class SmsChannel(Channel):
    """An HTTP SMS gateway (SPEC section 11): `POST {SIAGA_SMS_API_BASE}/messages` with a bearer token.

    For recipients with no data coverage: one SMS with the title and the incident's short code, so
    the recipient can answer `OK <code>`. The idempotency key lets the gateway drop a retried send.
    """

    name = "sms"

    def secrets(self) -> list[str | None]:
        return [self.settings.sms_api_token]

    def misconfigured(self, recipient: Recipient) -> str | None:
        if not self.settings.sms_api_base or not self.settings.sms_api_token:
            return "sms is not configured: set SIAGA_SMS_API_BASE and SIAGA_SMS_API_TOKEN"
        return None

    @staticmethod
    def body(delivery: Delivery) -> dict[str, Any]:
        return {"to": delivery.recipient.target, "text": delivery.message.sms_text(), "idempotency_key": delivery.key}

    async def send(self, delivery: Delivery, *, timeout_s: float, now: datetime) -> None:
        url = f"{(self.settings.sms_api_base or '').rstrip('/')}/messages"
        headers = {
            "Authorization": f"Bearer {self.settings.sms_api_token}",
            "Idempotency-Key": delivery.key,
            "User-Agent": USER_AGENT,
        }
        response = await self._post(url, json=self.body(delivery), timeout_s=timeout_s, headers=headers)
        check_response(response, now)


def signature(secret: str, raw: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the raw body with the shared secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def verify_signature(secret: str, raw: bytes, header: str | None) -> bool:
    """True when the header is the body's signature (constant-time compare); for receivers and tests."""
    return bool(header) and hmac.compare_digest(signature(secret, raw), header or "")


def make_channels(client: httpx.AsyncClient, settings: Settings) -> dict[str, Channel]:
    channels: list[Channel] = [
        TelegramChannel(client, settings),
        WhatsAppChannel(client, settings),
        SlackChannel(client, settings),
        WebhookChannel(client, settings),
        SmsChannel(client, settings),
    ]
    return {c.name: c for c in channels}
