"""The ingest service: the field-device API of SPEC section 4."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError

from services.ingest.service import (
    DeviceGrant,
    Judged,
    Rejection,
    SeenWriter,
    TokenBuckets,
    TpsCache,
    bus_value,
    device_grant,
    judge,
)
from siaga import topics
from siaga.auth import bearer, hash_token
from siaga.bus import BusUnavailable
from siaga.events import FieldEvent
from siaga.openapi import inline_schema, json_body
from siaga.runtime import Context
from siaga.service import ServiceParts, build_app

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


class RejectedEvent(BaseModel):
    event_id: str | None
    index: int
    field: str
    message: str


class IngestAnswer(BaseModel):
    accepted: list[str] = Field(description="Event ids now durably on the bus.")
    duplicates: list[str] = Field(description="Event ids already received before (with the same content).")
    rejected: list[RejectedEvent] = Field(description="Events refused, each with the field and why.")


class Problem(BaseModel):
    detail: Any


BATCH_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "properties": {"events": {"type": "array", "maxItems": 500, "items": inline_schema(FieldEvent)}},
}
EXAMPLE = FieldEvent.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": IngestAnswer, "description": "Accepted: on the bus (or a duplicate of an event that is)."},
    400: {"model": Problem, "description": "The body is not JSON."},
    401: {"model": Problem, "description": "No device token, or an unknown or revoked one."},
    403: {"model": Problem, "description": "The device is not assigned to that TPS."},
    404: {"model": Problem, "description": "Unknown TPS."},
    409: {"model": Problem, "description": "The event_id was used before for different content."},
    413: {"model": Problem, "description": "Body over 1 MiB, or a batch over 500 events."},
    422: {"model": Problem, "description": "Invalid event; `detail` names the field and the problem."},
    429: {"model": Problem, "description": "The device exceeds its rate; retry after `Retry-After` seconds."},
    503: {"model": Problem, "description": "The bus cannot take the event now; retry after `Retry-After`."},
}


def _problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


class Ingest:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.tps = TpsCache(ctx.engine)
        self.seen = SeenWriter(ctx.engine)
        self.inline_db = ctx.engine.dialect.name == "sqlite"
        self.buckets = TokenBuckets(s.device_rate_per_s, s.device_burst)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a request's database work: inline on SQLite (a local read is quicker than a thread hop),
        in a worker thread on a database across the network."""
        if self.inline_db:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _events_of(self, body: bytes, *, batch: bool) -> list[Any] | JSONResponse:
        """The events of a body, or the answer that says why there are none."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _problem(400, f"body is not valid JSON: {exc}")
        if not batch:
            return [doc]
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            return _problem(422, [{"field": "events", "message": "must be a list of events"}])
        raws: list[Any] = doc["events"]
        if len(raws) > self.ctx.settings.max_batch:
            return _problem(413, f"a batch holds at most {self.ctx.settings.max_batch} events, got {len(raws)}")
        return raws

    def _check(
        self, token_hash: str, raws: list[Any] | JSONResponse, now: datetime
    ) -> tuple[DeviceGrant, Judged] | None:
        with self.ctx.engine.connect() as conn:  # one connection for the request's reads
            device = device_grant(conn, token_hash)
            if device is None:
                return None
            if isinstance(raws, JSONResponse):
                return device, Judged()
            s = self.ctx.settings
            judged = judge(
                raws,
                device=device,
                tps=self.tps,
                conn=conn,
                now=now,
                future_skew_s=s.future_skew_s,
                max_age_s=s.max_age_s,
            )
        return device, judged

    async def read_body(self, request: Request) -> bytes | JSONResponse:
        limit = self.ctx.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _problem(413, f"body is over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _problem(413, f"body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: Request, *, batch: bool) -> JSONResponse:
        route = "batch" if batch else "single"
        try:
            response = await self._handle(request, batch=batch)
        except (OperationalError, InterfaceError) as exc:
            log.warning("database unavailable, answering 503: %s", type(exc).__name__)
            response = _problem(503, "the database cannot be reached right now; retry later", {"Retry-After": "5"})
        REQUESTS.labels(route, str(response.status_code)).inc()
        return response

    async def _handle(self, request: Request, *, batch: bool) -> JSONResponse:
        token = bearer(request.headers.get("authorization"))
        if token is None:
            return _problem(401, "missing device token: send Authorization: Bearer <token>", UNAUTHORIZED)
        body = await self.read_body(request)
        if isinstance(body, JSONResponse):
            return body
        raws = self._events_of(body, batch=batch)
        now = self.ctx.clock.now()
        checked = await self._in_db(self._check, hash_token(token), raws, now)
        if checked is None:
            return _problem(401, "unknown or revoked device token", UNAUTHORIZED)
        if isinstance(raws, JSONResponse):
            return raws  # the body's problem, told only to a known device
        device, judged = checked
        wait = self.buckets.take(device.device_id, max(len(raws), 1), time.monotonic())
        if wait > 0:
            REJECTED.labels("rate_limited").inc(len(raws))
            return _problem(429, "device is sending too fast; slow down", {"Retry-After": str(max(1, round(wait)))})
        s = self.ctx.settings
        for r in judged.rejected:
            REJECTED.labels(_reason(r)).inc()
        if judged.fresh:
            items = [(ev.tps_id, bus_value(ev, device_id=device.device_id, received_at=now)) for ev, _ in judged.fresh]
            started = time.perf_counter()
            try:
                await self.ctx.bus.publish_many(topics.FIELD_EVENTS, items, timeout_s=s.kafka_publish_timeout_s)
            except BusUnavailable as exc:
                log.warning("bus unavailable, answering 503: %s", exc)
                REJECTED.labels("bus_unavailable").inc(len(items))
                return _problem(503, "the event bus cannot take events right now; retry later", {"Retry-After": "5"})
            BUS_LATENCY.observe(time.perf_counter() - started)
            await self.seen.record(judged.fresh, device_id=device.device_id, now=now)
        EVENTS.labels("accepted").inc(len(judged.fresh))
        EVENTS.labels("duplicate").inc(len(judged.duplicates))
        EVENTS.labels("rejected").inc(len(judged.rejected))
        if not batch and judged.rejected:
            r = judged.rejected[0]
            detail = r.message if r.status in (403, 404, 409) else [{"field": r.field, "message": r.message}]
            return _problem(r.status, detail)
        return JSONResponse(
            status_code=202,
            content={
                "accepted": [ev.event_id for ev, _ in judged.fresh],
                "duplicates": judged.duplicates,
                "rejected": [r.public() for r in judged.rejected],
            },
        )


def _reason(r: Rejection) -> str:
    return {401: "unauthorized", 403: "not_assigned", 404: "unknown_tps", 409: "conflict"}.get(
        r.status, f"invalid_{r.field.split('.')[0]}"
    )


def build(ctx: Context) -> ServiceParts:
    """The ingest routes (POST /v1/events and /v1/events/batch)."""
    ingest = Ingest(ctx)
    router = APIRouter(tags=["field events"])

    @router.post(
        "/v1/events",
        status_code=202,
        responses=RESPONSES,
        summary="Post one field event",
        openapi_extra=json_body(inline_schema(FieldEvent), {"incident report": EXAMPLE}),
        description="One event from a field device. Answered 202 only once the event is durably on the bus; "
        "a repeated event_id with the same content is answered as a duplicate.",
    )
    async def post_event(request: Request) -> JSONResponse:
        return await ingest.handle(request, batch=False)

    @router.post(
        "/v1/events/batch",
        status_code=202,
        responses=RESPONSES,
        summary="Post up to 500 field events",
        openapi_extra=json_body(BATCH_SCHEMA, {"backlog": {"events": [EXAMPLE]}}),
        description="A backlog from a device that was offline. Each event is judged on its own: `rejected` "
        "lists the refused ones with the field and why. Only an unreadable body or an unavailable bus fails "
        "the whole batch. A batch counts against the device's rate as at most one burst.",
    )
    async def post_batch(request: Request) -> JSONResponse:
        return await ingest.handle(request, batch=True)

    return ServiceParts(
        "ingest",
        router,
        start=ingest.seen.start,
        stop=ingest.seen.stop,
        openapi_tags=[{"name": "field events", "description": "What field devices post (SPEC section 4)."}],
    )


def create_app(ctx: Context) -> FastAPI:
    return build_app(ctx, [build(ctx)], title="Siaga ingest")
