"""The ingest service: the field-device API of SPEC section 4."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from services.ingest.gateway import EXAMPLE as SMS_EXAMPLE
from services.ingest.gateway import Outcome, SmsGateway, SmsIn, SmsReply
from services.ingest.inbox import InboxDb, InboxDevice, acknowledge, etag
from services.ingest.service import (
    DeviceGrant,
    IngestDb,
    Judged,
    Rejection,
    SeenWriter,
    TokenBuckets,
    bus_value,
    judge,
)
from services.ingest.whatsapp import EXAMPLE as WHATSAPP_EXAMPLE
from services.ingest.whatsapp import WhatsAppReceived, WhatsAppWebhook
from siaga import topics
from siaga.auth import bearer, hash_token
from siaga.bus import BusUnavailable
from siaga.events import FieldEvent, Text
from siaga.keys import kecamatan_key
from siaga.openapi import DEVICE_TOKEN, error_responses, inline_schema, json_body, secured
from siaga.runtime import Context
from siaga.service import Decline, ServiceParts, build_app

log = logging.getLogger("siaga.ingest")
T = TypeVar("T")

REQUESTS = Counter("siaga_ingest_requests_total", "Ingest HTTP requests by route and status", ["route", "status"])
EVENTS = Counter("siaga_ingest_events_total", "Field events by outcome", ["outcome"])
REJECTED = Counter("siaga_ingest_rejected_total", "Refused field events by reason", ["reason"])
BUS_LATENCY = Histogram(
    "siaga_ingest_bus_seconds",
    "Time for the broker to acknowledge a publish",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

SEEN_WAIT = Histogram(
    "siaga_ingest_seen_wait_seconds",
    "Time a request waits, after the broker's ack, for its event ids to be recorded as seen",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SEEN_PRUNED = Counter(
    "siaga_ingest_seen_pruned_total", "Seen event ids deleted as too old to matter (see Ingest.prune_seen)"
)


class RejectedEvent(BaseModel):
    event_id: str | None
    index: int
    field: str
    message: str


class IngestAnswer(BaseModel):
    accepted: list[str] = Field(description="Event ids now durably on the bus.")
    duplicates: list[str] = Field(description="Event ids already received before (with the same content).")
    rejected: list[RejectedEvent] = Field(description="Events refused, each with the field and why.")


BATCH_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "events": {
            "type": "array",
            "maxItems": 500,
            # Not FieldEvent's schema: a batch is judged event by event, so an item that is not a
            # valid event is listed in `rejected` (202) rather than refusing the batch.
            "items": {
                "description": "A field event, as POST /v1/events takes it. One that is not valid is "
                "listed in `rejected` with the field and why; the others are still accepted."
            },
        }
    },
}
EXAMPLE = FieldEvent.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
# What the device routes answer, as `serve_device_post` (the fast path) and the FastAPI routes both do.
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": IngestAnswer, "description": "Accepted: on the bus (or a duplicate of an event that is)."},
}
REFUSALS = {
    "_400": "The body is not JSON.",
    "_401": "No device token, or an unknown or revoked one.",
    "_403": "The device is not assigned to that TPS.",
    "_404": "Unknown TPS.",
    "_409": "The event_id was used before for different content.",
    "_413": "Body over 1 MiB, or a batch over 500 events.",
    "_422": "Invalid event: `detail` names the field and the problem.",
    "_429": "The device exceeds its rate; retry after `Retry-After` seconds.",
    "_503": "The bus or the database cannot take the event now; retry after `Retry-After` seconds.",
}
RESPONSES = ACCEPTED | error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503, **REFUSALS)
# In a batch, an unassigned or unknown TPS or a reused event_id refuses that event only (in `rejected`).
BATCH_RESPONSES = ACCEPTED | error_responses(
    400, 401, 413, 422, 429, 503, **REFUSALS | {"_422": "`events` is not a list."}
)


@dataclass(frozen=True)
class Answer:
    """What a device is told: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _problem(status: int, detail: Any, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, orjson.dumps({"detail": detail}), headers)


