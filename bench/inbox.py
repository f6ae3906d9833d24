"""The device inbox under its election-day load, against a bare token-checking route in the same run.

Target (issue 15): one ingest process serves 5,000 polling devices (one poll every 20 s each, 250
requests a second) at <= 400 µs of server CPU a poll and <= 1.5x the CPU of a bare route that checks
the device token and answers 304, measured in the same run.

Siaga: `siaga ingest` as its own process, on a SQLite file seeded with `--tps` TPS in `--kecamatan`
kecamatan and `--devices` device tokens (each bound to one TPS and issued to one person). No broker:
a poll never touches the bus, so ingest runs on its in-process bus. Baseline:
`bench.baseline_app:inbox_app`, a bare FastAPI route at the same path that hashes the bearer token,
reads the device row (the same indexed lookup, the same file) and answers 304 to any conditional
request. Floor: `bench.baseline_app:inbox_floor`, a bare ASGI callable on the same uvicorn that
answers 304 with no work at all: what the server stack alone costs a poll, below which no route
on it can go.

The devices are a separate process (`bench/inbox_clients.py`): each polls on a fixed schedule (open
loop, `--devices / --period` polls a second, evenly spread) with its cursor as `since` and its last
ETag as `If-None-Match`, over `--connections` kept-alive connections (a proxy in front of ingest),
or a new connection per poll with `--connections 0`. Before the measured rounds every device polls
each server once to get a cursor and an ETag, so the rounds are the steady state: mostly 304. While
Siaga is measured, this process writes inbox items into the database as dispatch does (an operator
message to a TPS or an assignment to a person, `--item-rate` a second, and a message to a whole
kecamatan every `--kecamatan-every` s), so some polls get 200 with items.

Server CPU is the process's utime + stime (/proc/<pid>/stat) over the polling window, divided by
the polls answered. Both servers stay up and are measured in turn, `--rounds` times; the result is
the median round and each round's ratio compares neighbours (the 2 shared cores drift).

    .venv/bin/python -m bench.inbox [--duration 20] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PY, ROOT, SIAGA, Proc, loadavg, process, say, steal_ticks, table, write

TARGET_US = 400.0  # server CPU a poll
TARGET_RATIO = 1.5  # of the bare route's


def seed_devices(db_url: str, *, devices: int, n_tps: int, n_kecamatan: int) -> tuple[list[str], list[str]]:
    """TPS over kecamatan and device tokens over the TPS (one person each); (tokens, tps ids)."""
    from sqlmodel import Session

    from siaga.auth import hash_token, new_token
    from siaga.db import create_schema, make_engine
    from siaga.models import Device, Tps

    engine = make_engine(db_url)
    create_schema(engine)
    tps = [f"B{i:05d}" for i in range(n_tps)]
    tokens = [new_token("dev") for _ in range(devices)]
    now = datetime.now(UTC)
    with Session(engine) as s:
        for i, t in enumerate(tps):
            s.add(Tps(tps_id=t, name=f"TPS {i}", kecamatan=f"Kec{i % n_kecamatan}", lat=-6.1, lon=106.2))
        for i, token in enumerate(tokens):
            s.add(
                Device(
                    device_id=f"dev{i:05d}",
                    personnel_id=f"P{i:05d}",
                    token_hash=hash_token(token),
                    tps_ids=[tps[i % n_tps]],
                    created_at=now,
                )
            )
        s.commit()
    engine.dispose()
    return tokens, tps


class ItemWriter:
    """Writes inbox items into the database while Siaga is measured, as dispatch does (its own connection)."""

    def __init__(self, db_url: str, *, devices: int, tps: list[str], n_kecamatan: int, rate: float, every: float):
        from siaga.db import make_engine

        self.engine = make_engine(db_url)
        self.devices, self.tps, self.n_kecamatan, self.rate, self.every = devices, tps, n_kecamatan, rate, every
        self.rng = random.Random(15)
        self.written = 0
        self._n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="inbox-items", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _write(self, target: dict[str, Any]) -> None:
        from sqlmodel import Session

        from services.dispatch.inbox import inbox_row, insert_inbox
        from siaga.contracts import Broadcast, OrderTarget

        self._n += 1
        order = Broadcast(
            order_id=f"MSG-BENCH-{self._n}",
            target=OrderTarget.model_validate(target),
            actor="operator:bench",
            issued_at=datetime.now(UTC),
            text="hujan deras malam ini, amankan logistik di tempat tinggi",
        )
        with Session(self.engine) as s:
            insert_inbox(s, [inbox_row(order, kecamatan=None, at=order.issued_at)])
            s.commit()
        self.written += 1

    def _run(self) -> None:
        begin = time.monotonic()
        k = 0
        next_kecamatan = begin + self.every if self.every > 0 else float("inf")
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_kecamatan:
                self._write({"kind": "kecamatan", "id": f"Kec{self.rng.randrange(self.n_kecamatan)}"})
                next_kecamatan += self.every
            if self.rate > 0 and now >= begin + k / self.rate:
                if k % 2 == 0:
                    self._write({"kind": "tps", "id": self.rng.choice(self.tps)})
                else:
                    self._write({"kind": "person", "id": f"P{self.rng.randrange(self.devices):05d}"})
                k += 1
            self._stop.wait(0.02)


def clients(url: str, tokens: Path, state: Path, a: argparse.Namespace, *, prime: bool = False) -> list[str]:
    return [
        PY,
        "-m",
        "bench.inbox_clients",
        "--url",
        url,
        "--devices",
        str(tokens),
        "--state",
        str(state),
        "--period",
        str(a.period),
        "--duration",
        str(a.duration),
        "--connections",
        str(a.connections or 0),
        *(["--prime"] if prime else []),
    ]


def measure(proc: Proc, cmd: list[str], writer: ItemWriter | None) -> dict[str, Any]:
    """One polling window against a server: the devices' counts and latencies, the server's CPU a poll."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    try:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("the devices' process did not start")
        if writer is not None:
            writer.start()
        written = writer.written if writer else 0
        before, steal_before = proc.cpu_seconds(), steal_ticks()
        p.stdin.write("go\n")
        p.stdin.flush()
        if p.stdout.readline().strip() != "done":
            raise RuntimeError("the devices' process failed")
        used = proc.cpu_seconds() - before
        ticks, stolen = (b - a for a, b in zip(steal_before, steal_ticks(), strict=True))
        if writer is not None:
            writer.stop()
        r: dict[str, Any] = json.loads(p.stdout.readline())
    finally:
        if writer is not None:
            writer.stop()
        p.wait(30)
    r["items_written"] = (writer.written - written) if writer else 0
    r["server_cpu_us_per_poll"] = round(1e6 * used / max(r["answered"], 1), 1)
    r["server_cpu_pct"] = round(100 * used / max(r["seconds"], 1e-9), 1)
    r["steal_pct"] = round(100 * stolen / max(ticks, 1), 1)
    r["loadavg"] = loadavg()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=5000, help="polling devices, one token each (default 5000)")
    ap.add_argument("--tps", type=int, default=2500, help="TPS the devices are bound to, in turn (default 2500)")
    ap.add_argument("--kecamatan", type=int, default=50, help="kecamatan the TPS are spread over (default 50)")
    ap.add_argument(
        "--period", type=float, default=20.0, help="seconds between two polls of one device (default 20: 250 polls/s)"
    )
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of polling per measurement (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of baseline then Siaga (default 3)")
    ap.add_argument(
        "--connections",
        type=int,
        default=32,
        help="kept-alive connections the devices' polls share, as behind a proxy (default 32); "
        "0: a new connection per poll (results in inbox_reconnect.json)",
    )
    ap.add_argument(
        "--item-rate",
        type=float,
        default=2.0,
        help="inbox items written a second while Siaga is measured, alternately to a TPS (its 2 devices) "
        "and to a person (1 device) (default 2)",
    )
    ap.add_argument(
        "--kecamatan-every",
        type=float,
        default=15.0,
        help="seconds between messages to a whole kecamatan (~devices/kecamatan devices each; default 15, 0: none)",
    )
    ap.add_argument("--name", default="", help="results file name (default inbox, or inbox_reconnect)")
    a = ap.parse_args()
    name = a.name or ("inbox" if a.connections else "inbox_reconnect")
    say(f"load average {loadavg()} on {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="siaga-bench-inbox-"))
    db_url = f"sqlite:///{work / 'inbox.db'}"
    say(f"seeding {a.devices} device tokens over {a.tps} TPS in {a.kecamatan} kecamatan")
    tokens, tps = seed_devices(db_url, devices=a.devices, n_tps=a.tps, n_kecamatan=a.kecamatan)
    tokens_file = work / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    env = {k: v for k, v in os.environ.items() if k != "SIAGA_KAFKA_BOOTSTRAP"}
    env.update(SIAGA_ACCESS_LOG="false", SIAGA_LOG_LEVEL="WARNING", SIAGA_DATABASE_URL=db_url)
    uvicorn = [PY, "-m", "uvicorn", "--no-access-log", "--log-level", "warning"]
    writer = ItemWriter(
        db_url, devices=a.devices, tps=tps, n_kecamatan=a.kecamatan, rate=a.item_rate, every=a.kecamatan_every
    )
    rows: list[dict[str, Any]] = []
    with (
        process([*uvicorn, "bench.baseline_app:inbox_floor"], env) as floor,
        process([*uvicorn, "bench.baseline_app:inbox_app"], dict(env, BENCH_DATABASE=str(work / "inbox.db"))) as bare,
        process([SIAGA, "ingest"], env) as siaga,
    ):
        servers = [
            ("floor", floor, work / "state_floor.json"),
            ("baseline", bare, work / "state_baseline.json"),
            ("siaga inbox", siaga, work / "state_siaga.json"),
        ]
        for what, proc, state in servers:
            say(f"priming: every device polls {what} once (a cursor and an ETag each)")
            subprocess.run(
                clients(proc.url, tokens_file, state, a, prime=True), cwd=ROOT, check=True, capture_output=True
            )
        for n in range(1, a.rounds + 1):
            for what, proc, state in servers:
                r = measure(proc, clients(proc.url, tokens_file, state, a), writer if proc is siaga else None)
                rows.append({"round": n, "what": what, **r})
                say(
                    f"round {n}: {what}: {r['polls_per_s']} polls/s, {r['server_cpu_us_per_poll']} µs CPU/poll, "
                    f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, 200s {r['share_200_pct']} %, {r['statuses']}"
                )
    writer.engine.dispose()
    shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        base = next(b for b in rows if b["round"] == r["round"] and b["what"] == "baseline")
        r["cpu_vs_baseline"] = round(r["server_cpu_us_per_poll"] / (base["server_cpu_us_per_poll"] or 1), 2)
        floor = next(b for b in rows if b["round"] == r["round"] and b["what"] == "floor")
        r["cpu_over_floor_us"] = round(r["server_cpu_us_per_poll"] - floor["server_cpu_us_per_poll"], 1)
    summary = []
    for what in dict.fromkeys(r["what"] for r in rows):
        mine = [r for r in rows if r["what"] == what]
        ratios = [r["cpu_vs_baseline"] for r in mine]
        summary.append(
            {
                "what": what,
                "polls_per_s": round(statistics.median(r["polls_per_s"] for r in mine), 1),
                "server_cpu_us_per_poll": round(statistics.median(r["server_cpu_us_per_poll"] for r in mine), 1),
                "cpu_vs_baseline": round(statistics.median(ratios), 2),
                "cpu_over_floor_us": round(statistics.median(r["cpu_over_floor_us"] for r in mine), 1),
                "range_vs_baseline": f"{min(ratios)}–{max(ratios)}",
                "p50_ms": round(statistics.median(r["p50_ms"] for r in mine), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 2),
                "share_200_pct": round(statistics.median(r["share_200_pct"] for r in mine), 2),
            }
        )
    cols = ["round", "what", "polls_per_s", "server_cpu_us_per_poll", "cpu_vs_baseline", "p50_ms", "p99_ms"]
    cols.insert(5, "cpu_over_floor_us")
    print(table(rows, [*cols, "share_200_pct", "steal_pct", "statuses"]))
    print()
    print("median of the rounds:")
    print(table(summary, ["what", *cols[2:4], "range_vs_baseline", *cols[5:], "share_200_pct"]))
    mine = next(s for s in summary if s["what"] == "siaga inbox")
    met = {
        "cpu_us_per_poll": mine["server_cpu_us_per_poll"] <= TARGET_US,
        "vs_baseline": mine["cpu_vs_baseline"] <= TARGET_RATIO,
        "rate": mine["polls_per_s"] >= 0.97 * a.devices / a.period,
    }
    say(
        f"targets: <= {TARGET_US:.0f} µs a poll: {'met' if met['cpu_us_per_poll'] else 'MISSED'}; "
        f"<= {TARGET_RATIO}x the bare route: {'met' if met['vs_baseline'] else 'MISSED'}; "
        f"{a.devices / a.period:.0f} polls/s: {'met' if met['rate'] else 'MISSED'}"
    )
    path = write(
        name,
        {
            "devices": a.devices,
            "tps": a.tps,
            "kecamatan": a.kecamatan,
            "period_s": a.period,
            "duration_s": a.duration,
            "rounds": a.rounds,
            "connections": a.connections,
            "item_rate": a.item_rate,
            "kecamatan_every_s": a.kecamatan_every,
            "targets": {"server_cpu_us_per_poll": TARGET_US, "cpu_vs_baseline": TARGET_RATIO},
            "met": met,
            "summary": summary,
            "rows": rows,
        },
    )
    say(f"wrote {path}")


if __name__ == "__main__":
    main()
