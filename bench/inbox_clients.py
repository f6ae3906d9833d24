"""The polling devices of the inbox benchmark, their own process (so they do not share a server's loop).

Each device polls `GET /v1/device/inbox?since=<its cursor>` once every `--period` seconds, with its
last ETag as `If-None-Match`, on a fixed schedule (open loop): device i at phase i * period / devices,
so `devices / period` polls a second arrive evenly. A 200 gives the device a new cursor and ETag (its
state is kept in `--state`, a JSON file, between runs); a 304 keeps them.

    python -m bench.inbox_clients --url URL --devices devices.json --state state.json [--duration 20]

Protocol with bench.inbox: prints `ready` once the tokens are loaded, waits for a line on stdin,
polls for `--duration` s, waits for the answers in flight, prints `done`, then one JSON line of
results. `--prime` instead polls every device once as fast as `--connections` allow (no
schedule, no stdin) to give each a cursor and an ETag before the measured runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import percentile


class Conn:
    """One hand-written HTTP/1.1 connection (httpx costs milliseconds of CPU a request; see bench.loadgen)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: str, *, close: bool) -> tuple[int, dict[str, str], bytes]:
        """One GET; (status, lower-cased headers, body)."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "Connection: close\r\n" if close else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}{extra}\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if close or fields.get("connection", "").lower() == "close":
            await self.close()
        return status, fields, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Devices:
    """The devices' tokens and their inbox state (cursor, ETag)."""

    def __init__(self, tokens: list[str], state: dict[str, Any]) -> None:
        self.auth = [f"Authorization: Bearer {t}\r\n" for t in tokens]
        self.cursor: list[str] = list(state.get("cursor") or ["0"] * len(tokens))
        self.etag: list[str | None] = list(state.get("etag") or [None] * len(tokens))

    def state(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "etag": self.etag}


async def run(
    url: str,
    devices: Devices,
    *,
    period: float,
    duration: float,
    connections: int,
    prime: bool,
    go: asyncio.Event | None = None,
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    n = len(devices.auth)
    rate = n / period
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(max(connections, 1)):
        pool.put_nowait(Conn(host, port))
    close = connections == 0  # a new connection per poll
    statuses: Counter[int] = Counter()
    latency: dict[int, list[float]] = {200: [], 304: []}
    late: list[float] = []
    items = 0

    async def poll(i: int, due: float) -> None:
        nonlocal items
        conn = await pool.get()
        t0 = time.perf_counter()
        late.append(t0 - due)
        tag = devices.etag[i]
        headers = devices.auth[i] + (f"If-None-Match: {tag}\r\n" if tag else "")
        try:
            status, fields, body = await asyncio.wait_for(
                conn.get(f"/v1/device/inbox?since={devices.cursor[i]}", headers, close=close), 30
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            statuses[0] += 1
            await conn.close()
            pool.put_nowait(conn)
            return
        took = time.perf_counter() - t0
        pool.put_nowait(conn)
        statuses[status] += 1
        if status in latency:
            latency[status].append(took)
        if status == 200:
            page = json.loads(body)
            devices.cursor[i], devices.etag[i] = page["cursor"], fields.get("etag")
            items += len(page["items"])

    tasks: set[asyncio.Task[None]] = set()
    begin = time.perf_counter()
    j = 0
    if prime:
        for i in range(n):
            t = asyncio.create_task(poll(i, time.perf_counter()))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            if len(tasks) >= max(connections, 1) * 2:
                await asyncio.sleep(0)
                while len(tasks) >= max(connections, 1) * 2:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    else:
        end = begin + duration
        while True:
            due = begin + j / rate
            if due >= end:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(poll(j % n, due))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            j += 1
    if tasks:
        await asyncio.wait(tasks)
    elapsed = time.perf_counter() - begin
    while not pool.empty():
        await pool.get_nowait().close()
    answered = statuses[200] + statuses[304]
    every = latency[200] + latency[304]
    return {
        "polls": sum(statuses.values()),
        "answered": answered,
        "seconds": round(elapsed, 2),
        "polls_per_s": round(answered / elapsed, 1),
        "share_200_pct": round(100 * statuses[200] / max(answered, 1), 2),
        "items_received": items,
        "p50_ms": round(percentile(every, 0.5) * 1000, 2),
        "p99_ms": round(percentile(every, 0.99) * 1000, 2),
        "p50_304_ms": round(percentile(latency[304], 0.5) * 1000, 2),
        "p99_304_ms": round(percentile(latency[304], 0.99) * 1000, 2),
        "p50_200_ms": round(percentile(latency[200], 0.5) * 1000, 2),
        "late_p99_ms": round(percentile(late, 0.99) * 1000, 2),  # how far behind schedule a poll went out
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL of the ingest (or baseline) server")
    ap.add_argument("--devices", required=True, help="JSON file: the devices' bearer tokens, a list")
    ap.add_argument("--state", required=True, help="JSON file of each device's cursor and ETag (read, then written)")
    ap.add_argument("--period", type=float, default=20.0, help="seconds between two polls of a device (default 20)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of polling (default 20)")
    ap.add_argument(
        "--connections",
        type=int,
        default=32,
        help="kept-alive connections the polls share, as a proxy in front of ingest would (default 32); "
        "0: a new connection per poll",
    )
    ap.add_argument("--prime", action="store_true", help="poll every device once, unscheduled, and save the state")
    a = ap.parse_args()
    tokens = json.loads(Path(a.devices).read_text())
    state_path = Path(a.state)
    devices = Devices(tokens, json.loads(state_path.read_text()) if state_path.exists() else {})
    if not a.prime:
        print("ready", flush=True)
        sys.stdin.readline()
    cpu0 = time.process_time()
    result = asyncio.run(
        run(a.url, devices, period=a.period, duration=a.duration, connections=a.connections, prime=a.prime)
    )
    result["client_cpu_s"] = round(time.process_time() - cpu0, 2)
    if not a.prime:
        print("done", flush=True)
    state_path.write_text(json.dumps(devices.state()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
