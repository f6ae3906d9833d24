"""Inbound SMS (SPEC section 11): `POST /v1/gateway/sms` from a gateway phone or a provider.

A message from a number on the roster becomes ordinary field events (section 4: the same
validation, seen-id dedupe and bus as `/v1/events`), or, for `SELESAI`/`BANTUAN`/`OK <code>`, a
command to the partition owner of the incident's kecamatan. The gateway is answered at once with a
receipt to send back (`{"reply": ...}`, one SMS); the confirmation of what dispatch made of it
follows through the outbound SMS API.

Redelivery: the event id (and command id) is derived from the gateway device and its
`gateway_message_id`, so the same message posted twice is one event; namespacing by device keeps
one gateway from claiming another's ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Table, select

from services.ingest.service import DeviceGrant, Judged, bus_value, judge
from siaga import models, topics
from siaga import sms_grammar as grammar
from siaga.auth import bearer, hash_token
from siaga.bus import BusUnavailable
from siaga.clock import iso
from siaga.contracts import Escalate, IncidentStatus, KecamatanKey, ReplyOk, Resolve
from siaga.events import ReplyTo
from siaga.keys import kecamatan_key
from siaga.phones import normalise_phone

if TYPE_CHECKING:
    from services.ingest.app import Ingest  # which imports this module

log = logging.getLogger("siaga.ingest.gateway")
PERSONNEL: Table = models.Personnel.__table__  # type: ignore[attr-defined]
TPS: Table = models.Tps.__table__  # type: ignore[attr-defined]
INCIDENT: Table = models.Incident.__table__  # type: ignore[attr-defined]
POLICY: Table = models.PolicyVersion.__table__  # type: ignore[attr-defined]
ROUTING_REFRESH_S = 5.0  # a policy change reaches the SMS gateway within this long
T = TypeVar("T")
CHANNEL: Final = "sms"
_PREFIX = {"sms": "sms", "whatsapp": "wa"}  # of the event and command ids a message becomes
OPEN = [IncidentStatus.OPEN.value, IncidentStatus.ESCALATED.value, IncidentStatus.ACKNOWLEDGED.value]
EXAMPLE: dict[str, Any] = {
    "gateway_message_id": "gw1-000123",
    "from": "+6281234567890",
    "text": "LAPOR 12 massa ricuh di depan TPS",
    "received_at": "2024-11-27T08:15:00+07:00",
}


class SmsIn(BaseModel):
    """What a gateway posts for one received SMS."""

    # Providers add fields of their own: ignored.
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [dict(EXAMPLE)]})

    gateway_message_id: str = Field(
        min_length=1, max_length=128, description="The gateway's id of the message: a redelivery repeats it."
    )
    from_: str = Field(alias="from", min_length=1, max_length=40, description="The sender's number (+62...).")
    text: str = Field(max_length=1600, description="The message as received.")
    # Strict: an RFC 3339 string, never a number read as seconds since 1970.
    received_at: AwareDatetime = Field(strict=True, description="When the gateway received it (RFC 3339 with offset).")


class SmsReply(BaseModel):
    reply: str = Field(max_length=grammar.MAX_REPLY, description="A receipt to send back to the sender (one SMS).")


@dataclass(frozen=True)
class Inbound:
    """One received text message, from any gateway: SMS, or WhatsApp (services/ingest/whatsapp.py)."""

    message_id: str  # the gateway's or provider's id: a redelivery repeats it
    text: str
    received_at: datetime
    channel: Literal["sms", "whatsapp"]  # the incident's source, and how the confirmation goes back
    number_id: str | None = None  # WhatsApp: the business number it reached (phone_number_id)

    def reply_to(self, phone: str) -> ReplyTo:
        """Where dispatch's confirmation of this message goes."""
        return ReplyTo(channel=self.channel, phone=phone, number_id=self.number_id)


@dataclass(frozen=True)
class Sender:
    personnel_id: str
    tps: list[tuple[str, str]]  # (tps_id, name) of the TPS on the roster for them, in roster order


@dataclass(frozen=True)
class OpenIncident:
    id: str
    kecamatan: str
    tps_id: str | None
    assignees: frozenset[str] = frozenset()  # the people its field orders sent there


