"""End-to-end latency: POST /v1/events to the WebSocket frame that shows the incident.

The three services run as three processes on the real broker (`siaga dispatch --no-notifier`,
`siaga ingest`, `siaga dashboard`, one SQLite file), seeded through dispatch's admin API. This
process posts one report per TPS at a fixed rate (open loop: a slow answer does not slow the
schedule) and holds a viewer WebSocket on the dashboard; the latency of a report is the time from
just before its POST to the first frame that carries an incident of its TPS. Every TPS is
distinct and at most two sit in one kecamatan, so no spread (area) incident forms and every report
opens an incident of its own. The texts are the shared example reports, classified as usual.

Baseline, measured in the same run at the same rate: a bare Kafka round trip (an idempotent acks=all
producer sends, a consumer in the same process receives) - the floor the bus itself sets.

With `--background N`, a load-generator process posts N check-ins a second (single POSTs, one
person a TPS) to the same ingest for as long as the reports go: latency under a busy morning.

    .venv/bin/python -m bench.e2e_latency [--rate 20] [--duration 30] [--no-batch] [--background 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import websockets

from bench.common import ROOT, SIAGA, broker, database, loadavg, loadgen, percentile, process, say, table, unique, write
from bench.loadgen import Connection

EXAMPLES = ROOT.parent / "shared" / "examples" / "reports.jsonl"
FALLBACK_TEXT = "Genset mati, TPS gelap"
POST_CONNECTIONS = 64  # kept-alive connections the reports are posted over
PER_KECAMATAN = 2  # below the policy's spread threshold (3 in one kecamatan)


def report_texts() -> list[str]:
    """The shared example reports' descriptions (a realistic mix of categories)."""
    if not EXAMPLES.exists():
        return [FALLBACK_TEXT]
    texts = [str(json.loads(line)["description"]) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    return texts or [FALLBACK_TEXT]


def tps_csv(ids: list[str]) -> str:
    """The registry import: each TPS in a kecamatan of its own pair, spread over the map."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"])
    w.writeheader()
    for i, t in enumerate(ids):
        w.writerow(
            {
                "tps_id": t,
                "name": f"TPS {i:04d}",
                "kecamatan": f"Kec-{i // PER_KECAMATAN:04d}",
                "desa": "Desa",
                "lat": f"{-6.0 - (i % 50) * 0.01:.4f}",
                "lon": f"{106.0 + (i // 50) * 0.01:.4f}",
                "rawan": "",
            }
        )
    return buf.getvalue()


def summarize(latencies_s: list[float], posted: int, seen: int) -> dict[str, Any]:
    """p50/p90/p99/max in milliseconds, and how many were posted but never seen."""

    def ms(q: float) -> float:
        return round(percentile(latencies_s, q) * 1000, 1)

    return {
        "posted": posted,
        "seen": seen,
        "lost": posted - seen,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "max_ms": round(max(latencies_s) * 1000, 1) if latencies_s else float("nan"),
    }


# -- the baseline: a bare Kafka round trip --------------------------------------------------------
async def kafka_round_trip(bootstrap: str, topic: str, *, rate: float, count: int) -> dict[str, Any]:
    """Send `count` small messages at `rate` a second; a consumer in this process receives them."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from siaga.bus.kafka import KafkaBus

    # Create the topic and wait for its partition leaders, as the services do at start.
    bus = KafkaBus(bootstrap, partitions={topic: 12})
    await bus.start()
    await bus.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await consumer.start()
    # Every partition assigned up front: the first sends are not measured waiting for an assignment.
    consumer.assign([TopicPartition(topic, p) for p in range(12)])
    await producer.start()
    sent: dict[int, float] = {}
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < count:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    at = sent.get(int(r.key))
                    if at is not None:
                        latencies.append(now - at)

    try:
        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            body = orjson.dumps({"i": i, "at": datetime.now(UTC).isoformat()})
            await producer.send(topic, body, key=str(i).encode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver, timeout=30)
    finally:
        await producer.stop()
        await consumer.stop()
    return summarize(latencies, count, len(latencies))


# -- Siaga: three processes ---------------------------------------------------------------------
class Admin:
    """Dispatch's admin API, as an operator seeding the registry would use it."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def import_tps(self, ids: list[str]) -> None:
        r = self.http.post("/v1/admin/tps/import", content=tps_csv(ids).encode(), headers={"Content-Type": "text/csv"})
        r.raise_for_status()
        if r.json()["imported"] != len(ids):
            raise RuntimeError(f"TPS import refused rows: {r.json()['refused'][:3]}")

    def device(self, ids: list[str]) -> str:
        r = self.http.post("/v1/admin/devices", json={"personnel_id": "BENCH", "tps_ids": ids})
        r.raise_for_status()
        return str(r.json()["token"])

    def viewer(self) -> str:
        r = self.http.post("/v1/admin/tokens", json={"name": "bench-viewer", "role": "viewer"})
        r.raise_for_status()
        return str(r.json()["token"])


def _incidents(frame: dict[str, Any]) -> list[dict[str, Any]]:
    if frame.get("type") == "batch":
        return [m["incident"] for m in frame.get("messages", []) if m.get("type") == "incident"]
    if frame.get("type") == "incident":
        return [frame["incident"]]
    if frame.get("type") == "snapshot":
        return list(frame.get("incidents", []))
    return []


async def siaga_run(
    ingest: str, dashboard: str, *, device: str, viewer: str, ids: list[str], rate: float, drain_s: float, batch: bool
) -> dict[str, Any]:
    """Post one report per TPS at `rate`; time each until the dashboard's WebSocket shows it."""
    texts = report_texts()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    statuses: dict[int, int] = {}
    posted_all = False
    all_seen = asyncio.Event()
    ws_url = dashboard.replace("http://", "ws://") + f"/ws?token={viewer}" + ("&batch=1" if batch else "")
    async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
        first = orjson.loads(await ws.recv())
        if first.get("type") != "snapshot":
            raise RuntimeError(f"the dashboard's first frame is {first.get('type')!r}, not a snapshot")

        async def read() -> None:
            async for text in ws:
                now = time.perf_counter()
                for inc in _incidents(orjson.loads(text)):
                    tps_id = inc.get("tps_id")
                    if tps_id in sent and tps_id not in seen:
                        seen[tps_id] = now
                if posted_all and len(seen) >= len(sent):
                    all_seen.set()

        reader = asyncio.create_task(read())
        # The load generator's hand-written HTTP/1.1 connections, not httpx: at 100 requests a second
        # httpx's pool burnt most of a core of this process, which also reads the WebSocket.
        headers = {"Authorization": f"Bearer {device}", "Content-Type": "application/json"}
        parts = urlsplit(ingest)
        free: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(POST_CONNECTIONS):
            free.put_nowait(Connection(parts.hostname or "127.0.0.1", parts.port or 80, headers))

        async def post(i: int, tps_id: str) -> None:
            body = {
                "event_id": str(uuid.uuid4()),
                "type": "incident.reported",
                "tps_id": tps_id,
                "occurred_at": datetime.now(UTC).isoformat(),
                "payload": {"description": texts[i % len(texts)]},
            }
            content = orjson.dumps(body)
            sent[tps_id] = time.perf_counter()  # a device of its own would send now: waiting counts
            conn = await free.get()
            try:
                code = await asyncio.wait_for(conn.post("/v1/events", content), 60)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                await conn.close()
                code = 0
            free.put_nowait(conn)
            statuses[code] = statuses.get(code, 0) + 1
            if code != 202:
                sent.pop(tps_id, None)  # not accepted: not counted as posted

        tasks = []
        start = time.perf_counter()
        for i, tps_id in enumerate(ids):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i, tps_id)))
        await asyncio.gather(*tasks)
        posting_s = time.perf_counter() - start
        while not free.empty():
            await free.get_nowait().close()
        posted_all = True
        if len(seen) < len(sent):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_seen.wait(), drain_s)
        reader.cancel()
    latencies = [seen[t] - sent[t] for t in seen if t in sent]
    return {
        **summarize(latencies, len(sent), len([t for t in seen if t in sent])),
        "posting_s": round(posting_s, 2),
        "statuses": statuses,
    }


