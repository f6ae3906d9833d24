"""The whole system on this machine: how many field events a second it takes, and how fast dispatch keeps up.

Everything shares the two cores: the broker, `siaga ingest`, `siaga dispatch --no-notifier` and
`siaga dashboard` (three processes, one SQLite file), or `siaga dev` alone on the in-process bus;
and the load generator (bench/loadgen.py, its own process). The registry is 1,000 TPS in 29
kecamatan with one device for all of them; the rate limit per device is lifted for the run.

Two measurements, each on Kafka and embedded:

- **single**: `POST /v1/events`, one check-in each, `--concurrency` requests in flight for
  `--duration` seconds (a morning peak is >90 % check-ins). It reports the events a second ingest
  accepted (202), and how long after the load ended dispatch had applied every accepted event
  (`siaga_dispatch_events_total` on its /metrics): the lag back to zero.
- **batches**: `POST /v1/events/batch` of 500 check-ins (devices uploading a backlog) for
  `--batch-duration` seconds: the rate ingest accepts them at, then the rate dispatch applies the
  backlog at, from the end of the load until it has caught up.

    .venv/bin/python -m bench.system [--duration 60] [--batch-duration 10] [--mode both]

Results: bench/results/system.json; see docs/benchmarks.md ("Whole system").
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import SIAGA, broker, loadavg, loadgen, process, say, seed, table, unique, write

N_TPS = 1000


def applied(url: str) -> float:
    """siaga_dispatch_events_total from a /metrics page (0 before the first event)."""
    m = re.search(r"^siaga_dispatch_events_total\s+([0-9.e+]+)$", httpx.get(url + "/metrics", timeout=10).text, re.M)
    return float(m.group(1)) if m else 0.0


def catch_up(metrics_url: str, target: float, *, limit_s: float = 300) -> tuple[float, float]:
    """Wait until dispatch applied `target` events; (seconds it took, events applied when the wait began)."""
    t0 = time.perf_counter()
    at_start = applied(metrics_url)
    while applied(metrics_url) < target:
        if time.perf_counter() - t0 > limit_s:
            raise SystemExit(
                f"dispatch did not catch up within {limit_s:.0f} s ({applied(metrics_url):.0f}/{target:.0f})"
            )
        time.sleep(0.1)
    return time.perf_counter() - t0, at_start


@contextmanager
def kafka_system(env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Broker and the three services; (ingest URL, dispatch URL)."""
    with broker() as bootstrap, ExitStack() as stack:
        kenv = dict(env, SIAGA_KAFKA_BOOTSTRAP=bootstrap, SIAGA_TOPIC_PREFIX=unique("sys"))
        dispatch = stack.enter_context(process([SIAGA, "dispatch", "--no-notifier"], kenv))
        ingest = stack.enter_context(process([SIAGA, "ingest"], kenv))
        stack.enter_context(process([SIAGA, "dashboard"], kenv))
        yield ingest.url, dispatch.url


@contextmanager
def embedded_system(env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """`siaga dev --no-demo` on the in-process bus; its URL twice (ingest and dispatch are one)."""
    with process([SIAGA, "dev", "--no-demo"], env) as dev:
        yield dev.url, dev.url


def measure(
    name: str, system: Callable[[dict[str, str]], Any], a: argparse.Namespace, base_env: dict[str, str]
) -> list[dict[str, Any]]:
    db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "system.db"
    token, tps = seed(f"sqlite:///{db}", N_TPS)
    env = dict(base_env, SIAGA_DATABASE_URL=f"sqlite:///{db}")
    rows: list[dict[str, Any]] = []
    with system(env) as (ingest_url, dispatch_url):
        say(f"{name}: single check-ins, {a.concurrency} in flight, {a.duration:.0f} s")
        before = applied(dispatch_url)
        load0 = loadavg()
        single = loadgen(
            ingest_url,
            token=token,
            tps=tps,
            batch=1,
            concurrency=a.concurrency,
            duration=a.duration,
            kind="checkin",
            max_tps=N_TPS,
        )
        lag_s, applied_at_end = catch_up(dispatch_url, before + single["events"])
        rows.append(
            {
                "system": name,
                "what": "single events",
                "accepted_per_s": single["events_per_s"],
                "p99_ms": single["p99_ms"],
                "behind_at_end": int(before + single["events"] - applied_at_end),
                "lag_to_zero_s": round(lag_s, 1),
                "drain_per_s": None,
                "errors": {k: v for k, v in single["statuses"].items() if k != "202"},
                "loadavg_before": load0,
            }
        )
        say(f"  accepted {single['events_per_s']:.0f}/s; dispatch caught up {lag_s:.1f} s after the load")
        say(f"{name}: batches of 500 for {a.batch_duration:.0f} s")
        before = applied(dispatch_url)
        batches = loadgen(
            ingest_url,
            token=token,
            tps=tps,
            batch=500,
            concurrency=4,
            duration=a.batch_duration,
            kind="checkin",
            max_tps=N_TPS,
        )
        ended = time.perf_counter()
        lag_s, applied_at_end = catch_up(dispatch_url, before + batches["events"])
        backlog = before + batches["events"] - applied_at_end
        rows.append(
            {
                "system": name,
                "what": "batches of 500",
                "accepted_per_s": batches["events_per_s"],
                "p99_ms": batches["p99_ms"],
                "behind_at_end": int(backlog),
                "lag_to_zero_s": round(time.perf_counter() - ended, 1),
                "drain_per_s": round(backlog / lag_s) if lag_s > 0.5 else None,
                "errors": {k: v for k, v in batches["statuses"].items() if k != "202"},
                "loadavg_before": loadavg(),
            }
        )
        say(
            f"  accepted {batches['events_per_s']:.0f}/s; backlog {backlog:.0f} drained in {lag_s:.1f} s"
            + (f" ({backlog / lag_s:.0f}/s)" if lag_s > 0.5 else "")
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of single events (default 60)")
    ap.add_argument("--batch-duration", type=float, default=10.0, help="seconds of batches (default 10)")
    ap.add_argument("--concurrency", type=int, default=32, help="single requests in flight (default 32)")
    ap.add_argument(
        "--mode",
        choices=("kafka", "embedded", "both"),
        default="both",
        help="kafka: broker and three services; embedded: siaga dev on the in-process bus; both (default)",
    )
    a = ap.parse_args()
    base_env = dict(
        os.environ,
        SIAGA_ACCESS_LOG="false",
        SIAGA_LOG_LEVEL="WARNING",
        SIAGA_DEVICE_RATE_PER_S="1000000",
        SIAGA_DEVICE_BURST="1000000",
    )
    base_env.pop("SIAGA_KAFKA_BOOTSTRAP", None)
    rows: list[dict[str, Any]] = []
    if a.mode in ("kafka", "both"):
        rows += measure("kafka", kafka_system, a, base_env)
    if a.mode in ("embedded", "both"):
        rows += measure("embedded", embedded_system, a, base_env)
    cols = ["system", "what", "accepted_per_s", "p99_ms", "behind_at_end", "lag_to_zero_s", "drain_per_s"]
    print(table(rows, cols))
    say(f"wrote {write('system', {'duration_s': a.duration, 'tps': N_TPS, 'rows': rows})}")


if __name__ == "__main__":
    main()
