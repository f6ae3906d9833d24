"""Dashboard fan-out: one `siaga dashboard` process, many viewers, a steady stream of incident updates.

A publisher in this process puts `--rate` incident updates a second on siaga.incident-updates (the
format of docs/architecture.md, with a growing `version`, over a pool of `--incidents` incidents)
for `--duration` seconds; each carries its wall-clock publish time in `description`
(`bench_ts=<unix seconds>`). `--clients` WebSocket viewers (viewer token, `&batch=1` as the page
uses) run in a separate process (bench/fanout_clients.py) and time every update from publish to the
frame that brings it. Reported: latency p50/p99, frames and messages per client, clients that fell
behind (got a fresh snapshot), seq gaps, and the server process's CPU over the run (utime+stime
from /proc/<pid>/stat).

Baseline, in the same run with the same clients and the same messages: bench/bare_broadcast.py, a
uvicorn WebSocket server that forwards every record to every client with no logic.

    .venv/bin/python -m bench.fanout [--clients 200] [--rate 100] [--duration 30] [--no-batch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import PY, ROOT, SIAGA, Proc, broker, cpu_seconds, loadavg, process, say, table, unique, write
from siaga import topics

CATEGORIES = ("equipment", "logistics", "crowd", "medical", "traffic", "hoax")
SEVERITIES = ("low", "medium", "medium", "high")
STATUSES = ("open", "open", "escalated", "acknowledged", "resolved")


def incident(n: int, version: int, published: float | None) -> dict[str, Any]:
    """An updates-topic message for incident n at `version`, the shape dispatch publishes.

    `published` (wall-clock seconds) goes into the description for the clients to time; None: untimed.
    """
    opened = datetime(2024, 2, 14, 7, 0, tzinfo=UTC) + timedelta(seconds=n)
    status = STATUSES[version % len(STATUSES)]
    at = opened.isoformat().replace("+00:00", "Z")
    return {
        "type": "incident",
        "incident": {
            "id": f"INC-BENCH-{n:05d}",
            "tps_id": f"T{n:05d}",
            "tps_name": f"TPS {n:03d}",
            "kecamatan": f"Kec{n % 29:02d}",
            "kabupaten": "Kabupaten Bench",
            "provinsi": "Banten",
            "category": CATEGORIES[n % len(CATEGORIES)],
            "severity": SEVERITIES[n % len(SEVERITIES)],
            "level": version % 3,
            "status": status,
            "reports": 1 + version % 3,
            "opened_at": at,
            "received_at": at,
            "local_deadline": at,
            "ack_deadline": None,
            "why": ["keyword: genset", "category given by the officer"],
            "facts": {"injuries": 0},
            "description": "Genset mati, TPS gelap" + ("" if published is None else f" bench_ts={published:.6f}"),
            "parent_id": None,
            "children": [],
            "policy_version": 1,
            "updated_at": at,
            "resolved_at": at if status == "resolved" else None,
            "resolution": "sdh nyala lagi" if status == "resolved" else None,
            "last_alert_failure": None,
            "version": version,
        },
    }


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic and wait for its partition leaders."""
    from siaga.bus.kafka import KafkaBus

    bus = KafkaBus(bootstrap, partitions={topic: partitions})
    await bus.start()
    await bus.stop()


