"""Load generator: a steady rate of field events against an ingest URL, with latency and error counts."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from siaga.clock import Clock, SystemClock, iso
from siaga.demo.registry import PersonnelRow, TpsRow
from siaga.events import Phase
from siaga.simulator.fleet import Fleet, TokensByTps, build_fleet
from siaga.simulator.plan import seeded_uuid
from siaga.simulator.sender import Counters, Poster, percentile
from siaga.simulator.texts import Texts, load_texts

# The mix of a busy election-day hour: mostly check-ins, some phases, incidents and their follow-ups.
_MIX = {"checkin": 70, "tps.status": 5, "incident.reported": 15, "incident.update": 5, "incident.resolved": 5}


@dataclass
class LoadStats:
    """The outcome of a load run."""

    seed: int
    target_rate: float
    duration_s: float
    batch: int
    requests: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    retries: int = 0
    throttled: int = 0
    elapsed_s: float = 0.0
    achieved_rate: float = 0.0  # events answered (accepted, duplicate or rejected) a second
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    status_codes: dict[str, int] = field(default_factory=dict)
    rejections: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def line(self) -> str:
        """A one-line summary."""
        return (
            f"{self.sent} events in {self.elapsed_s:.1f}s: achieved {self.achieved_rate:.1f}/s "
            f"(target {self.target_rate:g}/s) | p50 {self.latency_p50_ms:.1f} ms | p99 {self.latency_p99_ms:.1f} ms | "
            f"accepted {self.accepted} | duplicates {self.duplicates} | rejected {self.rejected} | "
            f"errors {self.errors} | throttled {self.throttled}"
        )


class LoadMix:
    """Makes plausible events for one TPS at a time, from a seeded generator."""

    def __init__(self, fleet: Fleet, texts: Texts, seed: int, clock: Clock) -> None:
        self.rng = random.Random(seed)
        self.texts = texts
        self.clock = clock
        self.rows = {t.tps_id: t for t in fleet.tps}
        self.people: dict[str, list[str]] = defaultdict(list)
        for p in fleet.personnel:
            for t in p.tps_ids:
                if t in self.rows:
                    self.people[t].append(p.personnel_id)
        self.reports: dict[str, list[str]] = defaultdict(list)
        self.types = list(_MIX)
        self.weights = list(_MIX.values())

    def event(self, tps_id: str) -> dict[str, Any]:
        """One event for the TPS, stamped now."""
        rng = self.rng
        row = self.rows[tps_id]
        kind = rng.choices(self.types, weights=self.weights)[0]
        payload: dict[str, Any]
        if kind in ("incident.update", "incident.resolved") and self.reports[tps_id]:
            report = rng.choice(self.reports[tps_id])
            key = "note" if kind == "incident.update" else "resolution"
            payload = {"report_id": report, key: self.texts.whatsapp("situasi sdh ditangani di tempat", rng)}
        elif kind == "incident.reported":
            cat = rng.choices(self.texts.categories, weights=[c.weight for c in self.texts.categories])[0]
            context: dict[str, Any] = {"tps": row.name, "desa": row.desa, "kecamatan": row.kecamatan}
            context |= {"paslon": "01", "injuries": 0, "crowd": rng.randint(5, 40)}
            payload = {"description": self.texts.message(rng.choice(cat.reports), rng, context)}
            if rng.random() < 0.5:
                payload["category"] = cat.name
        elif kind == "tps.status":
            payload = {"phase": rng.choice(list(Phase)).value}
        else:
            kind = "checkin"
            people = self.people[tps_id] or [f"SIM-{tps_id}-1"]
            payload = {"personnel_id": rng.choice(people), "status": "on_duty", "battery": rng.randint(20, 100)}
        event_id = seeded_uuid(rng)
        if kind == "incident.reported":
            recent = self.reports[tps_id]
            recent.append(event_id)
            del recent[:-5]
        return {
            "event_id": event_id,
            "type": kind,
            "tps_id": tps_id,
            "occurred_at": iso(self.clock.now()),
            "payload": payload,
        }


async def run_load(
    *,
    ingest_url: str,
    tokens_by_tps: TokensByTps,
    rate: float,
    duration: float,
    batch: int = 1,
    seed: int | None = None,
    progress: Callable[[str], Any] = print,
    tps: Sequence[TpsRow] | None = None,
    personnel: Sequence[PersonnelRow] | None = None,
    progress_every_s: float = 5.0,
    concurrency: int = 256,
    client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    stop_event: asyncio.Event | None = None,
) -> LoadStats:
    """Post `rate` events a second for `duration` seconds (in batches of `batch` when above 1).

    Open loop up to `concurrency` requests in flight: when the server cannot keep up, the achieved
    rate falls below the target rather than the latency being hidden. The TPS take turns, so the
    load spreads over every device's rate limit. Retries honour Retry-After on 429 and 503.
    """
    if rate <= 0 or duration <= 0 or batch < 1:
        raise ValueError("rate and duration must be above 0 and batch at least 1")
    seed = secrets.randbits(31) if seed is None else seed
    clock = clock or SystemClock()
    stop = stop_event or asyncio.Event()
    fleet = build_fleet(tokens_by_tps, tps=tps, personnel=personnel)
    if not fleet.devices:
        raise ValueError("no device tokens: nothing to post with")
    mix = LoadMix(fleet, load_texts(), seed, clock)
    device_of: dict[str, str] = {}
    for d in sorted(fleet.devices, key=lambda d: len(d.tps_ids)):
        for t in d.tps_ids:
            device_of.setdefault(t, d.token)
    order = sorted(device_of)
    random.Random(seed).shuffle(order)
    counters = Counters()
    owns_client = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=concurrency))
    poster = Poster(http, ingest_url, counters, record_latency=True, stop_event=stop)
    limit = asyncio.Semaphore(concurrency)
    pending: set[asyncio.Task[None]] = set()
    stats = LoadStats(seed=seed, target_rate=rate, duration_s=duration, batch=batch)

    async def one(tps_id: str) -> None:
        try:
            events = [mix.event(tps_id) for _ in range(batch)]
            await poster.post(device_of[tps_id], events, batch=batch > 1)
        finally:
            limit.release()

    progress(f"load: {rate:g} events/s for {duration:g}s, batch {batch}, {len(order)} TPS (seed {seed})")
    started = time.perf_counter()
    next_report = started + progress_every_s
    issued = 0
    per_request = rate / batch
    try:
        while not stop.is_set():
            elapsed = time.perf_counter() - started
            if elapsed >= duration:
                break
            due = int(elapsed * per_request) + 1 - issued
            for _ in range(max(due, 0)):
                await limit.acquire()
                task = asyncio.create_task(one(order[issued % len(order)]))
                pending.add(task)
                task.add_done_callback(pending.discard)
                issued += 1
            now = time.perf_counter()
            if now >= next_report:
                next_report = now + progress_every_s
                progress(f"load t={now - started:.0f}s | {counters.line()} | throttled {counters.throttled}")
            await asyncio.sleep(max(0.0, min((issued / per_request) - (now - started), 0.05)))
        if pending:
            await asyncio.wait(pending, timeout=60)
    finally:
        for task in pending:
            task.cancel()
        if owns_client:
            await http.aclose()
    stats.elapsed_s = round(time.perf_counter() - started, 3)
    for name in ("requests", "sent", "accepted", "duplicates", "rejected", "errors", "retries", "throttled"):
        setattr(stats, name, getattr(counters, name))
    answered = counters.accepted + counters.duplicates + counters.rejected
    stats.achieved_rate = round(answered / stats.elapsed_s, 1) if stats.elapsed_s else 0.0
    stats.latency_p50_ms = round(percentile(counters.latencies_s, 50) * 1000, 2)
    stats.latency_p99_ms = round(percentile(counters.latencies_s, 99) * 1000, 2)
    stats.latency_max_ms = round(max(counters.latencies_s, default=0.0) * 1000, 2)
    stats.status_codes = {str(k): v for k, v in sorted(counters.status_codes.items())}
    stats.rejections = counters.rejections
    progress(f"load done: {stats.line()}")
    return stats
