"""The baseline for the ingest benchmark: a bare FastAPI route that only does send_and_wait of the raw body.

Same producer settings as Siaga's Kafka adapter (idempotent, acks=all), nothing else: no auth,
no validation, no database. Run: uvicorn bench.baseline_app:app (SIAGA_KAFKA_BOOTSTRAP, BENCH_TOPIC).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response

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