async def publish(bootstrap: str, topic: str, *, rate: float, duration: float, pool: int, warmup: float) -> int:
    """Publish at `rate` a second for `warmup` + `duration` seconds (paced, not in bursts); returns the count.

    The warm-up updates carry no publish time: connections, metadata and the first fetches settle
    before anything is timed.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    warm = int(rate * warmup)
    count = warm + int(rate * duration)
    try:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            n, version = i % pool, 1 + i // pool
            msg = incident(n, version, time.time() if i >= warm else None)
            await producer.send(topic, orjson.dumps(msg), key=msg["incident"]["id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    return count


def viewer_db(path: Path, scope: dict[str, list[str]] | None = None) -> str:
    """A database with the schema and one viewer token (what the dashboard checks); returns the token.

    With `scope`, the token is limited to it (SPEC section 10): its clients read a scoped hub."""
    from sqlmodel import Session

    from siaga.auth import hash_token, new_token
    from siaga.db import create_schema, make_engine
    from siaga.models import ApiToken

    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    token = new_token("vw")
    with Session(engine) as s:
        s.add(
            ApiToken(
                name="bench-viewer",
                role="viewer",
                token_hash=hash_token(token),
                created_at=datetime.now(UTC),
                scope=scope,
            )
        )
        s.commit()
    engine.dispose()
    return token


@contextmanager
def clients_process(ws_url: str, n: int, max_seconds: float) -> Iterator[subprocess.Popen[str]]:
    """The viewers' process, returned once every client has its first frame."""
    proc = subprocess.Popen(
        [PY, "-m", "bench.fanout_clients", "--url", ws_url, "--clients", str(n), "--max-seconds", str(max_seconds)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or "{}")
        if ready.get("ready") != n:
            raise RuntimeError(f"only {ready.get('ready')} of {n} clients connected")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def measure(server: Proc, ws_url: str, bootstrap: str, topic: str, a: argparse.Namespace) -> dict[str, Any]:
    """Connect the viewers, publish, wait for the tail, and collect the clients' and the server's figures."""
    with clients_process(ws_url, a.clients, a.duration + 120) as clients:
        cpu0, ccpu0, t0 = server.cpu_seconds(), cpu_seconds(clients.pid), time.perf_counter()
        load0 = loadavg()
        sent = asyncio.run(
            publish(bootstrap, topic, rate=a.rate, duration=a.duration, pool=a.incidents, warmup=a.warmup)
        )
        time.sleep(a.tail)
        cpu1, ccpu1, t1 = server.cpu_seconds(), cpu_seconds(clients.pid), time.perf_counter()
        assert clients.stdin is not None and clients.stdout is not None
        clients.stdin.write("stop\n")
        clients.stdin.flush()
        seen = json.loads(clients.stdout.readline())
        clients.wait(30)
    window = t1 - t0
    return {
        "published": sent,
        **seen,
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / window, 1),
        "clients_cpu_pct": round(100 * (ccpu1 - ccpu0) / window, 1),
        "loadavg": load0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200, help="WebSocket viewers (default 200)")
    ap.add_argument("--rate", type=float, default=100.0, help="incident updates a second (default 100)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of publishing (default 30)")
    ap.add_argument("--incidents", type=int, default=1000, help="distinct incidents updated in turn (default 1000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="untimed seconds of updates first (default 2)")
    ap.add_argument("--tail", type=float, default=3.0, help="seconds to wait after the last publish (default 3)")
    ap.add_argument("--no-batch", action="store_true", help="clients without &batch=1 (one frame per update)")
    ap.add_argument(
        "--scoped-rounds",
        type=int,
        default=0,
        metavar="N",
        help="instead of the baseline comparison: N alternated rounds of an unscoped and a scoped viewer token "
        "(scope: the provinsi of every bench incident, so both get the same deltas); compares the server's CPU "
        "per delta per client, median of the rounds (issue 17's bound: scoped within 10%% of unscoped)",
    )
    a = ap.parse_args()
    opts = "" if a.no_batch else "&batch=1"
    if a.scoped_rounds:
        scoped_rounds(a, opts)
        return
    load_start = loadavg()
    rows = []
    with broker() as bootstrap:
        env = dict(os.environ, SIAGA_KAFKA_BOOTSTRAP=bootstrap, SIAGA_ACCESS_LOG="false", SIAGA_LOG_LEVEL="WARNING")

        prefix = unique("benchfb")
        topic = prefix + topics.INCIDENT_UPDATES
        asyncio.run(create_topic(bootstrap, topic, 6))
        say(f"baseline: bare broadcast server, {a.clients} clients, {a.rate:.0f} updates/s for {a.duration:.0f}s")
        bare_cmd = [PY, "-m", "uvicorn", "bench.bare_broadcast:app", "--no-access-log", "--log-level", "warning"]
        with process(bare_cmd, dict(env, BENCH_TOPIC=topic)) as bare:
            ws_url = bare.url.replace("http://", "ws://") + "/ws?token=none" + opts
            r = measure(bare, ws_url, bootstrap, topic, a)
        rows.append({"what": "bare broadcast (baseline)", **r})
        say(f"  p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, server CPU {r['server_cpu_pct']}%")

        prefix = unique("benchf")
        topic = prefix + topics.INCIDENT_UPDATES
        db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "fanout.db"
        viewer = viewer_db(db)
        denv = dict(env, SIAGA_TOPIC_PREFIX=prefix, SIAGA_DATABASE_URL=f"sqlite:///{db}")
        say(f"siaga dashboard: {a.clients} clients, {a.rate:.0f} updates/s for {a.duration:.0f}s")
        with process([SIAGA, "dashboard"], denv, ready_path="/readyz") as dash:
            ws_url = dash.url.replace("http://", "ws://") + f"/ws?token={viewer}" + opts
            r = measure(dash, ws_url, bootstrap, topic, a)
        rows.append({"what": "siaga dashboard", **r})
        say(f"  p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, server CPU {r['server_cpu_pct']}%")
    base = rows[0]
    for r in rows:
        r["msgs_per_client"] = r["messages_per_client"]["mean"]
        r["frames_mean"] = r["frames_per_client"]["mean"]
        r["p50_vs_baseline"] = f"{r['p50_ms'] / max(base['p50_ms'], 0.1):.2f}x"
        r["cpu_vs_baseline"] = f"{r['server_cpu_s'] / max(base['server_cpu_s'], 0.01):.2f}x"
    cols = ["what", "published", "msgs_per_client", "frames_mean", "p50_ms", "p99_ms", "max_ms", "fell_behind"]
    print(table(rows, [*cols, "dropped", "server_cpu_pct", "p50_vs_baseline", "cpu_vs_baseline"]))
    doc = {
        "clients": a.clients,
        "rate": a.rate,
        "duration_s": a.duration,
        "batch": not a.no_batch,
        "loadavg_start": load_start,
        "rows": rows,
    }
    say(f"wrote {write('fanout', doc)}")


def scoped_rounds(a: argparse.Namespace, opts: str) -> None:
    """Unscoped and scoped viewers alternated, a fresh dashboard process each: CPU per delta per client."""
    rows: list[dict[str, Any]] = []
    load_start = loadavg()
    with broker() as bootstrap:
        env = dict(os.environ, SIAGA_KAFKA_BOOTSTRAP=bootstrap, SIAGA_ACCESS_LOG="false", SIAGA_LOG_LEVEL="WARNING")
        for n in range(1, a.scoped_rounds + 1):
            for what, scope in (("unscoped", None), ("scoped", {"provinsi": ["Banten"]})):
                prefix = unique(f"benchs{n}{what[0]}")
                topic = prefix + topics.INCIDENT_UPDATES
                asyncio.run(create_topic(bootstrap, topic, 6))
                db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "fanout.db"
                viewer = viewer_db(db, scope)
                denv = dict(env, SIAGA_TOPIC_PREFIX=prefix, SIAGA_DATABASE_URL=f"sqlite:///{db}")
                say(f"round {n}, {what}: {a.clients} clients, {a.rate:.0f} updates/s for {a.duration:.0f}s")
                with process([SIAGA, "dashboard"], denv, ready_path="/readyz") as dash:
                    ws_url = dash.url.replace("http://", "ws://") + f"/ws?token={viewer}" + opts
                    r = measure(dash, ws_url, bootstrap, topic, a)
                deltas = r["messages_per_client"]["mean"] * a.clients
                r["cpu_us_per_delta_client"] = round(1e6 * r["server_cpu_s"] / max(deltas, 1), 2)
                rows.append({"what": what, "round": n, **r})
                say(f"  {r['cpu_us_per_delta_client']} us CPU per delta per client, p99 {r['p99_ms']} ms")
    med = {
        w: statistics.median(r["cpu_us_per_delta_client"] for r in rows if r["what"] == w)
        for w in ("unscoped", "scoped")
    }
    ratio = med["scoped"] / max(med["unscoped"], 1e-9)
    cols = ["what", "round", "published", "p50_ms", "p99_ms", "fell_behind", "server_cpu_s", "cpu_us_per_delta_client"]
    print(table(rows, cols))
    say(f"median CPU per delta per client: unscoped {med['unscoped']} us, scoped {med['scoped']} us ({ratio:.2f}x)")
    doc = {
        "clients": a.clients,
        "rate": a.rate,
        "duration_s": a.duration,
        "loadavg_start": load_start,
        "rows": rows,
        "median_us": med,
        "scoped_vs_unscoped": round(ratio, 3),
    }
    say(f"wrote {write('fanout_scoped', doc)}")


if __name__ == "__main__":
    main()
