"""Baselines: bare FastAPI routes that do the least a Siaga route's job needs.

`app`, for the ingest benchmark: a route that only does send_and_wait of the raw body, with the same
producer settings as Siaga's Kafka adapter (idempotent, acks=all), nothing else: no auth, no
validation, no database. Run: uvicorn bench.baseline_app:app (SIAGA_KAFKA_BOOTSTRAP, BENCH_TOPIC).

`inbox_app`, for the inbox benchmark: see below.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from siaga.auth import bearer, hash_token

TOPIC = os.environ.get("BENCH_TOPIC", "bench.baseline")
producer: AIOKafkaProducer | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global producer
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ["SIAGA_KAFKA_BOOTSTRAP"],
        enable_idempotence=True,
        acks="all",
        linger_ms=int(os.environ.get("BENCH_LINGER_MS", "5")),
    )
    await producer.start()
    yield
    await producer.stop()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/events", status_code=202)
async def post(request: Request) -> Response:
    assert producer is not None
    await producer.send_and_wait(TOPIC, await request.body())
    return Response(status_code=202)


# -- the inbox benchmark's baseline (bench.inbox) -------------------------------------------------
# A bare FastAPI route at the inbox's path that checks the device token the way ingest does (the
# SHA-256 of the bearer token, one indexed read of the device table for an active token) and
# answers 304 to a conditional request: nothing else (no targets, no items, no cursor).
# Run: uvicorn bench.baseline_app:inbox_app (BENCH_DATABASE: the SQLite file of the seeded devices).

INBOX_SQL = "SELECT device_id FROM device WHERE token_hash = ? AND revoked_at IS NULL"
_inbox_db: sqlite3.Connection | None = None


@asynccontextmanager
async def inbox_lifespan(_: FastAPI) -> AsyncIterator[None]:
    global _inbox_db
    _inbox_db = sqlite3.connect(os.environ["BENCH_DATABASE"], isolation_level=None)
    yield
    _inbox_db.close()


inbox_app = FastAPI(lifespan=inbox_lifespan)


@inbox_app.get("/healthz")
async def inbox_health() -> dict[str, str]:
    return {"status": "ok"}


@inbox_app.get("/v1/device/inbox")
async def inbox(request: Request) -> Response:
    assert _inbox_db is not None
    token = bearer(request.headers.get("authorization"))
    if token is None or _inbox_db.execute(INBOX_SQL, (hash_token(token),)).fetchone() is None:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    headers = {"ETag": '"i0"', "Cache-Control": "private, no-cache"}
    if request.headers.get("if-none-match"):
        return Response(status_code=304, headers=headers)
    return Response(b'{"items":[],"cursor":"0","more":false}', 200, headers, media_type="application/json")


# -- the inbox benchmark's floor (bench.inbox) ----------------------------------------------------
# What uvicorn itself costs a poll: a bare ASGI callable, no framework, no token check, no database,
# the same 304 (or an empty page to a poll without an ETag). No server answering HTTP on this stack
# does a poll for less. Run: uvicorn bench.baseline_app:inbox_floor.

EMPTY_PAGE = b'{"items":[],"cursor":"0","more":false}'
FLOOR_HEADERS = [(b"etag", b'"i0"'), (b"cache-control", b"private, no-cache")]


async def inbox_floor(scope: Scope, _receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to start
    if scope["path"] == "/healthz":
        status, body = 200, b'{"status":"ok"}'
    elif any(name == b"if-none-match" for name, _ in scope["headers"]):
        status, body = 304, b""
    else:
        status, body = 200, EMPTY_PAGE
    headers = FLOOR_HEADERS if status == 304 else [*FLOOR_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
