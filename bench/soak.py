"""Soak: one dispatch process takes its share of the national design rate for half an hour.

docs/capacity.md plans the design rate D (~11,000 events/s nationally) over a number of dispatch
processes; one of them gets D / processes, here published straight onto siaga.field-events at that
rate (a morning-peak mix: check-ins, phase changes and a few reports, each resolved on site two
minutes later, over the process's share of the country's TPS, keyed by kecamatan as ingest keys
them). Check-ins come as devices send them, each person's once a round in an order shuffled each
round (a round is the share's people over the check-in rate, under three minutes at the defaults):
every officer has checked in by the end of the first round, as by mid-morning on the day. Until
6 December they picked a person at random, so a few percent were still met for the first time
after minute 10, and their state was part of the window's growth. Every 10 s it samples the process's RSS
(/proc), its consumer lag (`siaga_consumer_lag` on /metrics, converted to seconds of events at the
rate) and what it applied. It passes when:

- RSS at the end is less than 5 % above RSS at the start of the last 20 minutes;
- the lag never exceeded 5 s of events;
- every published event was applied (lost 0): `siaga_dispatch_events_total` reaches the count.

    .venv/bin/python -m bench.soak [--minutes 30] [--rate 1571] [--tps 117603]

Results: bench/results/soak.json, summarised in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import RESULTS, ROOT, SIAGA, broker, process, say, unique, write
from siaga import topics
from siaga.keys import kecamatan_key

SAMPLE_S = 10.0


def seed(db_url: str, n_tps: int, per_kecamatan: int) -> list[tuple[str, str]]:
    """n_tps TPS in kecamatan of `per_kecamatan` each, two people on each roster; (tps id, kecamatan)."""
    from sqlalchemy import insert

    from siaga.db import create_schema, make_engine
    from siaga.models import Personnel, Tps

    engine = make_engine(db_url)
    create_schema(engine)
    tps = [(f"S{i:06d}", f"Kec{i // per_kecamatan:05d}") for i in range(n_tps)]
    with engine.begin() as c:
        for i in range(0, n_tps, 5000):
            chunk = tps[i : i + 5000]
            c.execute(
                insert(Tps.__table__),  # type: ignore[attr-defined]
                [{"tps_id": t, "name": f"TPS {t}", "kecamatan": k, "assigned": 2, "rawan": [], "checkins": {}}
                 for t, k in chunk],
            )  # fmt: skip
            c.execute(
                insert(Personnel.__table__),  # type: ignore[attr-defined]
                [{"personnel_id": f"P{t}-{j}", "name": f"P {t} {j}", "tps_ids": [t]} for t, _ in chunk for j in (1, 2)],
            )
    engine.dispose()
    return tps


RESOLVE_AFTER_S = 120.0  # the TPS's officer resolves each report on site this long after it


def wire(ev: dict[str, Any], tps_id: str, now: datetime) -> bytes:
    ev.update(event_id=ev.get("event_id") or str(uuid.uuid4()), tps_id=tps_id, occurred_at=now.isoformat())
    return orjson.dumps({"event": ev, "device_id": "soak", "received_at": now.isoformat()})


def resolution(report_id: str, tps_id: str, now: datetime) -> bytes:
    payload = {"report_id": report_id, "resolution": "ditangani petugas"}
    return wire({"type": "incident.resolved", "payload": payload}, tps_id, now)


def checkin(tps_id: str, person: int, now: datetime) -> bytes:
    payload = {"personnel_id": f"P{tps_id}-{person}", "status": "on_duty", "battery": 70}
    return wire({"type": "checkin", "payload": payload}, tps_id, now)


def event(rnd: random.Random, tps_id: str, now: datetime) -> tuple[bytes, str | None]:
    """A phase change or, one time in a hundred, a report, with its id (resolved RESOLVE_AFTER_S later)."""
    if rnd.random() < 0.99:
        ev: dict[str, Any] = {"type": "tps.status", "payload": {"phase": rnd.choice(["voting", "voting", "counting"])}}
    else:
        ev = {"type": "incident.reported", "payload": {"description": rnd.choice(["Genset mati", "HT rusak"])}}
        ev["event_id"] = str(uuid.uuid4())
        return wire(ev, tps_id, now), str(ev["event_id"])
    return wire(ev, tps_id, now), None


class Publisher(threading.Thread):
    """Publishes at `rate` events a second (in 0.1 s slices) until `seconds` have passed."""

    def __init__(self, bootstrap: str, topic: str, tps: list[tuple[str, str]], rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.tps, self.rate, self.seconds = bootstrap, topic, tps, rate, seconds
        self.sent = 0
        self.behind_s = 0.0  # how far the publisher itself fell behind its schedule, at worst

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from siaga.bus.kafka import KafkaBus

        bus = KafkaBus(self.bootstrap, partitions={self.topic: 12}, publish_timeout_s=30)
        await bus.start()
        rnd = random.Random(11)
        reports: deque[tuple[float, str, str, str]] = deque()  # (when to resolve, report id, tps, kecamatan)
        roster: list[tuple[str, str, int]] = []  # this round's check-ins still to come: (tps, kecamatan, person)
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < self.seconds:
                due = int(elapsed * self.rate) - self.sent
                if due > 0:
                    now = datetime.now(UTC)
                    items = []
                    while reports and reports[0][0] <= elapsed and len(items) < due:  # resolutions count in the rate
                        _, report_id, tps_id, kecamatan = reports.popleft()
                        items.append((kecamatan_key(kecamatan), resolution(report_id, tps_id, now)))
                    while len(items) < due:
                        if rnd.random() < 0.9:  # the next device of the round checks in
                            if not roster:
                                roster = [(t, k, j) for t, k in self.tps for j in (1, 2)]
                                rnd.shuffle(roster)
                            tps_id, kecamatan, person = roster.pop()
                            items.append((kecamatan_key(kecamatan), checkin(tps_id, person, now)))
                            continue
                        tps_id, kecamatan = self.tps[rnd.randrange(len(self.tps))]
                        body, report_id = event(rnd, tps_id, now)
                        items.append((kecamatan_key(kecamatan), body))
                        if report_id is not None:
                            reports.append((elapsed + RESOLVE_AFTER_S, report_id, tps_id, kecamatan))
                    await bus.publish_many(self.topic, items)
                    self.sent += len(items)
                self.behind_s = max(self.behind_s, (int(elapsed * self.rate) - self.sent) / self.rate)
                await asyncio.sleep(0.1)
        finally:
            await bus.stop()


def census_env(minutes: str, out: Path) -> dict[str, str]:
    """The environment that makes the dispatch process take bench/census.py's census at `minutes`."""
    site = Path(tempfile.mkdtemp(prefix="siaga-census-"))
    (site / "sitecustomize.py").write_text("import bench.census\n\nbench.census.start()\n")
    out.unlink(missing_ok=True)
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "SIAGA_CENSUS_AT": minutes, "SIAGA_CENSUS_OUT": str(out)}


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}\{{{want}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


THREAD_HEAP = 64 << 20  # glibc's per-thread heaps each start on a 64 MiB boundary (HEAP_MAX_SIZE)


def rss_by_kind(pid: int) -> dict[str, float]:
    """Resident MB by kind of mapping, from /proc/<pid>/smaps: glibc's main heap (brk), its
    per-thread heaps (anonymous maps starting on a 64 MiB boundary), the other anonymous maps
    (pymalloc's arenas, which the kernel merges when adjacent, big mallocs, thread stacks) and
    files (code, libraries, SQLite's shared memory)."""
    kib = {"heap_mb": 0, "thread_heaps_mb": 0, "mmap_mb": 0, "files_mb": 0}
    kind = "mmap_mb"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 6)
        if head[0] == "Rss:":
            kib[kind] += int(head[1])
        elif "-" in head[0] and len(head) >= 5:
            start = int(head[0].split("-")[0], 16)
            path = head[5] if len(head) > 5 else ""
            if path == "[heap]":
                kind = "heap_mb"
            elif path and not path.startswith("["):
                kind = "files_mb"
            else:
                kind = "thread_heaps_mb" if start % THREAD_HEAP == 0 else "mmap_mb"
    return {k: round(v / 1024, 1) for k, v in kib.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30, help="how long the load lasts (default 30)")
    ap.add_argument(
        "--rate",
        type=float,
        default=1571,
        help="events a second: the design rate over the planned dispatch processes (default 1571 = 11,000 / 7)",
    )
    ap.add_argument(
        "--tps", type=int, default=117_603, help="TPS of this process's share (default 117603 = 823,220 / 7)"
    )
    ap.add_argument("--per-kecamatan", type=int, default=114, help="TPS a kecamatan (default 114, the national mean)")
    ap.add_argument(
        "--name",
        default="soak",
        help="results file bench/results/<name>.json (default soak; e.g. soak_share_4000 for a short run "
        "at a rate above what one process applies, which measures that rate)",
    )
    ap.add_argument(
        "--census",
        default="",
        metavar="MINUTES",
        help="a diagnostic run: count dispatch's objects by type at these minutes (e.g. 10,29) into "
        "bench/results/<name>_census.jsonl (bench/census.py); the census itself moves RSS",
    )
    a = ap.parse_args()
    seconds = a.minutes * 60
    with broker() as bootstrap:
        prefix = unique("soak")
        db = Path(tempfile.mkdtemp(prefix="siaga-soak-")) / "dispatch.db"
        say(f"seeding {a.tps} TPS")
        tps = seed(f"sqlite:///{db}", a.tps, a.per_kecamatan)
        env = {
            **os.environ,
            "SIAGA_KAFKA_BOOTSTRAP": bootstrap,
            "SIAGA_TOPIC_PREFIX": prefix,
            "SIAGA_ACCESS_LOG": "false",
            "SIAGA_LOG_LEVEL": "WARNING",
            "SIAGA_DATABASE_URL": f"sqlite:///{db}",
        }
        if a.census:
            env.update(census_env(a.census, RESULTS / f"{a.name}_census.jsonl"))
        with process([SIAGA, "dispatch", "--no-notifier"], env) as proc:
            publisher = Publisher(bootstrap, prefix + topics.FIELD_EVENTS, tps, a.rate, seconds)
            publisher.start()
            samples: list[dict[str, float]] = []
            started = time.monotonic()
            while publisher.is_alive():
                time.sleep(SAMPLE_S)
                text = httpx.get(proc.url + "/metrics", timeout=10).text
                lag = metric(text, "siaga_consumer_lag", consumer="dispatch", topic=topics.FIELD_EVENTS)
                sample = {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mb": round(rss_mb(proc.pid), 1),
                    "lag_events": lag,
                    "lag_s": round(lag / a.rate, 2),
                    "applied": metric(text, "siaga_dispatch_events_total"),
                    "sent": publisher.sent,
                    "cpu_s": round(proc.cpu_seconds(), 1),
                    # the cyclic collector's full collections so far, and what they freed
                    "gc_full": metric(text, "python_gc_collections_total", generation="2"),
                    "gc_full_collected": metric(text, "python_gc_objects_collected_total", generation="2"),
                    "malloc_trims": metric(text, "siaga_malloc_trims_total"),
                    "sqlite_mb": round(metric(text, "siaga_sqlite_memory_bytes") / 2**20, 1),
                    **rss_by_kind(proc.pid),
                }
                samples.append(sample)
                say(
                    f"  {sample['t_s']:.0f} s: sent {publisher.sent}, applied {sample['applied']:.0f}, "
                    f"lag {sample['lag_s']:.2f} s, RSS {sample['rss_mb']:.0f} MB (heap {sample['heap_mb']:.0f}, "
                    f"thread heaps {sample['thread_heaps_mb']:.0f}, other anonymous {sample['mmap_mb']:.0f}; "
                    f"SQLite {sample['sqlite_mb']:.0f})"
                )
            publisher.join()
            end = time.monotonic() + 120
            applied = 0.0
            while time.monotonic() < end:
                applied = metric(httpx.get(proc.url + "/metrics", timeout=10).text, "siaga_dispatch_events_total")
                if applied >= publisher.sent:
                    break
                time.sleep(1.0)
            drained_s = round(time.monotonic() - (started + seconds), 1)
    window = [s for s in samples if s["t_s"] >= seconds - 20 * 60] or samples
    growth = (window[-1]["rss_mb"] - window[0]["rss_mb"]) / window[0]["rss_mb"] if window else 0.0
    peak = (max(s["rss_mb"] for s in window) - window[0]["rss_mb"]) / window[0]["rss_mb"] if window else 0.0
    worst_lag = max((s["lag_s"] for s in samples), default=0.0)
    lost = publisher.sent - int(applied)
    result = {
        "minutes": a.minutes,
        "rate": a.rate,
        "tps": a.tps,
        "sent": publisher.sent,
        "applied": int(applied),
        "lost": lost,
        "publisher_behind_s": round(publisher.behind_s, 2),
        "rss_start_of_window_mb": window[0]["rss_mb"] if window else None,
        "rss_end_mb": window[-1]["rss_mb"] if window else None,
        "rss_growth_last_20_min": round(growth, 4),
        # the highest sample of the window against its start: RSS breathes with the trims and batches
        "rss_peak_growth_last_20_min": round(peak, 4),
        "malloc_arena_max": os.environ.get("SIAGA_MALLOC_ARENA_MAX", "default"),
        "worst_lag_s": worst_lag,
        "drained_after_load_s": drained_s,
        "passed": growth < 0.05 and worst_lag <= 5 and lost == 0,
        "samples": samples,
    }
    say(
        f"sent {publisher.sent}, applied {int(applied)}, lost {lost}; RSS {growth:+.1%} over the last 20 min "
        f"(peak {peak:+.1%}); "
        f"worst lag {worst_lag:.2f} s; {'PASSED' if result['passed'] else 'FAILED'}"
    )
    say(f"wrote {write(a.name, result)}")


if __name__ == "__main__":
    main()
