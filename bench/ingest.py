"""Ingest throughput through the real broker, against a bare baseline measured in the same run.

Baseline: bench/baseline_app.py, a FastAPI route that only does send_and_wait of the raw body.
Siaga: `siaga ingest` (auth, validation, dedupe in SQLite, idempotent publish) with single events
and with batches of 500. Each server is its own uvicorn process; the load comes from another
process. Access logs are off in both; the device rate limit is lifted for the run.

Batches go once on a new connection each (many devices uploading their backlogs, each on its own
connection), and once over `--batch-concurrency` connections kept for the whole measurement. With
`--workers 2` the kept connections stay with the worker that accepted them, and the kernel often
gives one worker most of them (8 connections split 8/0, 7/1, 4/4 in consecutive runs): that row
measures the split as much as the server.

Both servers stay up for the whole run and are measured in turn, `--rounds` times (baseline,
Siaga single, Siaga batch, then again): the machine's speed drifts by tens of percent from minute
to minute, so each round's ratio compares neighbours, and the result is the median round.

    .venv/bin/python -m bench.ingest [--duration 10] [--rounds 3] [--concurrency 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
    SIAGA,
    Proc,
    broker,
    cpu_seconds,
    loadgen,
    process,
    say,
    seed,
    steal_ticks,
    table,
    unique,
    write,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of baseline, single, batches (default 3)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per server (default 2)")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight for single events (default 32)")
    ap.add_argument("--batch-concurrency", type=int, default=8, help="batches in flight (default 8)")
    ap.add_argument("--workers", type=int, default=1, help="siaga ingest worker processes (default 1)")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
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
        _create_topic(bootstrap, prefix + "baseline")
        db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "ingest.db"
        token, tps = seed(f"sqlite:///{db}")
        senv = dict(base_env, SIAGA_TOPIC_PREFIX=prefix, SIAGA_DATABASE_URL=f"sqlite:///{db}")
        baseline_cmd = [PY, "-m", "uvicorn", "bench.baseline_app:app", "--no-access-log", "--log-level", "warning"]
        with (
            process(baseline_cmd, dict(base_env, BENCH_TOPIC=prefix + "baseline"), ready_path="/openapi.json") as bare,
            process([SIAGA, "ingest", "--workers", str(a.workers)], senv) as siaga,
        ):
            runs = [
                ("baseline single", bare, dict(token="none", tps=["x"], batch=1, concurrency=a.concurrency)),
                (
                    f"siaga single ({a.workers} worker)",
                    siaga,
                    dict(token=token, tps=tps, batch=1, concurrency=a.concurrency),
                ),
                (
                    f"siaga batch 500 ({a.workers} worker)",
                    siaga,
                    dict(token=token, tps=tps, batch=500, concurrency=a.batch_concurrency, reconnect=True),
                ),
                (
                    f"siaga batch 500, kept connections ({a.workers} worker)",
                    siaga,
                    dict(token=token, tps=tps, batch=500, concurrency=a.batch_concurrency),
                ),
            ]
            for _, proc, kw in runs:
                loadgen(proc.url, duration=a.warmup, **kw)  # connections, metadata, caches
            for n in range(1, a.rounds + 1):
                for what, proc, kw in runs:
                    r = _measure(proc, kw, a.duration, workers=a.workers if proc is siaga else 1)
                    rows.append({"round": n, "what": what, **r})
                    say(f"round {n}: {what}: {r['events_per_s']} events/s, {r['server_cpu_us_per_event']} µs CPU/event")
    for r in rows:
        base = next(b for b in rows if b["round"] == r["round"] and b["what"] == "baseline single")
        r["vs_baseline"] = round(r["events_per_s"] / (base["events_per_s"] or 1), 2)
    summary = []
    for what in dict.fromkeys(r["what"] for r in rows):
        mine = [r for r in rows if r["what"] == what]
        summary.append(
            {
                "what": what,
                "events_per_s": round(statistics.median(r["events_per_s"] for r in mine), 1),
                "vs_baseline": round(statistics.median(r["vs_baseline"] for r in mine), 2),
                "range_vs_baseline": f"{min(r['vs_baseline'] for r in mine)}–{max(r['vs_baseline'] for r in mine)}",
                "server_cpu_us_per_event": round(statistics.median(r["server_cpu_us_per_event"] for r in mine), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in mine), 1),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 1),
            }
        )
    print(
        table(
            rows,
            ["round", "what", "events_per_s", "vs_baseline", "server_cpu_us_per_event", "p50_ms", "p99_ms", "statuses"],
        )
    )
    print()
    print("median of the rounds:")
    print(
        table(
            summary,
            ["what", "events_per_s", "vs_baseline", "range_vs_baseline", "server_cpu_us_per_event", "p50_ms", "p99_ms"],
        )
    )
    path = write(
        "ingest" if a.workers == 1 else f"ingest_{a.workers}workers",
        {
            "duration_s": a.duration,
            "rounds": a.rounds,
            "concurrency": a.concurrency,
            "batch_concurrency": a.batch_concurrency,
            "workers": a.workers,
            "summary": summary,
            "rows": rows,
        },
    )
    say(f"wrote {path}")


def _measure(proc: Proc, kw: dict[str, Any], duration: float, *, workers: int) -> dict[str, Any]:
    """One closed-loop run against a server, with the CPU the server (and its workers) used per event."""
    pids = _tree(proc.pid) if workers > 1 else [proc.pid]
    before, steal_before = sum(cpu_seconds(p) for p in pids), steal_ticks()
    r = loadgen(proc.url, duration=duration, **kw)
    used = sum(cpu_seconds(p) for p in pids) - before
    ticks, stolen = (b - a for a, b in zip(steal_before, steal_ticks(), strict=True))
    r["steal_pct"] = round(100 * stolen / max(ticks, 1), 1)  # CPU time the hypervisor gave to others
    r["server_cpu_us_per_event"] = round(1e6 * used / max(r["events"], 1), 1)
    r["server_cpu_pct"] = round(100 * used / duration)
    return r


def _tree(pid: int) -> list[int]:
    """The process and its children (uvicorn's workers)."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += _tree(int(child))
    return out


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
