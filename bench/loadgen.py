"""A closed-loop HTTP load generator, run as its own process so it does not share the server's loop.

Posts valid field events (single or batches) with `concurrency` requests in flight for `duration`
seconds and prints one JSON line: requests, events, rates, latency p50/p99, errors by status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx


def _event(tps_id: str) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": tps_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"description": "Genset mati, TPS gelap", "category": "equipment", "injuries": 0},
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(
    url: str, token: str, tps: list[str], *, batch: int, concurrency: int, duration: float
) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = "/v1/events/batch" if batch > 1 else "/v1/events"
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    events = 0
    end = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal events
            i = n
            while time.perf_counter() < end:
                if batch > 1:
                    body = json.dumps({"events": [_event(tps[(i + k) % len(tps)]) for k in range(batch)]})
                else:
                    body = json.dumps(_event(tps[i % len(tps)]))
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, content=body)
                    statuses[r.status_code] += 1
                    if r.status_code == 202:
                        events += batch
                        latencies.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    statuses[0] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": sum(statuses.values()),
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "statuses": dict(statuses),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="base URL of the ingest (or baseline) server")
    ap.add_argument("--token", default="none", help="device bearer token")
    ap.add_argument("--tps", default="T0000", help="comma-separated TPS ids to post for")
    ap.add_argument("--batch", type=int, default=1, help="events per request (1 = POST /v1/events)")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    a = ap.parse_args()
    result = asyncio.run(
        run(a.url, a.token, a.tps.split(","), batch=a.batch, concurrency=a.concurrency, duration=a.duration)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
