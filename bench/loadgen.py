"""A closed-loop HTTP load generator, run as its own process so it does not share the server's loop.

Posts valid field events (single or batches) with `concurrency` requests in flight for `duration`
seconds and prints one JSON line: requests, events, rates, latency p50/p99, errors by status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bench.common import percentile


def _event(tps_id: str, kind: str = "report") -> dict[str, object]:
    if kind == "checkin":  # the bulk of a real day: personnel reporting in from their post
        typ, payload = "checkin", {"personnel_id": f"P-{tps_id}", "status": "on_duty", "battery": 80}
    else:
        typ, payload = "incident.reported", {"description": "Genset mati, TPS gelap", "category": "equipment"}
    return {
        "event_id": str(uuid.uuid4()),
        "type": typ,
        "tps_id": tps_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": payload,
    }


class Bodies:
    """Request bodies of fresh events, cheaply: one template per TPS, a new random UUID per event.

    Building each event as a dict and json.dumps-ing it cost the generator ~8 µs per event, a fifth
    of a core at 20,000 events/s taken from the server it measures. Event ids stay random UUIDs:
    sequential ids would make the server's index inserts unrealistically cheap.
    """

    def __init__(self, tps: list[str], kind: str = "report") -> None:
        template = json.dumps(_event("TPS", kind)).replace('"TPS"', '"%(tps)s"').replace('"P-TPS"', '"P-%(tps)s"')
        template = template.replace(str(json.loads(template)["event_id"]), "%(id)s")
        template = template.replace(str(json.loads(template)["occurred_at"]), "%(at)s")
        self.parts = [(template % {"tps": t, "id": "\0", "at": "\1"}).encode().split(b"\0") for t in tps]
        self.tps = tps

    def event(self, i: int, at: bytes) -> bytes:
        head, tail = self.parts[i % len(self.parts)]
        h = os.urandom(16).hex()
        uid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}".encode()
        return head + uid + tail.replace(b"\1", at, 1)

    def body(self, i: int, batch: int) -> bytes:
        at = datetime.now(UTC).isoformat().encode()
        if batch == 1:
            return self.event(i, at)
        return b'{"events":[' + b",".join(self.event(i + k, at) for k in range(batch)) + b"]}"


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand.

    httpx's pool costs several milliseconds of CPU per request at 32 requests in flight, so with
    httpx the load generator, not the server, was the limit (about 100 requests a second on two
    cores). This does only what a closed-loop POST needs.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """Send one POST and read the whole answer; its status code."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.head}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def run(
    url: str,
    token: str,
    tps: list[str],
    *,
    batch: int,
    concurrency: int,
    duration: float,
    reconnect: bool = False,
    kind: str = "report",
    rate: float = 0.0,
) -> dict[str, object]:
    """Keep `concurrency` requests in flight for `duration` seconds; counts, rate, latency, statuses.

    reconnect: a new connection for every request (`Connection: close`), as many devices each
    posting once; otherwise each of the `concurrency` connections is kept for the whole run.
    rate: events a second, paced on a schedule (open loop: request i goes at start + i * batch / rate,
    or as soon as a connection is free after that); 0 is as fast as the server answers.
    """
    parts = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if reconnect:
        headers["Connection"] = "close"
    path = "/v1/events/batch" if batch > 1 else "/v1/events"
    bodies = Bodies(tps, kind)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    events = 0
    begin = time.perf_counter()
    end = begin + duration

    async def worker(n: int) -> None:
        nonlocal events
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80, headers)
        i = n
        while time.perf_counter() < end:
            if rate > 0:
                delay = begin + i * batch / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.perf_counter() >= end:
                    break
            body = bodies.body(i, batch)
            i += concurrency
            t0 = time.perf_counter()
            try:
                code = await asyncio.wait_for(conn.post(path, body), 30)
                statuses[code] += 1
                if code == 202:
                    events += batch
                    latencies.append(time.perf_counter() - t0)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                statuses[0] += 1
                await conn.close()
        await conn.close()

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
    ap.add_argument(
        "--reconnect", action="store_true", help="a new connection per request (default: keep one per slot in flight)"
    )
    ap.add_argument(
        "--kind",
        choices=("report", "checkin"),
        default="report",
        help="report: incident reports (default); checkin: personnel check-ins, one person a TPS",
    )
    ap.add_argument(
        "--rate", type=float, default=0.0, help="events a second on a fixed schedule (default 0: as fast as answered)"
    )
    a = ap.parse_args()
    result = asyncio.run(
        run(
            a.url,
            a.token,
            a.tps.split(","),
            batch=a.batch,
            concurrency=a.concurrency,
            duration=a.duration,
            reconnect=a.reconnect,
            kind=a.kind,
            rate=a.rate,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