def routed_phones(policy_body: dict[str, Any] | None) -> dict[str, str]:
    """The SMS and WhatsApp numbers the policy's `alerts:` routing names (E.164), each with its
    recipient's name: they may answer `OK <code>` to an alert although they are not on the roster
    (SPEC section 11), and the timeline names them by the recipient, not the number."""
    alerts = (policy_body or {}).get("alerts") or {}
    phones: dict[str, str] = {}
    for r in alerts.get("recipients") or ():
        if isinstance(r, dict) and r.get("channel") in ("sms", "whatsapp"):
            phone = normalise_phone(str(r.get("target", "")))
            if phone:
                phones.setdefault(phone, str(r.get("name") or "recipient"))
    return phones


@dataclass(frozen=True)
class Outcome:
    """What the gateway is told: a status and a JSON body."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def _problem(status: int, detail: Any, headers: tuple[tuple[str, str], ...] = ()) -> Outcome:
    return Outcome(status, {"detail": detail}, headers)


def _said(text: str) -> Outcome:
    return Outcome(200, {"reply": text})


def message_id(device_id: str, gateway_message_id: str, prefix: str = "sms") -> str:
    """The event (and command) id of a gateway's message: the same message, the same id."""
    digest = hashlib.sha256(f"{device_id}|{gateway_message_id}".encode()).hexdigest()[:40]
    return f"{prefix}-{digest}"


_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


def _number_of(text: str) -> int | None:
    m = _TRAILING_NUMBER.search(text)
    return int(m.group(1)) if m else None


def pick_tps(sender: Sender, number: int | None) -> tuple[str, str] | None:
    """The sender's TPS with that number (its id's or name's trailing number), else None."""
    if number is None:
        return None
    for tps_id, name in sender.tps:
        if number in (_number_of(tps_id), _number_of(name)):
            return tps_id, name
    return None