UNAUTHORIZED = (("WWW-Authenticate", "Bearer"),)
DB_DOWN = _problem(503, "the database cannot be reached right now; retry later", (("Retry-After", "5"),))
BUS_DOWN = _problem(503, "the event bus cannot take events right now; retry later", (("Retry-After", "5"),))
GIL_SWITCH_S = 0.001
PRUNE_ROWS = 5000  # seen ids deleted a transaction
ROUTES = {"/v1/events": False, "/v1/events/batch": True}  # path -> is a batch


class _Disconnected(Exception):
    """The client went away before its body arrived."""


# Metric children bound once: looking a label up costs more than the increment.
_ACCEPTED, _DUPLICATE, _REJECTED = (EVENTS.labels(o) for o in ("accepted", "duplicate", "rejected"))
_REQUESTS: dict[tuple[bool, int], Any] = {}


def _count_request(batch: bool, status: int) -> None:
    child = _REQUESTS.get((batch, status))
    if child is None:
        child = _REQUESTS[batch, status] = REQUESTS.labels("batch" if batch else "single", str(status))
    child.inc()


class Ingest:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.db = IngestDb(ctx.engine)
        self.seen = SeenWriter(self.db)
        self.buckets = TokenBuckets(s.device_rate_per_s, s.device_burst)
        self._pruning: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Database work in a worker thread (PostgreSQL's reads and group commits, SQLite's when the
        # lock stays busy) needs the GIL for a moment between driver calls. With CPython's default
        # 5 ms switch interval it waits behind the busy event loop, and every request waiting on it
        # waits too: 1 ms gave single events a quarter more throughput on two cores when SQLite's
        # commits ran in a thread (docs/benchmarks.md). Process-wide, and harmless elsewhere.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        await self.seen.start()
        self._pruning = asyncio.create_task(self._prune_every_interval(), name="ingest:prune-seen")

    async def stop(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
        await self.seen.stop()

    async def prune_seen(self) -> int:
        """Delete the seen ids too old to matter; how many.

        An event received at R has occurred_at at most R + future_skew_s, and a retry of it is
        accepted only while occurred_at is at most max_age_s old: after R + future_skew_s +
        max_age_s it is refused as too old, so its id need not be kept. Without this the table
        grows by every event ever accepted (~124 million rows on a national election day).
        """
        s = self.ctx.settings
        cutoff = self.ctx.clock.now() - timedelta(seconds=s.max_age_s + s.future_skew_s)
        total = 0
        while True:
            deleted = await asyncio.to_thread(self.db.prune, cutoff, limit=PRUNE_ROWS)
            total += deleted
            SEEN_PRUNED.inc(deleted)
            if deleted < PRUNE_ROWS:
                return total

    async def _prune_every_interval(self) -> None:
        while True:
            try:
                pruned = await self.prune_seen()
                if pruned:
                    log.info("pruned %d seen event ids too old to matter", pruned)
            except self.db.errors as exc:
                log.warning("could not prune seen event ids (will retry): %s", type(exc).__name__)
            await asyncio.sleep(self.ctx.settings.seen_prune_interval_s)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a request's database work: inline on SQLite (a local read is quicker than a thread hop),
        in a worker thread on a database across the network."""
        if self.db.inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _events_of(self, body: bytes, *, batch: bool) -> list[Any] | Answer:
        """The events of a body, or the answer that says why there are none."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _problem(400, f"body is not valid JSON: {exc}")
        if not batch:
            return [doc]
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            return _problem(422, [{"field": "events", "message": "must be a list of events"}])
        unknown = sorted(k for k in doc if k != "events")
        if unknown:
            return _problem(422, [{"field": unknown[0], "message": 'unknown field: a batch is {"events": [...]}'}])
        raws: list[Any] = doc["events"]
        if len(raws) > self.ctx.settings.max_batch:
            return _problem(413, f"a batch holds at most {self.ctx.settings.max_batch} events, got {len(raws)}")
        return raws

    def _check(self, token_hash: str, raws: list[Any] | Answer, now: datetime) -> tuple[DeviceGrant, Judged] | None:
        """The device behind the token and the request's events judged, on one connection."""
        with self.db.reading() as cur:
            device = self.db.device(cur, token_hash)
            if device is None:
                return None
            if isinstance(raws, Answer):
                return device, Judged()
            s = self.ctx.settings
            judged = judge(
                raws,
                device=device,
                kecamatan_of=lambda ids: self.db.kecamatan_of(cur, ids),
                seen=lambda ids: self.db.seen(cur, ids),
                now=now,
                future_skew_s=s.future_skew_s,
                max_age_s=s.max_age_s,
            )
        return device, judged

    async def read_body(self, content_length: str | None, chunks: AsyncIterator[bytes]) -> bytes | Answer:
        limit = self.ctx.settings.max_body_bytes
        if content_length and content_length.isdigit() and int(content_length) > limit:
            return _problem(413, f"body is over {limit} bytes")
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                return _problem(413, f"body is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def handle(
        self, authorization: str | None, content_length: str | None, chunks: AsyncIterator[bytes], *, batch: bool
    ) -> Answer:
        """One POST /v1/events (batch=False) or /v1/events/batch, from its headers and body."""
        try:
            answer = await self._handle(authorization, content_length, chunks, batch=batch)
        except self.db.errors as exc:
            log.warning("database unavailable, answering 503: %s", type(exc).__name__)
            answer = DB_DOWN
        _count_request(batch, answer.status)
        return answer

    async def _handle(
        self, authorization: str | None, content_length: str | None, chunks: AsyncIterator[bytes], *, batch: bool
    ) -> Answer:
        token = bearer(authorization)
        if token is None:
            return _problem(401, "missing device token: send Authorization: Bearer <token>", UNAUTHORIZED)
        body = await self.read_body(content_length, chunks)
        if isinstance(body, Answer):
            return body
        raws = self._events_of(body, batch=batch)
        now = self.ctx.clock.now()
        checked = await self._in_db(self._check, hash_token(token), raws, now)
        if checked is None:
            return _problem(401, "unknown or revoked device token", UNAUTHORIZED)
        if isinstance(raws, Answer):
            return raws  # the body's problem, told only to a known device
        device, judged = checked
        wait = self.buckets.take(device.device_id, max(len(raws), 1), time.monotonic())
        if wait > 0:
            REJECTED.labels("rate_limited").inc(len(raws))
            return _problem(429, "device is sending too fast; slow down", (("Retry-After", str(max(1, round(wait)))),))
        for r in judged.rejected:
            REJECTED.labels(_reason(r)).inc()
        if judged.fresh:
            # Keyed by kecamatan: its partition's owner decides all of the kecamatan, in order.
            items = [
                (kecamatan_key(judged.kecamatan[ev.tps_id]), bus_value(ev, device_id=device.device_id, received_at=now))
                for ev, _ in judged.fresh
            ]
            started = time.perf_counter()
            try:
                await self.ctx.bus.publish_many(
                    topics.FIELD_EVENTS, items, timeout_s=self.ctx.settings.kafka_publish_timeout_s
                )
            except BusUnavailable as exc:
                log.warning("bus unavailable, answering 503: %s", exc)
                REJECTED.labels("bus_unavailable").inc(len(items))
                return BUS_DOWN
            acked = time.perf_counter()
            BUS_LATENCY.observe(acked - started)
            await self.seen.record(judged.fresh, device_id=device.device_id, now=now)
            SEEN_WAIT.observe(time.perf_counter() - acked)
            _ACCEPTED.inc(len(judged.fresh))
        if judged.duplicates:
            _DUPLICATE.inc(len(judged.duplicates))
        if judged.rejected:
            _REJECTED.inc(len(judged.rejected))
        if not batch and judged.rejected:
            r = judged.rejected[0]
            detail = r.message if r.status in (403, 404, 409) else [{"field": r.field, "message": r.message}]
            return _problem(r.status, detail)
        return Answer(
            202,
            orjson.dumps(
                {
                    "accepted": [ev.event_id for ev, _ in judged.fresh],
                    "duplicates": judged.duplicates,
                    "rejected": [r.public() for r in judged.rejected],
                }
            ),
        )


async def serve_device_post(ingest: Ingest, scope: Scope, receive: Receive, send: Send, *, batch: bool) -> None:
    """POST /v1/events or /v1/events/batch as a bare ASGI handler (see `siaga.service.FastRoutes`).

    Field devices make nearly all of ingest's requests, and FastAPI's middleware stack, routing and
    dependency solving cost about as much CPU as ingest's own work on a single event
    (docs/benchmarks.md). The FastAPI routes below stay: they document these paths in the OpenAPI
    schema, and answer the same way (`Ingest.handle`) wherever the fast route is not in front.
    """
    authorization = content_length = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value.decode("latin-1")
    try:
        answer = await ingest.handle(authorization, content_length, _body(receive), batch=batch)
    except _Disconnected:
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer.body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def serve_inbox_poll(inbox: DeviceInbox, scope: Scope, receive: Receive, send: Send) -> None:
    """GET /v1/device/inbox as a bare ASGI handler: 5,000 phones poll it every 20 s (issue 15), and
    FastAPI's layers cost more than the poll. A query other than `since=<digits>` is declined, so
    FastAPI validates it and answers its 422."""
    query = scope.get("query_string", b"")
    since = 0
    if query:
        name, _, value = query.partition(b"=")
        if name != b"since" or not value.isdigit() or len(value) > 15 or b"&" in value:
            raise Decline
        since = int(value)
    authorization = if_none_match = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"if-none-match":
            if_none_match = value.decode("latin-1")
    answer = await inbox.answer(authorization, since, if_none_match)
    headers = [(k.lower().encode(), v.encode()) for k, v in answer.headers]
    if answer.status != 304:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _response(answer: Answer) -> Response:
    return Response(answer.body, answer.status, dict(answer.headers), media_type="application/json")


def _reason(r: Rejection) -> str:
    return {401: "unauthorized", 403: "not_assigned", 404: "unknown_tps", 409: "conflict"}.get(
        r.status, f"invalid_{r.field.split('.')[0]}"
    )


class InboxEntry(BaseModel):
    """One inbox item: a field order of siaga.field-orders (docs/architecture.md) with its `seq`."""

    model_config = ConfigDict(extra="allow")

    seq: int
    order_id: str = Field(description="The item's id: what the device acknowledges.")
    kind: str = Field(description="`assignment`, `help_on_the_way` or `message`.")
    target: dict[str, Any]
    actor: str
    issued_at: datetime


class InboxPage(BaseModel):
    items: list[InboxEntry] = Field(description="Oldest first.")
    cursor: str = Field(description="Send as `since` next time: the items after it follow, none twice.")
    more: bool = Field(description="True: more items wait; poll again at once.")


class InboxAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Text = ""


class InboxAcked(BaseModel):
    item_id: str
    incident_id: str | None = Field(description="The incident whose timeline has the acknowledgement (orders).")
    acknowledged: bool


INBOX_REFUSALS = error_responses(
    401,
    422,
    503,
    _401="No device token, or an unknown or revoked one.",
    _503="The database cannot be reached now; retry after `Retry-After` seconds.",
)


PAGE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": InboxPage, "description": "The items after `since`, oldest first."},
    304: {"description": "Nothing new since the `If-None-Match` ETag (no body)."},
}
ACKED: dict[int | str, dict[str, Any]] = {
    200: {"model": InboxAcked, "description": "Acknowledged (an order: on its incident's timeline)."}
}


class DeviceInbox:
    """GET /v1/device/inbox and POST /v1/device/inbox/{item_id}/ack (SPEC section 9)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.db = InboxDb(ingest.db)

    async def poll(self, authorization: str | None, since: int, if_none_match: str | None) -> Response:
        answer = await self.answer(authorization, since, if_none_match)
        if answer.status == 304:
            return Response(status_code=304, headers=dict(answer.headers))
        return Response(answer.body, answer.status, dict(answer.headers), media_type="application/json")

    async def answer(self, authorization: str | None, since: int, if_none_match: str | None) -> Answer:
        """A poll's answer: 200 with the page, 304 when the ETag still holds, 401, or 503."""

        def read() -> tuple[InboxDevice | None, Any]:
            with self.ingest.db.reading() as cur:
                token = bearer(authorization)
                device = self.db.device(cur, hash_token(token)) if token else None
                return device, (self.db.page(cur, device, since) if device else None)

        try:
            device, page = await self.ingest._in_db(read)
        except self.ingest.db.errors:
            return DB_DOWN
        if device is None:
            return _problem(401, "missing, unknown or revoked device token", UNAUTHORIZED)
        tag = etag(page.cursor)
        headers = (("ETag", tag), ("Cache-Control", "private, no-cache"))
        if if_none_match and tag in (t.strip() for t in if_none_match.split(",")):
            return Answer(304, b"", headers)
        return Answer(200, page.body, headers)

    async def ack(self, authorization: str | None, item_id: str, note: str) -> Response:
        def find() -> tuple[InboxDevice | None, Any]:
            with self.ingest.db.reading() as cur:
                token = bearer(authorization)
                device = self.db.device(cur, hash_token(token)) if token else None
                return device, (self.db.item(cur, device, item_id) if device else None)

        try:
            device, item = await self.ingest._in_db(find)
        except self.ingest.db.errors:
            return _response(DB_DOWN)
        if device is None:
            return _response(_problem(401, "missing, unknown or revoked device token", UNAUTHORIZED))
        if item is None:
            return _response(_problem(404, f"no inbox item {item_id!r} for this device"))
        ctx = self.ingest.ctx
        if item.incident_id is not None and item.kecamatan is not None:
            try:
                status = await acknowledge(
                    ctx, device_id=device.device_id, item_id=item_id, item=item, note=note, now=ctx.clock.now()
                )
            except (TimeoutError, BusUnavailable):
                return _response(
                    _problem(503, "dispatch did not take the acknowledgement in time; retry", (("Retry-After", "2"),))
                )
            if status == 404:
                return _response(_problem(404, f"the incident of inbox item {item_id!r} is gone"))
            if status >= 400:
                return _response(_problem(409, f"dispatch refused the acknowledgement ({status})"))
        body = {"item_id": item_id, "incident_id": item.incident_id, "acknowledged": True}
        return Response(orjson.dumps(body), 200, media_type="application/json")


def build(ctx: Context) -> ServiceParts:
    """The ingest routes (POST /v1/events and /v1/events/batch, the device inbox)."""
    ingest = Ingest(ctx)
    inbox = DeviceInbox(ingest)
    router = APIRouter(tags=["field events"])

    @router.post(
        "/v1/events",
        status_code=202,
        responses=RESPONSES,
        summary="Post one field event",
        openapi_extra=json_body(inline_schema(FieldEvent), {"incident report": EXAMPLE}) | secured(DEVICE_TOKEN),
        description="One event from a field device. Answered 202 only once the event is durably on the bus; "
        "a repeated event_id with the same content is answered as a duplicate.",
    )
    async def post_event(request: Request) -> Response:
        headers = request.headers
        answer = await ingest.handle(
            headers.get("authorization"), headers.get("content-length"), request.stream(), batch=False
        )
        return _response(answer)

    @router.post(
        "/v1/events/batch",
        status_code=202,
        responses=BATCH_RESPONSES,
        summary="Post up to 500 field events",
        openapi_extra=json_body(BATCH_SCHEMA, {"backlog": {"events": [EXAMPLE]}}) | secured(DEVICE_TOKEN),
        description="A backlog from a device that was offline. Each event is judged on its own: `rejected` "
        "lists the refused ones with the field and why. Only an unreadable body or an unavailable bus fails "
        "the whole batch. A batch counts against the device's rate as at most one burst.",
    )
    async def post_batch(request: Request) -> Response:
        headers = request.headers
        answer = await ingest.handle(
            headers.get("authorization"), headers.get("content-length"), request.stream(), batch=True
        )
        return _response(answer)

    @router.get(
        "/v1/device/inbox",
        tags=["device inbox"],
        summary="The device's orders and messages after a cursor",
        response_model=None,
        responses=PAGE_ANSWERS | INBOX_REFUSALS,
        openapi_extra=secured(DEVICE_TOKEN),
        description="Orders, notices and messages for the device's TPS, their kecamatan, its person, and "
        "everyone. Resume with the answer's `cursor` as `since`: no item is skipped or repeated. Send the "
        "last `ETag` as `If-None-Match` to get `304` when nothing is new. docs/field-app.md has the details.",
    )
    async def get_inbox(
        request: Request,
        since: Annotated[
            str, Query(pattern=r"^[0-9]{1,15}$", description="The `cursor` of the previous answer; 0 from the start.")
        ] = "0",
    ) -> Response:
        headers = request.headers
        return await inbox.poll(headers.get("authorization"), int(since), headers.get("if-none-match"))

    @router.post(
        "/v1/device/inbox/{item_id}/ack",
        tags=["device inbox"],
        summary="Acknowledge an inbox item (on the incident's timeline)",
        response_model=None,
        responses=ACKED
        | INBOX_REFUSALS
        | error_responses(
            400,
            404,
            409,
            _400="The body is not JSON.",
            _404="No such item for this device.",
            _409="Dispatch refused the acknowledgement.",
        ),
        openapi_extra=secured(DEVICE_TOKEN),
    )
    async def ack_inbox_item(
        request: Request,
        item_id: Annotated[str, Path(min_length=1, max_length=128)],
        body: InboxAck | None = None,
    ) -> Response:
        return await inbox.ack(request.headers.get("authorization"), item_id, body.note if body else "")

    gateway = SmsGateway(ingest)
    SMS_ANSWERED: dict[int | str, dict[str, Any]] = {
        200: {"model": SmsReply, "description": "A receipt to send back to the sender."}
    }
    gateways = APIRouter(tags=["gateways"])

    @gateways.post(
        "/v1/gateway/sms",
        status_code=200,
        responses=SMS_ANSWERED
        | error_responses(
            400,
            401,
            403,
            404,
            409,
            413,
            422,
            429,
            503,
            **REFUSALS
            | {
                "_403": "The gateway device is not assigned to the sender's TPS.",
                "_404": "The sender's TPS is not in the registry.",
                "_409": "The gateway_message_id was used before for a different message.",
                "_422": "Invalid body: `detail` names the field (`from` not a phone number, `received_at` "
                "more than 48 hours old or 10 minutes ahead).",
                "_429": "The sender sends too fast; retry after `Retry-After` seconds.",
            },
        ),
        summary="Post one received SMS (gateway device)",
        openapi_extra=json_body(inline_schema(SmsIn), {"report": SMS_EXAMPLE}) | secured(DEVICE_TOKEN),
        description="An SMS from a gateway phone or provider (SPEC section 11). A sender on the roster (by "
        "`phone`) is understood with the field grammar (docs/field-sms.md): a report, check-in or phase "
        "becomes a field event, `SELESAI`/`BANTUAN`/`OK <code>` a command on that incident. Answered at once "
        "with a receipt to send back; an unknown number gets a refusal and nothing is stored. The same "
        "`gateway_message_id` again is the same event.",
    )
    async def post_sms(request: Request) -> Response:
        return await _gateway_post(
            ingest, request, lambda body: gateway.handle(request.headers.get("authorization"), body)
        )

    whatsapp = WhatsAppWebhook(gateway)
    CHALLENGE: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "`hub.challenge`, as sent."}
    }
    WHATSAPP_TAKEN: dict[int | str, dict[str, Any]] = {
        200: {"model": WhatsAppReceived, "description": "Taken: its messages are on the bus."}
    }

    @gateways.get(
        "/v1/gateway/whatsapp",
        response_class=Response,  # no media type of its own: each answer's is declared below
        responses=CHALLENGE
        | error_responses(
            403,
            422,
            _403="`hub.verify_token` does not match SIAGA_WHATSAPP_VERIFY_TOKEN, or it is not set.",
            _422="Not a subscription check: `hub.mode=subscribe`, `hub.verify_token` and `hub.challenge` expected.",
        ),
        summary="WhatsApp Cloud API webhook: the verification handshake",
        description="Meta's subscription check: answered with `hub.challenge` when `hub.verify_token` matches.",
    )
    async def verify_whatsapp(
        mode: Annotated[str, Query(alias="hub.mode", pattern="^subscribe$", description="Always `subscribe`.")],
        token: Annotated[
            str, Query(alias="hub.verify_token", min_length=1, max_length=512, description="The verify token set.")
        ],
        challenge: Annotated[
            str, Query(alias="hub.challenge", min_length=1, max_length=512, description="Echoed back when it matches.")
        ],
    ) -> Response:
        status, text = whatsapp.verify(mode, token, challenge)
        if status == 200:
            return PlainTextResponse(text)
        return Response(orjson.dumps({"detail": text}), status, media_type="application/json")

    @gateways.post(
        "/v1/gateway/whatsapp",
        status_code=200,
        responses=WHATSAPP_TAKEN
        | error_responses(
            400,
            401,
            403,
            413,
            422,
            429,
            503,
            _401="`X-Hub-Signature-256` is missing or wrong: nothing was stored.",
            _403="SIAGA_WHATSAPP_APP_SECRET is not set.",
            _422="Not a Cloud API notification: `detail` names the field.",
            _429="The sender sends too fast; retry after `Retry-After` seconds.",
        ),
        summary="WhatsApp Cloud API webhook: messages",
        openapi_extra=json_body({"type": "object"}, {"text message": WHATSAPP_EXAMPLE}),
        description="Notifications from the WhatsApp Cloud API, signed with the app secret. Text messages are "
        "read with the SMS grammar (docs/field-sms.md) and answered through the Cloud API's `messages` "
        "endpoint; the same WhatsApp message id again is the same event. Statuses and other kinds are "
        "accepted and ignored.",
    )
    async def post_whatsapp(request: Request) -> Response:
        signature = request.headers.get("x-hub-signature-256")
        return await _gateway_post(ingest, request, lambda body: whatsapp.receive(signature, body))

    async def stop() -> None:
        await whatsapp.drain()
        await ingest.stop()

    router.include_router(gateways)
    return ServiceParts(
        "ingest",
        router,
        start=ingest.start,
        stop=stop,
        fast_routes={
            **{
                ("POST", path): functools.partial(serve_device_post, ingest, batch=batch)
                for path, batch in ROUTES.items()
            },
            ("GET", "/v1/device/inbox"): functools.partial(serve_inbox_poll, inbox),
        },
        openapi_tags=[
            {"name": "field events", "description": "What field devices post (SPEC section 4)."},
            {"name": "device inbox", "description": "Orders and messages for field devices (SPEC section 9)."},
            {
                "name": "gateways",
                "description": "SMS through a gateway, and WhatsApp through the Cloud API's webhook (SPEC section 11).",
            },
        ],
    )


async def _gateway_post(ingest: Ingest, request: Request, handle: Callable[[bytes], Awaitable[Outcome]]) -> Response:
    """A gateway's POST: the body read within the size limit (413), then its handler's outcome as JSON."""
    body = await ingest.read_body(request.headers.get("content-length"), request.stream())
    if isinstance(body, Answer):
        return _response(body)
    out = await handle(body)
    return Response(orjson.dumps(out.body), out.status, dict(out.headers), media_type="application/json")


def create_app(ctx: Context) -> FastAPI:
    return build_app(ctx, [build(ctx)], title="Siaga ingest")
