"""Run a simulated election day against an ingest URL, sped up onto the real clock."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from siaga.clock import Clock, SystemClock, iso
from siaga.demo.registry import PersonnelRow, TpsRow
from siaga.events import EventType
from siaga.simulator.command import CommandCenter
from siaga.simulator.fleet import TokensByTps, build_fleet
from siaga.simulator.inbox import InboxResponder
from siaga.simulator.plan import DAY_START, DayPlan, DayPlanner, PlannedEvent, Send
from siaga.simulator.sender import Counters, Poster
from siaga.simulator.texts import load_texts

WIB = ZoneInfo("Asia/Jakarta")
_MAX_PENDING = 2000  # requests scheduled but not yet answered; beyond this the schedule waits


@dataclass
class SimStats:
    """The outcome of a simulated day."""

    seed: int
    speed: float
    day: int
    day_name: str
    tps: int
    devices: int
    planned_events: int
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    batches: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    status_codes: dict[str, int] = field(default_factory=dict)
    rejections: list[str] = field(default_factory=list)
    sim_start: str = ""
    sim_end: str = ""
    started_at: str = ""  # the real time the simulated start was mapped onto (RFC 3339)
    elapsed_s: float = 0.0
    stopped_early: bool = False
    scenario: dict[str, Any] = field(default_factory=dict)
    inbox: dict[str, int] = field(default_factory=dict)  # the inbox responder's counts, when it ran
    command: dict[str, int] = field(default_factory=dict)  # the simulated command center's counts, when it ran

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def _minute_of(start_at: datetime | dtime | None) -> float:
    if start_at is None:
        return float(DAY_START)
    if isinstance(start_at, datetime):
        local = start_at.astimezone(WIB) if start_at.tzinfo else start_at
        start_at = local.time()
    return start_at.hour * 60 + start_at.minute + start_at.second / 60


def _hhmm(minute: float) -> str:
    m = int(minute)
    return f"{m // 60:02d}:{m % 60:02d}"


def _thread(e: PlannedEvent) -> str | None:
    """What an event belongs to that goes on after it: its report's id, or its escort's boxes."""
    event, payload = e.event, e.event["payload"]
    if event["type"] == EventType.INCIDENT_REPORTED:
        return str(event["event_id"])
    if "report_id" in payload:
        return str(payload["report_id"])
    if event["type"] in (EventType.ESCORT_DEPARTED, EventType.ESCORT_ARRIVED):
        return "escort:" + ",".join(payload["box_ids"])
    return None


def _from(plan: DayPlan, start: float) -> list[Send]:
    """The day from `start` on, and a catch-up of what came before, sent at once with its own times.

    The catch-up is what a device would have sent and still matters: each TPS's latest phase, each
    person's latest check-in (one batch per phone), and the incidents and escorts still under way
    at `start` (so a resolution after it never names a report dispatch has not seen). What was over
    before `start` is left out. A backlog flushed after `start` by a device that was offline goes
    out whole.
    """
    live = {
        thread
        for send in plan.sends
        for e in send.events
        if (e.at >= start or send.at >= start) and (thread := _thread(e)) is not None
    }
    latest: dict[tuple[str, str], tuple[int, PlannedEvent]] = {}
    under_way: list[tuple[int, PlannedEvent]] = []
    later: list[Send] = []
    for send in plan.sends:
        if send.at >= start and send.batch:
            later.append(send)
            continue
        keep = [e for e in send.events if e.at >= start]
        for e in send.events:
            if e.at >= start:
                continue
            kind = e.event["type"]
            if kind in (EventType.TPS_STATUS, EventType.CHECKIN):
                who = e.event["tps_id"] if kind == EventType.TPS_STATUS else e.event["payload"]["personnel_id"]
                seen = latest.get((kind, who))
                if seen is None or seen[1].at <= e.at:
                    latest[(kind, who)] = (send.device, e)
            elif _thread(e) in live:
                under_way.append((send.device, e))
        if keep:
            later.append(send if len(keep) == len(send.events) else Send(send.at, send.device, keep, send.batch))
    # Incidents and phases first, one by one, so the board shows them at once; then each phone's
    # check-ins as one backlog batch, as a phone that was offline would flush them: thousands of
    # single posts would hold the first incidents behind them for a minute.
    checkins: dict[int, list[PlannedEvent]] = defaultdict(list)
    first: list[tuple[int, PlannedEvent]] = []
    for device, e in sorted([*latest.values(), *under_way], key=lambda pair: pair[1].at):
        if e.event["type"] == EventType.CHECKIN:
            checkins[device].append(e)
        else:
            first.append((device, e))
    catch_up = [Send(start, device, [e]) for device, e in first]
    catch_up += [Send(start, device, events, batch=True) for device, events in sorted(checkins.items())]
    return catch_up + later


async def run_day(
    *,
    ingest_url: str,
    tokens_by_tps: TokensByTps,
    speed: float = 60.0,
    seed: int | None = None,
    start_at: datetime | dtime | None = None,
    stop_event: asyncio.Event | None = None,
    progress: Callable[[str], Any] = print,
    tps: Sequence[TpsRow] | None = None,
    personnel: Sequence[PersonnelRow] | None = None,
    progress_every_s: float = 5.0,
    concurrency: int = 64,
    client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    checkin_minutes: tuple[float, float] = (10.0, 20.0),
    inbox_poll_s: float = 0.0,
    operator_token: str | None = None,
    dispatch_url: str | None = None,
    day: int = 2,
) -> SimStats:
    """Post a realistic election day for the TPS in `tokens_by_tps` to `ingest_url`.

    `day` is one of the five-day duty (1 preparation, 2 the vote, 3 counting, 4 transport to the
    PPK, 5 recapitulation; data/incidents.yaml `duty_days`); the vote is the default.

    The day (05:30 WIB to the last TPS closing, about 20:00) runs `speed` times faster than
    real time: `--speed 60` plays a day in 24 minutes. Every event's `occurred_at` is the real
    time its simulated moment maps to, with the run's start as the anchor, so nothing is ever in
    the future; a backlog flushed after an outage keeps the times its events happened.
    `start_at` (a time of day, WIB) skips the day up to then, sending each TPS's phase at once.
    `seed` makes the day repeatable (same event ids, texts and order); None picks one.
    `tokens_by_tps` maps a TPS to its device tokens: strings, or siaga.demo.DeviceToken (which
    also say who checks in through the device). `tps`/`personnel` default to the Serang demo.
    `inbox_poll_s` above 0: the devices of police and reserves also poll their inbox that often
    (real time) and acknowledge most orders (siaga.simulator.inbox).
    `operator_token`: a simulated command center (siaga.simulator.command) acknowledges, assigns
    and closes escalated incidents through the operator API at `dispatch_url` (default: ingest's).
    """
    if speed <= 0:
        raise ValueError("speed must be above 0")
    seed = secrets.randbits(31) if seed is None else seed
    clock = clock or SystemClock()
    stop = stop_event or asyncio.Event()
    fleet = build_fleet(tokens_by_tps, tps=tps, personnel=personnel)
    planner = DayPlanner(
        seed=seed,
        tps=fleet.tps,
        devices=fleet.devices,
        personnel=fleet.personnel,
        texts=load_texts(),
        checkin_minutes=checkin_minutes,
        day=day,
    )
    # Planning a whole regency takes seconds: off the event loop, so a shared loop keeps serving.
    plan = await asyncio.to_thread(planner.build)
    start = plan.start if start_at is None else _minute_of(start_at)
    sends = _from(plan, start)
    stats = SimStats(
        seed=seed,
        speed=speed,
        day=day,
        day_name=planner.day.name,
        tps=len(planner.tps),
        devices=len(fleet.devices),
        planned_events=sum(len(s.events) for s in sends),
        sim_start=_hhmm(start),
        scenario=plan.scenario,
    )
    counters = Counters()
    by_type: Counter[str] = Counter()
    anchor = clock.now()
    stats.started_at = iso(anchor) or ""

    def real_at(minute: float) -> datetime:
        return anchor + timedelta(seconds=(minute - start) * 60 / speed)

    def sim_now() -> float:
        return start + (clock.now() - anchor).total_seconds() * speed / 60

    owns_client = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=concurrency))
    poster = Poster(http, ingest_url, counters, stop_event=stop)
    limit = asyncio.Semaphore(concurrency)
    tails: dict[int, asyncio.Task[None]] = {}
    pending: set[asyncio.Task[None]] = set()
    room = asyncio.Semaphore(_MAX_PENDING)
    tokens = {d.index: d.token for d in fleet.devices}

    async def deliver(prev: asyncio.Task[None] | None, send: Send) -> None:
        # A device sends in order: its previous request first (a report before its resolution).
        if prev is not None and not prev.done():
            await asyncio.wait([prev])
        events = [
            {
                "event_id": e.event["event_id"],
                "type": e.event["type"],
                "tps_id": e.event["tps_id"],
                "occurred_at": iso(real_at(e.at)),
                "payload": real_payload(e.event["payload"], speed),
            }
            for e in send.events
        ]
        async with limit:
            await poster.post(tokens[send.device], events, batch=send.batch)

    async def report() -> None:
        while True:
            await asyncio.sleep(progress_every_s)
            # The simulated moment reached by the schedule; `waiting` is what the server has yet to answer.
            line = f"sim {_hhmm(reached)} WIB | waiting {len(pending)} | {counters.line()}"
            if command is not None:
                c = command.stats
                line += f" | command center: acknowledged {c.acknowledged}, sent {c.assigned}, closed {c.resolved}"
            progress(line)

    last = sends[-1].at if sends else start
    reached = start
    started = time.perf_counter()
    progress(
        f"simulating {stats.tps} TPS, {stats.devices} devices, {stats.planned_events} events "
        f"of day {day}, {stats.day_name}, from {stats.sim_start} WIB at speed {speed:g} (seed {seed})"
    )
    inbox_stop = asyncio.Event()
    responder: InboxResponder | None = None
    inbox_task: asyncio.Task[None] | None = None
    inbox_http: httpx.AsyncClient | None = None
    if inbox_poll_s > 0:
        roles = {p.personnel_id: p.role for p in fleet.personnel}
        responders = [
            d.token for d in fleet.devices if any(roles.get(p, "linmas") != "linmas" for p in d.personnel_ids)
        ]
        # Its own connections: polls must not queue behind a backlog of events in the poster's pool.
        inbox_http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=16))
        responder = InboxResponder(inbox_http, ingest_url, responders, poll_s=inbox_poll_s, seed=seed)
        inbox_task = asyncio.create_task(responder.run(inbox_stop))
    command: CommandCenter | None = None
    command_task: asyncio.Task[None] | None = None
    command_http: httpx.AsyncClient | None = None
    if operator_token:
        # Its own connections too: an acknowledgement must not wait behind the phones' polls.
        command_http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=8))
        command = CommandCenter(command_http, dispatch_url or ingest_url, operator_token, speed=speed, seed=seed)
        command_task = asyncio.create_task(command.run(inbox_stop))
    reporter = asyncio.create_task(report())
    try:
        for send in sends:
            wait = (real_at(send.at) - clock.now()).total_seconds()
            if wait > 0.001 and await _stopped_within(stop, wait):
                break
            if stop.is_set():
                break
            # A semaphore, not asyncio.wait(pending): that would hang a callback on each of 2,000
            # tasks at every completion, and the simulator, not the server, became the bottleneck.
            await room.acquire()
            reached = send.at
            for e in send.events:
                by_type[e.event["type"]] += 1
            task = asyncio.create_task(deliver(tails.get(send.device), send))
            tails[send.device] = task
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda _: room.release())
        if pending:
            await asyncio.gather(*pending)
    finally:
        reporter.cancel()
        inbox_stop.set()
        await asyncio.gather(*(t for t in (inbox_task, command_task) if t is not None), return_exceptions=True)
        for own in (inbox_http, command_http):
            if own is not None:
                await own.aclose()
        for task in pending:
            task.cancel()
        if owns_client:
            await http.aclose()
    stats.stopped_early = stop.is_set()
    stats.sim_end = _hhmm(min(sim_now(), last))
    stats.elapsed_s = round(time.perf_counter() - started, 3)
    stats.by_type = dict(by_type)
    for name in ("sent", "accepted", "duplicates", "rejected", "errors", "requests", "retries"):
        setattr(stats, name, getattr(counters, name))
    stats.throttled = counters.throttled
    stats.batches = counters.batches
    stats.status_codes = {str(k): v for k, v in sorted(counters.status_codes.items())}
    stats.rejections = counters.rejections
    if responder is not None:
        stats.inbox = vars(responder.stats)
    if command is not None:
        stats.command = vars(command.stats)
    progress(f"day done at sim {stats.sim_end} WIB in {stats.elapsed_s:.1f}s | {counters.line()}")
    return stats


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True when the stop event was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def real_payload(payload: dict[str, Any], speed: float) -> dict[str, Any]:
    """The payload as sent: a duration in it (an escort's `expected_minutes`) is simulated time,
    so it runs `speed` times faster too, as the event times do."""
    if "expected_minutes" not in payload:
        return payload
    return {**payload, "expected_minutes": max(float(payload["expected_minutes"]) / speed, 0.01)}
