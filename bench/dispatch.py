"""Dispatch throughput: field events a second through the real broker, one process, SQLite or PostgreSQL.

The events are put on the topic first; then `siaga dispatch` starts and the clock runs until it
has applied them all. `--mix synthetic`: check-ins, reports that open incidents and follow-ups
(report-heavy, the expensive path); `--mix day`: the simulated Serang morning peak as the field
sends it (mostly check-ins and phase changes). The baseline, measured in the same run on the same
events: a bare aiokafka consumer group that only reads and commits (the bus's own cost).

    .venv/bin/python -m bench.dispatch [--events 20000] [--mix synthetic|day|reports] [--database sqlite|postgres]

`--mix reports`: reports alone, each opening an incident at its own TPS. `--database postgres`
starts a PostgreSQL server of its own (Debian's, as the tests do) for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from bench.common import (
    SIAGA,
    broker,
    database,
    day_events,
    field_records,
    say,
    seed,
    seed_serang,
    server,
    table,
    unique,
    write,
)
from siaga import topics


def events(n: int, tps: list[str]) -> list[tuple[str, bytes]]:
    rnd = random.Random(7)
    now = datetime.now(UTC)
    out: list[tuple[str, bytes]] = []
    reports: dict[str, str] = {}
    texts = [
        "Genset mati",
        "Surat suara kurang",
        "Warga ribut di depan TPS",
        "Ada pembagian amplop",
        "HT rusak",
        "Banjir setinggi lutut",
        "Petugas KPPS pingsan",
    ]
    for i in range(n):
        t = tps[i % len(tps)]
        at = (now - timedelta(seconds=n - i)).isoformat()
        roll = rnd.random()
        if roll < 0.6:
            ev = {"type": "checkin", "payload": {"personnel_id": f"L{i % 500}", "status": "on_duty", "battery": 80}}
        elif roll < 0.85 or t not in reports:
            eid = str(uuid.uuid4())
            reports[t] = eid
            ev = {"event_id": eid, "type": "incident.reported", "payload": {"description": rnd.choice(texts)}}
        else:
            ev = {"type": "incident.update", "payload": {"report_id": reports[t], "note": "masih ditangani"}}
        ev.setdefault("event_id", str(uuid.uuid4()))
        ev.update(tps_id=t, occurred_at=at)
        out.append((t, orjson.dumps({"event": ev, "device_id": "bench", "received_at": now.isoformat()})))
    return out


async def publish(bootstrap: str, topic: str, items: list[tuple[str, bytes]]) -> None:
    from siaga.bus.kafka import KafkaBus

    bus = KafkaBus(bootstrap, partitions={topic: 12})
    await bus.start()
    for i in range(0, len(items), 1000):
        await bus.publish_many(topic, items[i : i + 1000])
    await bus.stop()


async def bare_consumer(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench-bare-" + uuid.uuid4().hex[:6],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await c.start()
    got = 0
    started = time.perf_counter()
    try:
        while got < n:
            batch = await c.getmany(timeout_ms=200, max_records=500)
            for records in batch.values():
                got += len(records)
            if batch:
                await c.commit()
    finally:
        await c.stop()
    return time.perf_counter() - started


def applied(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(r"^siaga_dispatch_events_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="field events to apply (default 20000)")
    ap.add_argument("--tps", type=int, default=1000, help="distinct TPS of the synthetic mix (default 1000)")
    ap.add_argument(
        "--mix",
        choices=("synthetic", "day", "reports"),
        default="synthetic",
        help="synthetic: 60%% check-ins, 25%% reports, 15%% follow-ups over --tps TPS (default); "
        "day: the simulated Serang morning peak from 06:55 (1,408 TPS, mostly check-ins and phase changes); "
        "reports: reports alone, one per TPS (--tps is raised to --events)",
    )
    ap.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: a file in a temporary directory (default); postgres: a PostgreSQL server started for the run",
    )
    a = ap.parse_args()
    with broker() as bootstrap, database(a.database) as db_url:
        prefix = unique("benchd")
        topic = prefix + topics.FIELD_EVENTS
        if a.mix == "day":
            seed_serang(db_url)
            items = field_records(day_events(1, limit=a.events))
        elif a.mix == "reports":
            _, tps = seed(db_url, n_tps=a.events)
            items = reports(tps)
        else:
            _, tps = seed(db_url, n_tps=a.tps)
            items = events(a.events, tps)
        say(f"publishing {len(items)} field events")
        asyncio.run(publish(bootstrap, topic, items))
        say("baseline: a bare consumer that reads and commits")
        bare = asyncio.run(bare_consumer(bootstrap, topic, len(items)))
        say(f"  {len(items) / bare:.0f} events/s")
        env = dict(
            os.environ,
            SIAGA_KAFKA_BOOTSTRAP=bootstrap,
            SIAGA_TOPIC_PREFIX=prefix,
            SIAGA_ACCESS_LOG="false",
            SIAGA_LOG_LEVEL="WARNING",
            SIAGA_DATABASE_URL=db_url,
        )
        say("siaga dispatch (no notifier)")
        started = time.perf_counter()
        with server([SIAGA, "dispatch", "--no-notifier"], env) as url:
            last, last_at = 0.0, time.perf_counter()
            first_at, first_done = 0.0, 0.0
            said_at = time.perf_counter()
            while True:
                done = applied(url)
                if done and not first_at:
                    first_at, first_done = time.perf_counter(), done
                if done >= len(items):
                    break
                if done != last:
                    last, last_at = done, time.perf_counter()
                elif time.perf_counter() - last_at > 60:
                    raise SystemExit(f"dispatch stalled at {done} of {len(items)}")
                time.sleep(0.2)
                if time.perf_counter() - said_at >= 5:
                    said_at = time.perf_counter()
                    say(f"  {done:.0f} of {len(items)} applied")
            finished = time.perf_counter()
            elapsed = finished - started
            steady = (len(items) - first_done) / max(finished - first_at, 1e-9)
    rows: list[dict[str, Any]] = [
        {
            "what": "bare consumer (baseline)",
            "events": len(items),
            "seconds": round(bare, 2),
            "events_per_s": round(len(items) / bare),
        },
        {
            "what": "siaga dispatch, incl. start-up",
            "events": len(items),
            "seconds": round(elapsed, 2),
            "events_per_s": round(len(items) / elapsed),
        },
        {
            "what": "siaga dispatch, once consuming",
            "events": len(items) - int(first_done),
            "seconds": round(finished - first_at, 2),
            "events_per_s": round(steady),
        },
    ]
    for r in rows:
        r["vs_baseline"] = f"{r['events_per_s'] / rows[0]['events_per_s']:.2f}x"
    print(table(rows, ["what", "events", "seconds", "events_per_s", "vs_baseline"]))
    name = {"synthetic": "dispatch", "day": "dispatch_day", "reports": "dispatch_reports"}[a.mix]
    if a.database == "postgres":
        name += "_postgres"
    result = {"events": len(items), "mix": a.mix, "tps": a.tps, "database": a.database, "rows": rows}
    say(f"wrote {write(name, result)}")


def reports(tps: list[str]) -> list[tuple[str, bytes]]:
    """One report a TPS (each opens an incident), texts from the shared examples' kinds."""
    texts = ["Genset mati, TPS gelap", "Kotak suara rusak", "Warga ribut soal DPT", "Banjir setinggi lutut"]
    out = []
    now = datetime.now(UTC)
    for i, t in enumerate(tps):
        ev = {
            "event_id": str(uuid.uuid4()),
            "type": "incident.reported",
            "tps_id": t,
            "occurred_at": (now - timedelta(seconds=1)).isoformat(),
            "payload": {"description": texts[i % len(texts)]},
        }
        out.append((t, orjson.dumps({"event": ev, "device_id": "bench", "received_at": now.isoformat()})))
    return out


if __name__ == "__main__":
    main()
