"""The load side of the fan-out benchmark: many WebSocket viewers in one process of their own.

Connects `--clients` WebSockets to `--url` (the dashboard's /ws, or bench/bare_broadcast.py's),
prints `{"ready": N}` once every client has its first frame, then reads until a line arrives on
standard input (or `--max-seconds` pass), closes, and prints one JSON line with what the clients saw:
frames and messages per client, delivery latency (the publisher's wall-clock time, carried in the
incident's `description` as `bench_ts=<unix seconds>`, to the arrival of the frame), clients that
fell behind (got a second snapshot), seq gaps and disconnects.

    python -m bench.fanout_clients --url ws://127.0.0.1:8000/ws --token T --clients 200 --batch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

from bench.common import percentile

TS = re.compile(r"bench_ts=([0-9.]+)")


@dataclass
class Seen:
    """What one client received."""

    frames: int = 0
    messages: int = 0
    snapshots: int = 0
    gaps: int = 0
    last_seq: int | None = None
    latencies: list[float] = field(default_factory=list)
    closed: str | None = None


def _messages(frame: dict[str, Any]) -> list[dict[str, Any]]:
    if frame.get("type") == "batch":
        return list(frame.get("messages", []))
    return [frame]


def take(seen: Seen, text: str | bytes, now: float) -> None:
    """Count one frame: its messages, seq continuity, snapshots and the latency of each update."""
    frame = orjson.loads(text)
    seen.frames += 1
    if frame.get("type") == "snapshot":
        seen.snapshots += 1
        seen.last_seq = frame.get("seq")
        return
    for msg in _messages(frame):
        seen.messages += 1
        seq = msg.get("seq")
        if isinstance(seq, int):
            if seen.last_seq is not None and seq != seen.last_seq + 1:
                seen.gaps += 1
            seen.last_seq = seq
        inc = msg.get("incident")
        if isinstance(inc, dict):
            m = TS.search(str(inc.get("description", "")))
            if m:
                seen.latencies.append(now - float(m.group(1)))


async def client(url: str, seen: Seen, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """One viewer: connect, mark ready on the first frame, count everything until stopped."""
    try:
        async with websockets.connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
            first = await ws.recv()
            take(seen, first, time.time())
            ready.set()
            reader = asyncio.ensure_future(_read(ws, seen))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            reader.cancel()
            stopper.cancel()
    except (OSError, websockets.WebSocketException) as exc:
        seen.closed = f"{type(exc).__name__}: {exc}"
        ready.set()


async def _read(ws: Any, seen: Seen) -> None:
    try:
        async for text in ws:
            take(seen, text, time.time())
    except websockets.ConnectionClosed as exc:
        seen.closed = f"closed {exc.rcvd.code if exc.rcvd else ''}"
        return
    seen.closed = "closed by the server"


async def run(url: str, n: int, max_seconds: float, connect_concurrency: int) -> dict[str, Any]:
    """Connect n clients, report ready, read until told to stop, and summarize."""
    stop = asyncio.Event()
    seens = [Seen() for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    gate = asyncio.Semaphore(connect_concurrency)

    async def one(i: int) -> None:
        async with gate:
            task = asyncio.ensure_future(client(url, seens[i], readies[i], stop))
            await readies[i].wait()
        await task

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    for r in readies:
        await r.wait()
    print(json.dumps({"ready": sum(1 for s in seens if s.closed is None)}), flush=True)
    loop = asyncio.get_running_loop()
    line = loop.run_in_executor(None, sys.stdin.readline)
    await asyncio.wait({asyncio.ensure_future(line)}, timeout=max_seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return summarize(seens)


def summarize(seens: list[Seen]) -> dict[str, Any]:
    """Totals over all clients; latency percentiles over every update every client got."""
    lat = [x for s in seens for x in s.latencies]
    frames = [s.frames for s in seens]
    messages = [s.messages for s in seens]

    def ms(q: float) -> float:
        return round(percentile(lat, q) * 1000, 1)

    return {
        "clients": len(seens),
        "frames_per_client": {"min": min(frames), "mean": round(sum(frames) / len(seens), 1), "max": max(frames)},
        "messages_per_client": {
            "min": min(messages),
            "mean": round(sum(messages) / len(seens), 1),
            "max": max(messages),
        },
        "updates_timed": len(lat),
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "max_ms": round(max(lat) * 1000, 1) if lat else float("nan"),
        "fell_behind": sum(1 for s in seens if s.snapshots > 1),
        "gaps": sum(s.gaps for s in seens),
        "dropped": sum(1 for s in seens if s.closed is not None),
        "drop_reasons": sorted({s.closed for s in seens if s.closed})[:5],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="WebSocket URL, token and options included")
    ap.add_argument("--clients", type=int, default=200, help="WebSocket clients (default 200)")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop by itself after this long (default 600)")
    ap.add_argument("--connect-concurrency", type=int, default=20, help="handshakes in flight (default 20)")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.url, a.clients, a.max_seconds, a.connect_concurrency))), flush=True)


if __name__ == "__main__":
    main()
