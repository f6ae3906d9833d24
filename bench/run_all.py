"""Run every benchmark in turn on one Kafka broker and write bench/results/*.json.

Each benchmark runs as its own process with SIAGA_KAFKA_BOOTSTRAP pointing at the one broker
started here (or at the one already configured), so none starts a broker of its own. The load
average before and after each is recorded in bench/results/run_all.json (the machine is shared).
Also writes bench/results/election_day.json: the load profile of a simulated Serang election day
(the simulator's plan, not sent anywhere), the input of docs/capacity.md.

    .venv/bin/python -m bench.run_all [--quick] [--only ingest,fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from typing import Any

from bench.common import (
    PY,
    ROOT,
    broker,
    day_events,
    field_records,
    loadavg,
    say,
    seed_serang,
    serang_plan,
    table,
    write,
)

# name -> (module, arguments of a full run, arguments of a quick run)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "classify": ("classify", [], ["--rounds", "5"]),
    "ingest": ("ingest", [], ["--duration", "5"]),
    "ingest_2workers": ("ingest", ["--workers", "2"], ["--duration", "5", "--workers", "2"]),
    "dispatch": ("dispatch", [], ["--events", "5000"]),
    "dispatch_day": ("dispatch", ["--mix", "day", "--events", "12000"], ["--mix", "day", "--events", "3000"]),
    "e2e_latency": ("e2e_latency", [], ["--duration", "10", "--drain", "20"]),
    "fanout": ("fanout", [], ["--duration", "10"]),
}
PEMILU_2024_TPS = 823_220
PROFILES = ("election_day", "db_load")  # in-process steps that feed docs/capacity.md


def election_day(seeds: list[int]) -> dict[str, Any]:
    """Events of a simulated Serang election day (1,408 TPS) by type, hour, peak minute and second."""
    days: list[dict[str, Any]] = []
    for seed in seeds:
        fleet, plan = serang_plan(seed)
        by_type: Counter[str] = Counter()
        by_minute: Counter[int] = Counter()
        by_second: Counter[int] = Counter()
        for send in plan.sends:
            for ev in send.events:
                by_type[str(ev.event["type"])] += 1
                by_minute[int(ev.at)] += 1
                by_second[int(ev.at * 60)] += 1
        peak_minute, peak_count = max(by_minute.items(), key=lambda kv: kv[1])
        first, last = min(by_minute), max(by_minute)
        hourly = Counter({m // 60: 0 for m in range(first, last + 1)})
        for m, c in by_minute.items():
            hourly[m // 60] += c
        days.append(
            {
                "seed": seed,
                "events": plan.events,
                "requests": len(plan.sends),
                "by_type": dict(by_type.most_common()),
                "first_minute": f"{first // 60:02d}:{first % 60:02d}",
                "last_minute": f"{last // 60:02d}:{last % 60:02d}",
                "peak_minute": f"{peak_minute // 60:02d}:{peak_minute % 60:02d}",
                "peak_minute_events": peak_count,
                "peak_second_events": max(by_second.values()),
                "peak_hour_events": max(hourly.values()),
                "by_hour": {f"{h:02d}": c for h, c in sorted(hourly.items())},
            }
        )
    n_tps = len(fleet.tps)
    per_tps_day = sum(d["events"] for d in days) / len(days) / n_tps
    peak_min = max(d["peak_minute_events"] for d in days)
    return {
        "tps": n_tps,
        "personnel": len(fleet.personnel),
        "devices": len(fleet.devices),
        "days": days,
        "events_per_tps_per_day": round(per_tps_day, 1),
        "peak_minute_events_per_tps": round(peak_min / n_tps, 4),
        "national_tps": PEMILU_2024_TPS,
        "national_events_per_day": round(per_tps_day * PEMILU_2024_TPS),
        "national_peak_minute_avg_events_per_s": round(peak_min / n_tps * PEMILU_2024_TPS / 60),
    }


def db_load(seed: int, *, start: str = "06:55", limit: int = 6000) -> dict[str, Any]:
    """Dispatch's transaction in this process (in-process bus, SQLite) on the simulated day's busiest stretch.

    Takes the `limit` planned events from `start` (WIB) on - the morning peak, 96 % check-ins - and
    applies them through `Dispatch.transact` in batches of 500, as the consumer would. Reports the
    events a second one core sustains without the broker, and the SQL statements per event by verb
    and table (what a database must absorb per field event).
    """
    import re
    import tempfile
    from pathlib import Path

    from sqlalchemy import event, text
    from sqlmodel import Session

    from services.dispatch.service import Dispatch
    from siaga.bus import Record
    from siaga.runtime import make_context
    from siaga.settings import Settings

    db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "db_load.db"
    seed_serang(f"sqlite:///{db}")
    ctx = make_context(Settings(database_url=f"sqlite:///{db}", kafka_bootstrap=None, topic_prefix=""))
    planned = day_events(seed, start=start, limit=limit)
    records = [
        Record(topic="siaga.field-events", key=key, value=value, offset=i)
        for i, (key, value) in enumerate(field_records(planned))
    ]
    statements: Counter[str] = Counter()
    verb = re.compile(r"^\s*(INSERT INTO|UPDATE|DELETE FROM|SELECT)\s+(?:.*?\bFROM\s+)?\"?(\w+)", re.I | re.S)

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        m = verb.match(statement)
        statements[f"{m.group(1).split()[0].upper()} {m.group(2)}" if m else statement.split()[0].upper()] += 1

    event.listen(ctx.engine, "before_cursor_execute", count)
    dispatch = Dispatch(ctx)

    async def go() -> float:
        await ctx.bus.start()
        t0 = time.perf_counter()
        for i in range(0, len(records), 500):
            await dispatch.handle(records[i : i + 500])  # as the consumer loop hands them over
        elapsed = time.perf_counter() - t0
        await ctx.bus.stop()
        return elapsed

    load0 = loadavg()
    elapsed = asyncio.run(go())
    event.remove(ctx.engine, "before_cursor_execute", count)
    with Session(ctx.engine) as s:
        tables = [r[0] for r in s.exec(text("SELECT name FROM sqlite_master WHERE type='table'")).all()]  # type: ignore[call-overload]
        rows = {t: s.exec(text(f'SELECT count(*) FROM "{t}"')).one()[0] for t in tables}  # type: ignore[call-overload]
    n = len(records)
    writes = sum(c for k, c in statements.items() if k.split()[0] in ("INSERT", "UPDATE", "DELETE"))
    return {
        "seed": seed,
        "from": start,
        "events": n,
        "by_type": dict(Counter(str(e.event["type"]) for e in planned).most_common()),
        "seconds": round(elapsed, 2),
        "events_per_s": round(n / elapsed),
        "statements_per_event": round(sum(statements.values()) / n, 2),
        "writes_per_event": round(writes / n, 2),
        "statements": {k: round(c / n, 3) for k, c in statements.most_common()},
        "rows_after": rows,
        "loadavg_start": load0,
    }


def run_one(name: str, module: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One benchmark as a child process (its output streams through); its exit code, time and load."""
    before = loadavg()
    started = time.perf_counter()
    code = subprocess.run([PY, "-m", f"bench.{module}", *args], cwd=ROOT, env=env, check=False).returncode
    return {
        "benchmark": name,
        "args": " ".join(args),
        "exit": code,
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short durations (a few minutes in all)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join([*BENCHMARKS, *PROFILES])}")
    a = ap.parse_args()
    wanted = [w for w in a.only.split(",") if w] or [*BENCHMARKS, *PROFILES]
    unknown = set(wanted) - {*BENCHMARKS, *PROFILES}
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    runs: list[dict[str, Any]] = []
    if "election_day" in wanted:
        say("election_day: the simulator's plan of a Serang election day")
        profile = election_day([1, 2, 3] if not a.quick else [1])
        say(f"wrote {write('election_day', profile)}")
        print(json.dumps({k: v for k, v in profile.items() if k != "days"}, indent=2))
    if "db_load" in wanted:
        say("db_load: dispatch's transaction in process on the simulated morning peak")
        load = db_load(1, limit=2000 if a.quick else 6000)
        say(f"wrote {write('db_load', load)}")
        print(json.dumps({k: v for k, v in load.items() if k != "rows_after"}, indent=2))
    names = [n for n in BENCHMARKS if n in wanted]
    if names:
        with broker() as bootstrap:
            env = dict(os.environ, SIAGA_KAFKA_BOOTSTRAP=bootstrap)
            for i, name in enumerate(names, 1):
                module, full, quick = BENCHMARKS[name]
                args = quick if a.quick else full
                say(f"[{i}/{len(names)}] {name} {' '.join(args)} (load average {loadavg()})")
                runs.append(run_one(name, module, args, env))
                say(f"[{i}/{len(names)}] {name}: exit {runs[-1]['exit']} in {runs[-1]['seconds']}s")
        print(table(runs, ["benchmark", "args", "exit", "seconds", "loadavg_before", "loadavg_after"]))
        say(f"wrote {write('run_all', {'quick': a.quick, 'runs': runs})}")
    if any(r["exit"] != 0 for r in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
