"""The baseline of the fan-out benchmark: a bare broadcast server with no logic.

One aiokafka consumer reads the updates topic (`BENCH_TOPIC`, from the beginning, no group) and
every record's value goes as it is to every connected WebSocket: no auth, no hub, no versions, no
seq, no statistics, no snapshot, unbounded queues. Clients that ask for `?batch=1` get what is
waiting as one `{"type":"batch","messages":[...]}` frame at most every 100 ms, the framing and pacing
the dashboard uses, so both servers send the same number of frames and the difference is the logic.

    SIAGA_KAFKA_BOOTSTRAP=... BENCH_TOPIC=... uvicorn bench.bare_broadcast:app --port 8001
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

BATCH_INTERVAL_S = 0.1


class Client:
    """One connection's pending messages and the event that wakes its sender."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.wake = asyncio.Event()


clients: set[Client] = set()


async def forward(consumer: AIOKafkaConsumer) -> None:
    """Hand every record's value to every client."""
    while True:
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for r in records:
                text = r.value.decode()
                for c in clients:
                    c.pending.append(text)
                    c.wake.set()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    consumer = AIOKafkaConsumer(
        os.environ["BENCH_TOPIC"],
        bootstrap_servers=os.environ["SIAGA_KAFKA_BOOTSTRAP"],
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    task = asyncio.create_task(forward(consumer))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.stop()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Readiness for the benchmark driver."""
    return {"status": "ok"}


@app.websocket("/ws")
async def ws(socket: WebSocket) -> None:
    """Accept anyone; send an empty snapshot (the clients expect a first frame), then forward."""
    await socket.accept()
    batch = socket.query_params.get("batch") == "1"
    client = Client()
    clients.add(client)
    receiver = asyncio.create_task(_drain(socket))
    try:
        await socket.send_text('{"type":"snapshot","incidents":[],"tps":[]}')
        while True:
            waker = asyncio.ensure_future(client.wake.wait())
            await asyncio.wait({waker, receiver}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if receiver.done():
                break  # the client left: end the handler so the close handshake completes
            client.wake.clear()
            out, client.pending = client.pending, []
            if batch and len(out) > 1:
                await socket.send_text('{"type":"batch","messages":[' + ",".join(out) + "]}")
            else:
                for text in out:
                    await socket.send_text(text)
            if batch:
                await asyncio.sleep(BATCH_INTERVAL_S)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        clients.discard(client)
        receiver.cancel()


async def _drain(socket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_text()
