"""The dashboard at national scale: 823,220 TPS, the roll-up view and the drill-down into one kabupaten.

One run:

1. a Kafka broker (`bench.common.broker()`), a fresh `<prefix>siaga.incident-updates` topic;
2. one TPS update for every TPS of the synthetic national registry (scripts/gen_national.py,
   seeded: 38 provinsi, 514 kabupaten/kota, 7,272 kecamatan) and `--incidents` incident updates
   spread over them, published as fast as the producer goes (not awaited one by one; key
   `tps:<id>` and the incident id, as dispatch keys them on this compacted topic). A sample of the
   messages is checked against the contract (`INCIDENT_UPDATE.validate_json`) first;
3. one `siaga dashboard` process (its own SQLite file with one viewer token), which reads the
   topic from the beginning; loaded when a `view=summary&by=provinsi` frame counts every TPS and
   every incident (polled once a second);
4. with the viewer token, each time from the start of the WebSocket connect to the whole first
   frame received (no permessage-deflate unless `--deflate`; bytes are the frame's uncompressed
   JSON text):
   - the national summary by provinsi, kabupaten and kecamatan: the first open (the stream is
     made) and `--repeats` more (cached);
   - the detail snapshot of the `--kabupaten` largest kabupaten (`?kabupaten=<name>`): the first
     open (services/dashboard/app.py `hub_for` builds the view from the national hub) and a second
     (the view is kept);
   - the dashboard's RSS (VmRSS, and the peak VmHWM, from /proc/<pid>/status) after loading and
     after these measurements;
   - the baseline, last (it grows the process by its size): the unscoped detail snapshot, every TPS
     of the country, first and second open;
5. a table, bench/results/national.json, and the targets: national summary by kabupaten < 200 KB,
   kabupaten detail snapshot < 200 ms (every first open; the second open too), dashboard RSS
   < 2 GB (2 * 10^9 bytes; after loading and after the summaries and drill-downs, and, checked
   apart, once the baseline's national snapshot has been served).

`--profile` instead loads the same messages into an in-process `Dashboard` (no broker, no
server; bench/results/national_profile.json): the RSS the picture takes and an estimate of what
holds it; for each of the largest kabupaten the time of `hub_for` and of its snapshot, of a
prototype that builds the view from the parts the national hub already holds (`fast_view`), and
of the cost if the hub kept every TPS as JSON bytes and per-kabupaten aggregates
(`encoded_view`); and a cProfile of `hub_for` + snapshot for the largest.

    .venv/bin/python -m bench.national [--tps 823220] [--incidents 20000] [--kabupaten 5]
    .venv/bin/python -m bench.national --tps 50000 --incidents 2000     # a quick run, ~30 s
    .venv/bin/python -m bench.national --profile [--tps 823220]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import quote

import orjson

from bench.common import SIAGA, broker, cpu_seconds, loadavg, process, say, table, unique, write
from bench.fanout import create_topic, viewer_db
from scripts.gen_national import DEFAULT_SEED, TOTAL_TPS, TpsRow, registry
from siaga import topics
from siaga.contracts import INCIDENT_UPDATE

SUMMARY_MAX_BYTES = 200_000
DETAIL_MAX_MS = 200.0
RSS_MAX_BYTES = 2_000_000_000
LEVELS = ("provinsi", "kabupaten", "kecamatan")

CATEGORIES = ("equipment", "logistics", "crowd", "medical", "traffic", "hoax", "flood", "money_politics")
SEVERITIES = ("low", "medium", "medium", "medium", "high", "high", "critical")
# (status, level): an election-day morning, most incidents still being handled on site.
STATUSES: tuple[tuple[str, int], ...] = (
    (("open", 0),) * 9
    + (("escalated", 1),) * 2
    + (("escalated", 2),)
    + (("acknowledged", 1),) * 3
    + (("resolved", 0),) * 5
)
BASE = datetime(2024, 2, 14, 6, 0, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


MINUTES = [_iso(BASE + timedelta(minutes=m)) for m in range(0, 6 * 60)]  # 06:00..11:59 UTC


# -- the messages --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What is published: every TPS of the registry, and incidents at `incidents` of them."""

    seed: int
    tps: int
    incidents: int

    def at(self) -> dict[int, int]:
        """TPS index -> incident number (one incident a TPS at most)."""
        rng = random.Random(f"bench-national:{self.seed}:incidents")
        chosen = rng.sample(range(self.tps), min(self.incidents, self.tps))
        return {t: n for n, t in enumerate(sorted(chosen))}

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every update, in registry order, each incident just before its TPS."""
        rng = random.Random(f"bench-national:{self.seed}:tps")
        incident_at = self.at()
        for i, row in enumerate(registry(self.seed, self.tps).rows()):
            open_incidents, escalated = 0, False
            n = incident_at.get(i)
            if n is not None:
                inc = incident(n, row)
                status = inc["status"]
                open_incidents = int(status != "resolved")
                escalated = status != "resolved" and inc["level"] >= 1
                yield inc["id"].encode(), orjson.dumps({"type": "incident", "incident": inc})
            doc = tps_doc(rng, row, open_incidents, escalated)
            yield f"tps:{row.tps_id}".encode(), orjson.dumps({"type": "tps", "tps": doc})


def tps_doc(rng: random.Random, row: TpsRow, open_incidents: int, escalated: bool) -> dict[str, Any]:
    """A TPS update as dispatch publishes it, mid-morning of election day."""
    r = rng.random()
    assigned = rng.choice((2, 3, 3, 3, 3, 4))
    phase: str | None = "voting"
    checked_in = assigned if rng.random() < 0.85 else assigned - 1
    last: str | None = MINUTES[rng.randrange(len(MINUTES) // 2, len(MINUTES))]
    if open_incidents:
        state = "escalated" if escalated else "open"
    elif r < 0.015:  # no check-in for too long
        state, last = "silent", MINUTES[rng.randrange(0, len(MINUTES) // 2)]
        checked_in = rng.choice((0, 0, 1))
        phase = rng.choice((None, "opening"))
    elif r < 0.02:
        state, phase = "closed", "closed"
    else:
        state = "normal"
        if r > 0.99:
            phase = "counting"
    doc: dict[str, Any] = {
        "tps_id": row.tps_id,
        "name": row.name,
        "kecamatan": row.kecamatan,
        "kabupaten": row.kabupaten,
        "provinsi": row.provinsi,
        "desa": row.desa,
        "lat": row.lat,
        "lon": row.lon,
        "rawan": list(row.rawan),
        "phase": phase,
        "state": state,
        "assigned": assigned,
        "checked_in": checked_in,
        "last_checkin_at": last if checked_in else None,
        "open_incidents": open_incidents,
        "version": rng.randint(3, 40),
    }
    if rng.random() < 0.01:
        doc["fatigued" if rng.random() < 0.5 else "unwell"] = 1
    return doc


def incident(n: int, row: TpsRow) -> dict[str, Any]:
    """Incident n at a TPS (the shape of bench/fanout.py's, in its TPS's regions)."""
    rng = random.Random(f"bench-national:incident:{n}")
    status, level = rng.choice(STATUSES)
    opened = BASE + timedelta(minutes=rng.randrange(60, 5 * 60), seconds=rng.randrange(60))
    updated = opened + timedelta(minutes=rng.randrange(1, 50))
    return {
        "id": f"INC-NAT-{n:06d}",
        "tps_id": row.tps_id,
        "tps_name": row.name,
        "kecamatan": row.kecamatan,
        "kabupaten": row.kabupaten,
        "provinsi": row.provinsi,
        "category": rng.choice(CATEGORIES),
        "severity": rng.choice(SEVERITIES),
        "level": level,
        "status": status,
        "reports": rng.choice((1, 1, 1, 2, 3)),
        "opened_at": _iso(opened),
        "received_at": _iso(opened + timedelta(seconds=rng.randrange(1, 90))),
        "local_deadline": _iso(opened + timedelta(minutes=15)),
        "ack_deadline": _iso(opened + timedelta(minutes=30)) if level else None,
        "why": ["keyword: genset", "category given by the officer"],
        "facts": {"injuries": 0},
        "description": "Genset mati, TPS gelap",
        "parent_id": None,
        "children": [],
        "policy_version": 1,
        "updated_at": _iso(updated),
        "resolved_at": _iso(updated) if status == "resolved" else None,
        "resolution": "sdh nyala lagi" if status == "resolved" else None,
        "last_alert_failure": None,
        "version": rng.randint(1, 6),
    }


def check_sample(plan: Plan, every: int = 997, first: int = 2000) -> int:
    """Validate the first `first` messages and every `every`-th after by the contract; how many were checked."""
    checked = 0
    for i, (_key, value) in enumerate(plan.messages()):
        if i < first or i % every == 0:
            INCIDENT_UPDATE.validate_json(value)
            checked += 1
    return checked


async def publish(bootstrap: str, topic: str, plan: Plan) -> dict[str, Any]:
    """Every message of the plan onto the topic, acknowledgements awaited a chunk at a time."""
    from aiokafka import AIOKafkaProducer

    total = plan.tps + min(plan.incidents, plan.tps)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    sent = size = 0
    start = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    try:
        for key, value in plan.messages():
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            size += len(value)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
            if sent % 100_000 == 0:
                rate = sent / (time.perf_counter() - start)
                say(f"  published {sent:,}/{total:,} ({rate:,.0f} messages/s)")
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - start
    return {"messages": sent, "bytes": size, "seconds": round(seconds, 1), "per_s": round(sent / seconds)}


# -- the measurements ----------------------------------------------------------------------------
@dataclass
class Got:
    ms: float
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)


async def first_frame(url: str, *, deflate: bool) -> Got:
    """Connect, take the first frame whole, close: the time from before the connect to the frame."""
    from websockets.asyncio.client import connect

    t0 = time.perf_counter()
    async with connect(
        url, max_size=None, compression="deflate" if deflate else None, open_timeout=120, ping_interval=None
    ) as ws:
        raw = await ws.recv(decode=False)
        ms = 1000 * (time.perf_counter() - t0)
    return Got(round(ms, 1), raw if isinstance(raw, bytes) else raw.encode())


def summary_totals(doc: dict[str, Any]) -> tuple[int, int]:
    """(TPS, incidents) a summary frame counts."""
    tps = incidents = 0
    for row in doc["regions"]:
        tps += sum(row["tps"].values())
        incidents += sum(row["open"].values()) + row["resolved"]
    return tps, incidents


async def wait_loaded(ws: str, n_tps: int, n_incidents: int, timeout_s: float) -> int:
    """Poll the summary by provinsi until it counts every TPS and incident; how many polls it took."""
    polls, last = 0, time.monotonic()
    end = time.monotonic() + timeout_s
    while True:
        polls += 1
        got = await first_frame(ws + "&view=summary&by=provinsi", deflate=False)
        tps, incidents = summary_totals(orjson.loads(got.raw))
        if tps >= n_tps and incidents >= n_incidents:
            return polls
        if time.monotonic() > end:
            raise TimeoutError(f"the dashboard holds {tps:,} TPS and {incidents:,} incidents after {timeout_s:.0f}s")
        if time.monotonic() - last > 10:
            say(f"  dashboard holds {tps:,}/{n_tps:,} TPS, {incidents:,}/{n_incidents:,} incidents")
            last = time.monotonic()
        await asyncio.sleep(1.0)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _ms(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


async def measure(ws: str, a: argparse.Namespace, pid: int) -> dict[str, Any]:
    """The summaries, the kabupaten drill-downs, RSS, and last the baseline."""
    out: dict[str, Any] = {"memory_loaded": memory(pid)}
    summaries: dict[str, Any] = {}
    by_kab: list[dict[str, Any]] = []
    for by in LEVELS:
        first = await first_frame(f"{ws}&view=summary&by={by}", deflate=a.deflate)
        again = [(await first_frame(f"{ws}&view=summary&by={by}", deflate=a.deflate)).ms for _ in range(a.repeats)]
        doc = orjson.loads(first.raw)
        assert doc["type"] == "summary" and doc["full"] and doc["by"] == by, doc["type"]
        if by == "kabupaten":
            by_kab = doc["regions"]
        summaries[by] = {
            "regions": len(doc["regions"]),
            "bytes": first.size,
            "deflated_bytes": len(zlib.compress(first.raw, 6)),
            "first_ms": first.ms,
            "again_ms": _ms(again),
        }
        say(f"  summary by {by}: {len(doc['regions']):,} regions, {first.size:,} B, first {first.ms} ms")
    out["summary"] = summaries

    largest = sorted(by_kab, key=lambda r: (-sum(r["tps"].values()), r["kabupaten"]))[: a.kabupaten]
    opens = []
    for row in largest:
        name, n_tps = row["kabupaten"], sum(row["tps"].values())
        url = f"{ws}&kabupaten={quote(name)}"
        cpu0 = cpu_seconds(pid)
        first = await first_frame(url, deflate=a.deflate)
        cpu1 = cpu_seconds(pid)
        second = await first_frame(url, deflate=a.deflate)
        cpu2 = cpu_seconds(pid)
        doc = orjson.loads(first.raw)
        assert doc["type"] == "snapshot" and len(doc["tps"]) == n_tps, (doc["type"], len(doc.get("tps", ())), n_tps)
        opens.append(
            {
                "kabupaten": name,
                "provinsi": row["provinsi"],
                "tps": n_tps,
                "incidents": len(doc["incidents"]),
                "bytes": first.size,
                "first_ms": first.ms,
                "second_ms": second.ms,
                "server_cpu_ms": [round(1000 * (cpu1 - cpu0)), round(1000 * (cpu2 - cpu1))],
            }
        )
        say(
            f"  {name}: {n_tps:,} TPS, {first.size:,} B, first open {first.ms} ms, second {second.ms} ms "
            f"(server CPU {opens[-1]['server_cpu_ms'][0]} ms, {opens[-1]['server_cpu_ms'][1]} ms)"
        )
    out["kabupaten"] = {
        "opens": opens,
        "first_ms": _ms([o["first_ms"] for o in opens]),
        "second_ms": _ms([o["second_ms"] for o in opens]),
        "bytes": _ms([o["bytes"] for o in opens]),
    }
    out["memory_measured"] = memory(pid)

    say("  baseline: the unscoped detail snapshot (every TPS)")
    first = await first_frame(ws, deflate=a.deflate)
    out["memory_after_baseline_first"] = memory(pid)
    second = await first_frame(ws, deflate=a.deflate)
    doc = orjson.loads(first.raw)
    assert doc["type"] == "snapshot", doc["type"]
    out["baseline"] = {
        "tps": len(doc["tps"]),
        "incidents": len(doc["incidents"]),
        "bytes": first.size,
        "first_ms": first.ms,
        "second_ms": second.ms,
    }
    del doc, first
    out["memory_after_baseline"] = memory(pid)
    return out


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its figure and pass/fail."""
    kab_bytes = r["summary"]["kabupaten"]["bytes"]
    first, second = r["kabupaten"]["first_ms"], r["kabupaten"]["second_ms"]
    rss = max(r["memory_loaded"]["VmRSS"], r["memory_measured"]["VmRSS"])
    peak = r["memory_measured"]["VmHWM"]
    after, after_peak = r["memory_after_baseline"]["VmRSS"], r["memory_after_baseline"]["VmHWM"]
    return [
        {
            "target": "national summary by kabupaten < 200 KB (uncompressed)",
            "measured": f"{kab_bytes:,} B",
            "pass": kab_bytes < SUMMARY_MAX_BYTES,
        },
        {
            "target": "kabupaten detail snapshot < 200 ms (first open, every kabupaten)",
            "measured": f"median {first['median']} ms, max {first['max']} ms",
            "pass": first["max"] < DETAIL_MAX_MS,
        },
        {
            "target": "kabupaten detail snapshot < 200 ms (second open, view kept)",
            "measured": f"median {second['median']} ms, max {second['max']} ms",
            "pass": second["max"] < DETAIL_MAX_MS,
        },
        {
            "target": "dashboard RSS < 2 GB (loaded and after the summary/kabupaten measurements; peak)",
            "measured": f"{rss / 1e9:.2f} GB (peak {peak / 1e9:.2f} GB)",
            "pass": rss < RSS_MAX_BYTES and peak < RSS_MAX_BYTES,
        },
        {
            "target": "dashboard RSS < 2 GB once the unscoped detail view (the baseline) was opened; peak",
            "measured": f"{after / 1e9:.2f} GB (peak {after_peak / 1e9:.2f} GB)",
            "pass": after < RSS_MAX_BYTES and after_peak < RSS_MAX_BYTES,
        },
    ]