class SmsGateway:
    """The inbound-SMS route's work, on ingest's database, rate limits and bus."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.ctx = ingest.ctx
        self._routed: tuple[float, dict[str, str]] | None = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ reads
    def _sender(self, phone: str) -> Sender | None:
        with self.ctx.engine.connect() as conn:
            row = conn.execute(
                select(PERSONNEL.c.personnel_id, PERSONNEL.c.tps_ids).where(PERSONNEL.c.phone == phone)
            ).first()
            if row is None:
                return None
            tps_ids = list(row[1] or [])
            names = dict(conn.execute(select(TPS.c.tps_id, TPS.c.name).where(TPS.c.tps_id.in_(tps_ids))).all())
        return Sender(row[0], [(t, names.get(t, t)) for t in tps_ids])

    def _open_incident(self, code: str) -> OpenIncident | None:
        """The open incident with this code (an indexed read: codes are unique among open incidents)."""
        with self.ctx.engine.connect() as conn:
            row = conn.execute(
                select(INCIDENT.c.id, INCIDENT.c.kecamatan, INCIDENT.c.tps_id, INCIDENT.c.orders).where(
                    INCIDENT.c.code == code, INCIDENT.c.status.in_(OPEN)
                )
            ).first()
        if row is None:
            return None
        assignees = frozenset(str(o.get("personnel_id")) for o in row[3] or () if isinstance(o, dict))
        return OpenIncident(row[0], row[1], row[2], assignees)

    def _routed_phones(self) -> dict[str, str]:
        """`routed_phones` of the policy in force (the newest stored version), read again every few seconds."""
        now = time.monotonic()
        if self._routed is not None and now - self._routed[0] < ROUTING_REFRESH_S:
            return self._routed[1]
        with self.ctx.engine.connect() as conn:
            body = conn.execute(select(POLICY.c.body).order_by(POLICY.c.version.desc()).limit(1)).scalar()
        phones = routed_phones(body if isinstance(body, dict) else None)
        self._routed = (now, phones)
        return phones

    def _judge(self, device: DeviceGrant, raw: dict[str, Any], now: datetime) -> Judged:
        db, s = self.ingest.db, self.ctx.settings
        with db.reading() as cur:
            return judge(
                [raw],
                device=device,
                kecamatan_of=lambda ids: db.kecamatan_of(cur, ids),
                seen=lambda ids: db.seen(cur, ids),
                now=now,
                future_skew_s=s.future_skew_s,
                max_age_s=s.max_age_s,
            )

    def _device(self, token_hash: str) -> DeviceGrant | None:
        db = self.ingest.db
        with db.reading() as cur:
            grant: DeviceGrant | None = db.device(cur, token_hash)
            return grant

    async def _inline(self, fn: Callable[..., T], *args: Any) -> T:
        """Ingest's own reads: inline on SQLite (its loop connection), in a thread elsewhere."""
        if self.ingest.db.inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ the request
    async def handle(self, authorization: str | None, body: bytes) -> Outcome:
        try:
            return await self._handle(authorization, body)
        except self.ingest.db.errors as exc:
            log.warning("database unavailable, answering 503: %s", type(exc).__name__)
            return _problem(503, "the database cannot be reached right now; retry later", (("Retry-After", "5"),))

    async def _handle(self, authorization: str | None, body: bytes) -> Outcome:
        token = bearer(authorization)
        if token is None:
            return _problem(
                401, "missing device token: send Authorization: Bearer <token>", (("WWW-Authenticate", "Bearer"),)
            )
        device = await self._inline(self._device, hash_token(token))
        if device is None:
            return _problem(401, "unknown or revoked device token", (("WWW-Authenticate", "Bearer"),))
        try:
            msg = SmsIn.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors()
            if errors and errors[0]["type"] == "json_invalid":
                return _problem(400, f"body is not valid JSON: {errors[0]['msg']}")
            return _problem(422, [_field_problem(e) for e in errors])
        phone = normalise_phone(msg.from_)
        if phone is None:
            return _problem(422, [{"field": "from", "message": "not a phone number (E.164, e.g. +6281234567890)"}])
        return await self.understand(device, phone, Inbound(msg.gateway_message_id, msg.text, msg.received_at, CHANNEL))

    async def understand(self, device: DeviceGrant | None, phone: str, msg: Inbound) -> Outcome:
        """A message from `phone` (E.164) read with the field grammar: a field event, a command, or a reply.

        `device` is the gateway that relayed it, whose grant bounds the TPS; None for a provider's
        webhook (WhatsApp), where the sender's own roster TPS are the bound.
        """
        wait = self.ingest.buckets.take(f"sender:{phone}", 1, time.monotonic())
        if wait > 0:
            return _problem(
                429, "this sender is sending too fast; slow down", (("Retry-After", str(max(1, round(wait)))),)
            )
        sender = await self._db(self._sender, phone)
        parsed = grammar.parse(msg.text)
        if sender is None:
            # Not on the roster: only `OK <code>` from a number the alert routing names (its alerts
            # carry the code); anything else is refused, and no event.
            if isinstance(parsed, grammar.OnIncident) and parsed.keyword is grammar.Keyword.OK:
                recipient = (await self._db(self._routed_phones)).get(phone)
                if recipient is not None:
                    return await self._on_incident(device, None, phone, msg, parsed, recipient=recipient)
            return _said(grammar.reply("unknown_sender"))
        if device is None:
            device = DeviceGrant(msg.channel, frozenset(t for t, _ in sender.tps), frozenset())
        if isinstance(parsed, grammar.NotUnderstood):
            return _said(grammar.reply(parsed.reply, **dict(parsed.values)))
        if isinstance(parsed, grammar.OnIncident):
            return await self._on_incident(device, sender, phone, msg, parsed)
        if not sender.tps:
            return _said(grammar.reply("no_tps"))
        return await self._field_event(device, sender, phone, msg, parsed)

    async def _field_event(
        self, device: DeviceGrant, sender: Sender, phone: str, msg: Inbound, parsed: grammar.Parsed
    ) -> Outcome:
        named = pick_tps(sender, parsed.tps_number) if isinstance(parsed, grammar.Report) else None
        tps_id, tps_name = named or sender.tps[0]
        event_id = message_id(device.device_id, msg.message_id, _PREFIX[msg.channel])
        raw: dict[str, Any] = {"event_id": event_id, "tps_id": tps_id, "occurred_at": iso(msg.received_at)}
        if isinstance(parsed, grammar.Report):
            text = parsed.rest if named else parsed.text
            raw |= {"type": "incident.reported", "payload": {"description": text}}
            key = "report" if named or len(sender.tps) == 1 else "report_other_tps"
            answer = grammar.reply(key, tps=tps_name, text=text)
        elif isinstance(parsed, grammar.Checkin):
            raw |= {"type": "checkin", "payload": {"personnel_id": sender.personnel_id, "status": parsed.status}}
            answer = grammar.reply("checkin", status=grammar.label(parsed.word), tps=tps_name)
        else:
            assert isinstance(parsed, grammar.SetPhase)
            raw |= {"type": "tps.status", "payload": {"phase": parsed.phase.value}}
            answer = grammar.reply("phase", tps=tps_name, phase=grammar.label(parsed.phase.value))
        now = self.ctx.clock.now()
        judged = await self._inline(self._judge, device, raw, now)
        if judged.rejected:
            r = judged.rejected[0]
            if r.status in (403, 404, 409):
                return _problem(r.status, r.message)
            field = "received_at" if r.field == "occurred_at" else r.field
            return _problem(422, [{"field": field, "message": r.message}])
        if judged.duplicates:
            return _said(grammar.reply("duplicate"))
        # A report's confirmation (its code, category and severity) follows from dispatch; a check-in's
        # or a phase's is the receipt itself.
        reply_to = msg.reply_to(phone) if isinstance(parsed, grammar.Report) else None
        items = [
            (
                kecamatan_key(judged.kecamatan[ev.tps_id]),
                bus_value(ev, device_id=device.device_id, received_at=now, channel=msg.channel, reply_to=reply_to),
            )
            for ev, _ in judged.fresh
        ]
        try:
            await self.ctx.bus.publish_many(
                topics.FIELD_EVENTS, items, timeout_s=self.ctx.settings.kafka_publish_timeout_s
            )
        except BusUnavailable as exc:
            log.warning("bus unavailable, answering 503: %s", exc)
            return _problem(503, "the event bus cannot take events right now; retry later", (("Retry-After", "5"),))
        await self.ingest.seen.record(judged.fresh, device_id=device.device_id, now=now)
        return _said(answer)

    async def _on_incident(
        self,
        device: DeviceGrant | None,
        sender: Sender | None,
        phone: str,
        msg: Inbound,
        parsed: grammar.OnIncident,
        *,
        recipient: str | None = None,
    ) -> Outcome:
        """SELESAI, BANTUAN or OK with a code: a command to the incident's owner, who tells the sender
        the outcome (`reply_to`). SELESAI and BANTUAN are for the incident's own TPS and the people
        sent there; whom an OK acknowledges (an order, or the incident) the owner decides. `recipient`:
        the routing recipient an unrostered sender is (the actor on the timeline)."""
        inc = await self._db(self._open_incident, parsed.code)
        if inc is None:
            return _said(grammar.reply("unknown_code", code=parsed.code))
        ok = parsed.keyword is grammar.Keyword.OK
        if sender is not None and not ok and not _theirs(sender, inc):
            return _said(grammar.reply("not_your_incident", code=parsed.code))
        who = sender.personnel_id if sender is not None else recipient or "unknown"
        relay = device.device_id if device is not None else msg.channel
        common: dict[str, Any] = {
            "command_id": message_id(relay, msg.message_id, _PREFIX[msg.channel]),
            "kecamatan": KecamatanKey(kecamatan=inc.kecamatan),
            "actor": f"{msg.channel}:{who}",
            "issued_at": self.ctx.clock.now(),
            "incident_id": inc.id,
            "reply_to": msg.reply_to(phone),
        }
        via = "WhatsApp" if msg.channel == "whatsapp" else "SMS"
        how = parsed.text or f"lewat {via}"
        command: Resolve | Escalate | ReplyOk
        if parsed.keyword is grammar.Keyword.SELESAI:
            command, key = Resolve(**common, resolution=how), "resolve"
        elif parsed.keyword is grammar.Keyword.BANTUAN:
            command, key = Escalate(**common, note=f"minta bantuan lewat {via}: {how}"), "backup"
        else:
            personnel_id = sender.personnel_id if sender is not None else None
            command, key = ReplyOk(**common, personnel_id=personnel_id), "ack"
        try:
            await self.ctx.bus.publish(
                topics.COMMANDS,
                command.bus_key(),
                command.to_bytes(),
                timeout_s=self.ctx.settings.kafka_publish_timeout_s,
            )
        except BusUnavailable as exc:
            log.warning("bus unavailable, answering 503: %s", exc)
            return _problem(503, "the event bus cannot take commands right now; retry later", (("Retry-After", "5"),))
        return _said(grammar.reply(key, code=parsed.code, text=how))


def _theirs(sender: Sender, inc: OpenIncident) -> bool:
    """The incident is at one of the sender's TPS, or a field order sent the sender there."""
    return inc.tps_id in {t for t, _ in sender.tps} or sender.personnel_id in inc.assignees


def _field_problem(error: Any) -> dict[str, str]:
    loc = [str(p) for p in error.get("loc", ())]
    field = ".".join(loc) or "body"
    return {"field": field, "message": str(error.get("msg", "invalid"))}