def _background(url: str, device: str, ids: list[str], rate: float, duration: float) -> Future[dict[str, Any]]:
    """Check-ins at `rate` a second for `duration` s from bench/loadgen.py, in a thread (its process)."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(
        loadgen,
        url,
        token=device,
        tps=ids,
        batch=1,
        concurrency=64,
        duration=duration,
        kind="checkin",
        max_tps=1000,
        rate=rate,
    )
    pool.shutdown(wait=False)
    return future


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20.0, help="reports a second (default 20)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of posting (default 30)")
    ap.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last frames (default 30)")
    ap.add_argument("--no-batch", action="store_true", help="WebSocket without &batch=1 (the page batches)")
    ap.add_argument(
        "--background",
        type=float,
        default=0.0,
        help="check-ins a second posted alongside (single POSTs from a load-generator process; default 0)",
    )
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="sqlite: one file the three services share (default); postgres: a server started for the run "
        "(results *_postgres.json)",
    )
    a = ap.parse_args()
    count = max(1, int(a.rate * a.duration))
    load_start = loadavg()
    with broker() as bootstrap, database(a.database) as db_url:
        prefix = unique("benche")
        say(f"baseline: bare Kafka round trip, {count} messages at {a.rate}/s")
        base = asyncio.run(kafka_round_trip(bootstrap, prefix + "roundtrip", rate=a.rate, count=count))
        say(f"  p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms, lost {base['lost']}")
        admin_token = "adm_" + uuid.uuid4().hex
        env = dict(
            os.environ,
            SIAGA_KAFKA_BOOTSTRAP=bootstrap,
            SIAGA_TOPIC_PREFIX=prefix,
            SIAGA_DATABASE_URL=db_url,
            SIAGA_ADMIN_TOKEN=admin_token,
            SIAGA_ACCESS_LOG="false",
            SIAGA_LOG_LEVEL="WARNING",
            SIAGA_DEVICE_RATE_PER_S="1000000",
            SIAGA_DEVICE_BURST="1000000",
        )
        ids = [f"E{i:05d}" for i in range(count)]
        say("starting siaga dispatch --no-notifier, ingest, dashboard")
        # Dispatch first: it migrates the database the other two then open.
        with process([SIAGA, "dispatch", "--no-notifier"], env, ready_path="/readyz") as dispatch:
            admin = Admin(dispatch.url, admin_token)
            admin.import_tps(ids)
            device, viewer = admin.device(ids), admin.viewer()
            with (
                process([SIAGA, "ingest"], env, ready_path="/readyz") as ingest,
                process([SIAGA, "dashboard"], env, ready_path="/readyz") as dashboard,
            ):
                say(f"siaga: {count} reports at {a.rate}/s, one per TPS, {PER_KECAMATAN} TPS per kecamatan")
                cpu0 = {p: p.cpu_seconds() for p in (dispatch, ingest, dashboard)}
                own0 = time.process_time()  # this process: the report poster and the WebSocket reader
                background = _background(ingest.url, device, ids, a.background, a.duration) if a.background else None
                run = asyncio.run(
                    siaga_run(
                        ingest.url,
                        dashboard.url,
                        device=device,
                        viewer=viewer,
                        ids=ids,
                        rate=a.rate,
                        drain_s=a.drain,
                        batch=not a.no_batch,
                    )
                )
                bg = background.result() if background is not None else None
                if bg is not None:
                    say(f"  background: {bg['events_per_s']:.0f} check-ins/s, statuses {bg['statuses']}")
                cpu = {
                    name: round(p.cpu_seconds() - cpu0[p], 2)
                    for name, p in (("dispatch", dispatch), ("ingest", ingest), ("dashboard", dashboard))
                }
                cpu["bench_client"] = round(time.process_time() - own0, 2)
        say(f"  p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, lost {run['lost']}")
    rows = [
        {"what": "bare Kafka round trip (baseline)", **base},
        {"what": "siaga POST -> WebSocket frame", **run},
    ]
    for r in rows:
        r["p50_vs_baseline"] = f"{r['p50_ms'] / max(base['p50_ms'], 0.1):.1f}x"
    print(table(rows, ["what", "posted", "lost", "p50_ms", "p90_ms", "p99_ms", "max_ms", "p50_vs_baseline"]))
    doc = {
        "rate": a.rate,
        "duration_s": a.duration,
        "batch": not a.no_batch,
        "background_checkins_per_s": a.background,
        "database": a.database,
        "background": bg,
        "cpu_seconds": cpu,
        "loadavg_start": load_start,
        "rows": rows,
    }
    name = "e2e_latency" + ("_unbatched" if a.no_batch else "") + ("_background" if a.background else "")
    name += "_postgres" if a.database == "postgres" else ""
    say(f"wrote {write(name, doc)}")


if __name__ == "__main__":
    main()