def run(a: argparse.Namespace) -> None:
    plan = Plan(a.seed, a.tps, a.incidents)
    counts = registry(a.seed, a.tps).counts()
    n_incidents = min(a.incidents, a.tps)
    say(
        f"registry: {counts.tps:,} TPS, {counts.provinsi} provinsi, {counts.kabupaten} kabupaten/kota, "
        f"{counts.kecamatan:,} kecamatan; {n_incidents:,} incidents"
    )
    t0 = time.perf_counter()
    checked = check_sample(plan)
    say(f"checked {checked:,} sample messages against the contract ({time.perf_counter() - t0:.1f}s)")
    load_start = loadavg()
    doc: dict[str, Any] = {
        "seed": a.seed,
        "registry": counts._asdict(),
        "incidents": n_incidents,
        "deflate": a.deflate,
        "loadavg_start": load_start,
        "checked_messages": checked,
    }
    with broker() as bootstrap:
        env = dict(os.environ, SIAGA_KAFKA_BOOTSTRAP=bootstrap, SIAGA_ACCESS_LOG="false", SIAGA_LOG_LEVEL="WARNING")
        prefix = unique("benchn")
        topic = prefix + topics.INCIDENT_UPDATES
        asyncio.run(create_topic(bootstrap, topic, 6))
        say(f"publishing {counts.tps + n_incidents:,} updates to {topic}")
        doc["publish"] = asyncio.run(publish(bootstrap, topic, plan))
        say(f"  {doc['publish']}")
        db = Path(tempfile.mkdtemp(prefix="siaga-bench-")) / "national.db"
        viewer = viewer_db(db)
        denv = dict(env, SIAGA_TOPIC_PREFIX=prefix, SIAGA_DATABASE_URL=f"sqlite:///{db}")
        say("starting siaga dashboard")
        started = time.perf_counter()
        with process([SIAGA, "dashboard"], denv, ready_path="/readyz") as dash:
            ready = time.perf_counter() - started
            ws = dash.url.replace("http://", "ws://") + f"/ws?token={viewer}"
            polls = asyncio.run(wait_loaded(ws, counts.tps, n_incidents, a.load_timeout))
            loaded = time.perf_counter() - started
            doc["load"] = {
                "ready_s": round(ready, 1),
                "loaded_s": round(loaded, 1),
                "per_s": round(doc["publish"]["messages"] / loaded),
                "cpu_s": round(cpu_seconds(dash.pid), 1),
                "polls": polls,
            }
            say(f"  loaded in {loaded:.1f}s ({doc['load']['per_s']:,} updates/s), {memory(dash.pid)}")
            doc.update(asyncio.run(measure(ws, a, dash.pid)))
            doc["cpu_s_end"] = round(cpu_seconds(dash.pid), 1)
    report(doc)


