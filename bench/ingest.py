"""Ingest throughput through the real broker, against a bare baseline measured in the same run.

Baseline: bench/baseline_app.py, a FastAPI route that only does send_and_wait of the raw body.
Siaga: `siaga ingest` (auth, validation, dedupe in SQLite, idempotent publish) with single events
and with batches of 500. Each server is one uvicorn process; the load comes from another process.
Access logs are off in both; the device rate limit is lifted for the run.

    .venv/bin/python -m bench.ingest [--duration 10] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.common import PY, SIAGA, broker, loadgen, say, seed, server, table, unique, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight for single events (default 32)")
    ap.add_argument("--batch-concurrency", type=int, default=4, help="batches in flight (default 4)")
    ap.add_argument("--workers", type=int, default=1, help="siaga ingest worker processes (default 1)")
    a = ap.parse_args()
    rows = []
    with broker() as bootstrap:
        base_env = dict(
            os.environ,
            SIAGA_KAFKA_BOOTSTRAP=bootstrap,
            SIAGA_ACCESS_LOG="false",
            SIAGA_LOG_LEVEL="WARNING",
            SIAGA_DEVICE_RATE_PER_S="1000000",
            SIAGA_DEVICE_BURST="1000000",
        )
        prefix = unique("bench")
        env = dict(base_env, BENCH_TOPIC=prefix + "baseline")
        _create_topic(bootstrap, prefix + "baseline")
        say("baseline: bare send_and_wait route, single events")
        with server(
            [PY, "-m", "uvicorn", "bench.baseline_app:app", "--no-access-log", "--log-level", "warning"],
            env,
            ready_path="/openapi.json",
        ) as url:
            r = loadgen(url, token="none", tps=["x"], batch=1, concurrency=a.concurrency, duration=a.duration)
        rows.append({"what": "baseline single", **r})
        say(f"  {r['events_per_s']} events/s")
        db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "ingest.db"
        token, tps = seed(f"sqlite:///{db}")
        senv = dict(base_env, SIAGA_TOPIC_PREFIX=prefix, SIAGA_DATABASE_URL=f"sqlite:///{db}")
        with server([SIAGA, "ingest", "--workers", str(a.workers)], senv) as url:
            say("siaga ingest: single events")
            r = loadgen(url, token=token, tps=tps, batch=1, concurrency=a.concurrency, duration=a.duration)
            rows.append({"what": f"siaga single ({a.workers} worker)", **r})
            say(f"  {r['events_per_s']} events/s")
            say("siaga ingest: batches of 500")
            r = loadgen(url, token=token, tps=tps, batch=500, concurrency=a.batch_concurrency, duration=a.duration)
            rows.append({"what": f"siaga batch 500 ({a.workers} worker)", **r})
            say(f"  {r['events_per_s']} events/s")
    base = rows[0]["events_per_s"] or 1
    for r in rows:
        r["vs_baseline"] = f"{r['events_per_s'] / base:.2f}x"
    print(table(rows, ["what", "events_per_s", "vs_baseline", "p50_ms", "p99_ms", "requests", "statuses"]))
    path = write("ingest", {"duration_s": a.duration, "concurrency": a.concurrency, "rows": rows})
    say(f"wrote {path}")


def _create_topic(bootstrap: str, name: str) -> None:
    import asyncio

    from siaga.bus.kafka import KafkaBus

    async def go() -> None:
        bus = KafkaBus(bootstrap, partitions={name: 12})
        await bus.start()
        await bus.stop()

    asyncio.run(go())


if __name__ == "__main__":
    main()