def report(doc: dict[str, Any]) -> None:
    base = doc["baseline"]
    rows: list[dict[str, Any]] = []
    for by, s in doc["summary"].items():
        rows.append(
            {
                "what": f"summary by {by}",
                "regions/TPS": f"{s['regions']:,}",
                "bytes": f"{s['bytes']:,}",
                "first ms": s["first_ms"],
                "again ms": s["again_ms"]["median"],
                "bytes vs base": f"{s['bytes'] / base['bytes']:.5f}",
                "first ms vs base": f"{s['first_ms'] / base['first_ms']:.3f}",
            }
        )
    for o in doc["kabupaten"]["opens"]:
        rows.append(
            {
                "what": f"detail {o['kabupaten']}",
                "regions/TPS": f"{o['tps']:,}",
                "bytes": f"{o['bytes']:,}",
                "first ms": o["first_ms"],
                "again ms": o["second_ms"],
                "bytes vs base": f"{o['bytes'] / base['bytes']:.4f}",
                "first ms vs base": f"{o['first_ms'] / base['first_ms']:.3f}",
            }
        )
    rows.append(
        {
            "what": "baseline: unscoped detail",
            "regions/TPS": f"{base['tps']:,}",
            "bytes": f"{base['bytes']:,}",
            "first ms": base["first_ms"],
            "again ms": base["second_ms"],
            "bytes vs base": "1",
            "first ms vs base": "1",
        }
    )
    print(table(rows, list(rows[0])))
    mem = {k: doc[k]["VmRSS"] for k in doc if k.startswith("memory_")}
    say("dashboard RSS: " + ", ".join(f"{k[7:]} {v / 1e9:.2f} GB" for k, v in mem.items()))
    doc["targets"] = verdicts(doc)
    for v in doc["targets"]:
        say(f"{'PASS' if v['pass'] else 'FAIL'}  {v['target']}: {v['measured']}")
    say(f"wrote {write('national', doc)}")


# -- in process: where a drill-down's time goes -----------------------------------------------------
def rss_self() -> int:
    return memory(os.getpid())["VmRSS"]


def _value_bytes(v: Any) -> int:
    """Bytes of one JSON value held in a document, not counting shared objects (None, bools, small ints)."""
    if v is None or isinstance(v, bool) or (isinstance(v, int) and -5 <= v <= 256):
        return 0
    if isinstance(v, list):
        return sys.getsizeof(v) + sum(_value_bytes(x) for x in v)
    if isinstance(v, dict):
        return sys.getsizeof(v) + sum(_value_bytes(x) for x in v.values())
    return sys.getsizeof(v)


def held_memory(hub: Any) -> dict[str, int]:
    """Where a hub's memory is, estimated from a sample of what it holds (keys are shared by orjson's cache)."""
    ids = list(hub.tps)
    sample = ids[:: max(1, len(ids) // 4000)]
    scale = len(ids) / max(1, len(sample))
    docs = [hub.tps[i] for i in sample]
    parts = [hub._tps_parts[i] for i in sample]
    regions = ("kecamatan", "kabupaten", "provinsi")
    return {
        "tps_doc_dicts": round(scale * sum(sys.getsizeof(d) for d in docs)),
        "tps_doc_region_strings": round(scale * sum(_value_bytes(d[k]) for d in docs for k in regions)),
        "tps_doc_other_values": round(
            scale * sum(_value_bytes(v) for d in docs for k, v in d.items() if k not in regions)
        ),
        "tps_parts": round(
            scale * sum(sys.getsizeof(p) + sys.getsizeof(p.where) + sys.getsizeof(p.health) for p in parts)
        ),
        "tps_tables": sys.getsizeof(hub.tps)
        + sys.getsizeof(hub._tps_parts)
        + sum(sys.getsizeof(x) for x in hub.tps_by_kabupaten.values()),
        "incidents": round(sum(_value_bytes(d) for d in hub.incidents.values())),
    }


def fast_view(main: Any, scope: Any, replay_buffer: int) -> Any:
    """A PROTOTYPE of a cheaper `Dashboard.hub_for` (not used by the service): the view made from what the
    national hub already holds (its documents and their parts: no validation, no part recomputed, no
    frame issued per TPS); the same picture, at the hub's first seq."""
    from services.dashboard.hub import Hub

    hub = Hub(replay_buffer, first_seq=main.first_seq)
    kabupaten = set(scope.kabupaten) | {kab for kab, _ in scope.kecamatan}
    kabupaten |= {kab for prov, kab in main.regions.regions["kabupaten"] if prov in scope.provinsi}
    for kab in sorted(kabupaten):
        for ident in main.tps_by_kabupaten.get(kab, ()):
            tp = main._tps_parts[ident]
            if scope.admits(*tp.where):
                hub.tps[ident], hub._tps_parts[ident] = main.tps[ident], tp
                hub._agg.tps(tp, +1)
                hub.regions.tps(tp.where, tp.state, tp.assigned, tp.checked_in, +1)
                hub.tps_by_kabupaten.setdefault(kab, set()).add(ident)
        for ident in main.incidents_by_kabupaten.get(kab, ()):
            ip = main._inc_parts[ident]
            if scope.admits(*ip.where):
                hub.incidents[ident], hub._inc_parts[ident] = main.incidents[ident], ip
                hub._agg.incident(ip, +1)
                hub.regions.incident(ip.where, ip.severity, ip.unresolved, ip.escalated, +1)
                hub.incidents_by_kabupaten.setdefault(kab, set()).add(ident)
    return hub


def encoded_view(main: Any, view: Any, kabupaten: str, encoded: dict[str, bytes]) -> dict[str, float]:
    """The cost of a kabupaten view if the national hub kept, per kabupaten, its aggregates (here: copied from
    `view`, a view already made) and every TPS as JSON bytes: pick the kabupaten's bytes, copy the aggregates,
    join the snapshot."""
    import copy

    t0 = time.perf_counter()
    table_ = {ident: encoded[ident] for ident in main.tps_by_kabupaten.get(kabupaten, ())}
    t1 = time.perf_counter()
    agg, regions = copy.deepcopy(view._agg), copy.deepcopy(view.regions)
    t2 = time.perf_counter()
    incidents = b",".join(orjson.dumps(main.incidents[i]) for i in main.incidents_by_kabupaten.get(kabupaten, ()))
    body = b"".join(
        (
            b'{"type":"snapshot","seq":1,"incidents":[',
            incidents,
            b'],"tps":[',
            b",".join(table_.values()),
            b'],"stats":',
            orjson.dumps(view.stats()),
            b"}",
        )
    )
    text = body.decode()
    t3 = time.perf_counter()
    del agg, regions, text
    return {
        "pick_ms": round(1000 * (t1 - t0), 1),
        "copy_aggregates_ms": round(1000 * (t2 - t1), 1),
        "join_ms": round(1000 * (t3 - t2), 1),
        "total_ms": round(1000 * (t3 - t0), 1),
    }


def profile(a: argparse.Namespace) -> None:
    """Load the plan into an in-process Dashboard and profile the drill-down into the largest kabupaten."""
    import gc

    from services.dashboard.app import Dashboard
    from siaga.auth import Scope
    from siaga.runtime import Context
    from siaga.service import tune_gc
    from siaga.settings import Settings

    plan = Plan(a.seed, a.tps, a.incidents)
    reg = registry(a.seed, a.tps)
    settings = Settings()
    out: dict[str, Any] = {"seed": a.seed, "registry": reg.counts()._asdict(), "loadavg_start": loadavg()}
    tune_gc()  # as the service does once started
    rss0 = rss_self()
    dash = Dashboard(cast(Context, SimpleNamespace(settings=settings)))
    t0 = time.perf_counter()
    for _key, value in plan.messages():
        dash.hub.apply(value)
    load_s = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_self()
    out["load"] = {"seconds_with_generation": round(load_s, 1), "rss_before": rss0, "rss_after": rss1}
    out["held_estimate"] = held_memory(dash.hub)
    say(
        f"hub: {len(dash.hub.tps):,} TPS, {len(dash.hub.incidents):,} incidents made and applied in {load_s:.1f}s; "
        f"RSS +{(rss1 - rss0) / 1e6:,.0f} MB (now {rss1 / 1e9:.2f} GB)"
    )
    for k, v in out["held_estimate"].items():
        say(f"  {k}: {v / 1e6:,.0f} MB")
    # What the hub would hold if it kept each TPS as its JSON bytes (encoded once, at apply) instead of a dict.
    t0 = time.perf_counter()
    # Copied: a bytes object orjson.dumps returns keeps its ~8 KB buffer in RSS (measured: 50,000 of them
    # took 410 MB; their copies 22 MB).
    encoded = {ident: bytes(memoryview(orjson.dumps(doc))) for ident, doc in dash.hub.tps.items()}
    out["encoded"] = {
        "encode_all_s": round(time.perf_counter() - t0, 2),
        "bytes_objects": sum(sys.getsizeof(b) for b in encoded.values()),
    }
    say(f"every TPS as JSON bytes: {out['encoded']['bytes_objects'] / 1e6:,.0f} MB")
    largest = reg.largest(a.kabupaten)
    views = []
    for kab in largest:
        scope = Scope(kabupaten=frozenset({kab.name}))
        t0 = time.perf_counter()
        hub = dash.hub_for(scope)
        t1 = time.perf_counter()
        text = hub.snapshot().text
        t2 = time.perf_counter()
        proto = fast_view(dash.hub, scope, settings.ws_replay_buffer)
        t3 = time.perf_counter()
        proto_text = proto.snapshot().text
        t4 = time.perf_counter()
        same = orjson.loads(proto_text)
        mine = orjson.loads(text)
        assert same["tps"] == mine["tps"] and same["stats"] == mine["stats"], kab.name
        joined = encoded_view(dash.hub, proto, kab.name, encoded)
        views.append(
            {
                "kabupaten": kab.name,
                "tps": kab.tps,
                "bytes": len(text),
                "hub_for_ms": round(1000 * (t1 - t0), 1),
                "snapshot_ms": round(1000 * (t2 - t1), 1),
                "prototype_ms": round(1000 * (t3 - t2), 1),
                "prototype_snapshot_ms": round(1000 * (t4 - t3), 1),
                "encoded": joined,
            }
        )
        say(
            f"{kab.name}: {kab.tps:,} TPS; hub_for {1000 * (t1 - t0):.0f} ms + snapshot {1000 * (t2 - t1):.0f} ms "
            f"({len(text):,} B); prototype {1000 * (t3 - t2):.0f} ms + {1000 * (t4 - t3):.0f} ms, same picture; "
            f"from held bytes and kept aggregates ~{joined['total_ms']} ms"
        )
    out["views"] = views
    out["rss_with_views"] = rss_self()
    say(f"RSS with {len(largest)} kabupaten views: {out['rss_with_views'] / 1e9:.2f} GB")
    # The largest again, from scratch, under the profiler.
    scope = Scope(kabupaten=frozenset({largest[0].name}))
    dash._drop(scope, dash.scoped[scope])
    prof = cProfile.Profile()
    prof.enable()
    dash.hub_for(scope).snapshot().text  # noqa: B018
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(20)
    print(f"cProfile of hub_for + snapshot, {largest[0].name} (times inflated by the profiler):")
    print(buf.getvalue())
    t0 = time.perf_counter()
    text = dash.hub.snapshot().text
    out["national_snapshot"] = {"bytes": len(text), "ms": round(1000 * (time.perf_counter() - t0), 1)}
    del text
    say(f"national snapshot: {out['national_snapshot']['bytes']:,} B in {out['national_snapshot']['ms']:.0f} ms")
    out["rss_end"] = rss_self()
    say(f"RSS at the end {out['rss_end'] / 1e9:.2f} GB")
    say(f"wrote {write('national_profile', out)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tps", type=int, default=TOTAL_TPS, help=f"TPS in the registry (default {TOTAL_TPS:,})")
    ap.add_argument("--incidents", type=int, default=20_000, help="incident updates, at distinct TPS (default 20,000)")
    ap.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"registry and message seed (default {DEFAULT_SEED})"
    )
    ap.add_argument("--kabupaten", type=int, default=5, help="largest kabupaten to drill down into (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="summary opens after the first, per level (default 3)")
    ap.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate as browsers do (default: uncompressed frames)"
    )
    ap.add_argument(
        "--load-timeout", type=float, default=900.0, help="seconds the dashboard may take to load (default 900)"
    )
    ap.add_argument(
        "--profile", action="store_true", help="no broker or server: profile a drill-down on an in-process hub"
    )
    a = ap.parse_args()
    if a.tps < 1 or a.kabupaten < 1:
        ap.error("--tps and --kabupaten must be at least 1")
    if a.profile:
        profile(a)
    else:
        run(a)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
