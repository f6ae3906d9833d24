"""The field simulator against a fake ingest served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from siaga.demo import DeviceToken, demo_personnel, demo_tps, plan_devices, read_kecamatan
from siaga.events import PAYLOADS, EventType, FieldEvent, IncidentReported, Phase
from siaga.simulator import add_simulate_parser, run_day, run_load, run_simulate
from siaga.simulator.day import _from, real_payload
from siaga.simulator.fleet import build_fleet
from siaga.simulator.plan import DayPlan, DayPlanner, PlannedEvent, Send
from siaga.simulator.texts import load_texts

# Flood-prone coast, remote hills and past-conflict TPS: every scripted situation has a place.
SUBSET = [
    "SRG-CKD-002", "SRG-CKD-005", "SRG-CKD-010", "SRG-CKD-099",
    "SRG-TNR-001", "SRG-TNR-002", "SRG-TNR-003",
    "SRG-MCK-001", "SRG-MCK-002", "SRG-MCK-017",
]  # fmt: skip
SPEED = 20000.0
PHASE_ORDER = [p.value for p in Phase]


@dataclass
class Received:
    path: str
    token: str
    at: datetime
    events: list[dict[str, Any]]


@dataclass
class FakeIngest:
    """Records what arrives; judges events the way ingest does (SPEC section 4)."""

    tokens: dict[str, set[str]] = field(default_factory=dict)  # token -> TPS it may post for
    throttle_next: int = 0
    requests: list[Received] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # event_id -> canonical content
    invalid: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, tokens: dict[str, set[str]]) -> None:
        with self.lock:
            self.tokens = tokens
            self.throttle_next = 0
            self.requests = []
            self.seen = {}
            self.invalid = []

    def judge(self, token: str, raw: dict[str, Any]) -> tuple[str, str | None]:
        try:
            event = FieldEvent.model_validate(raw)
            event.typed_payload()
        except ValidationError as exc:
            self.invalid.append(str(exc))
            return "rejected", str(exc)
        now = datetime.now(UTC)
        if event.occurred_at > now + timedelta(minutes=10) or event.occurred_at < now - timedelta(hours=48):
            self.invalid.append(f"occurred_at out of range: {event.occurred_at}")
            return "rejected", "occurred_at"
        if event.tps_id not in self.tokens.get(token, set()):
            self.invalid.append(f"device not bound to {event.tps_id}")
            return "rejected", "tps_id"
        content = json.dumps(raw, sort_keys=True)
        if event.event_id in self.seen:
            return ("duplicate", None) if self.seen[event.event_id] == content else ("conflict", None)
        self.seen[event.event_id] = content
        return "accepted", None


def make_app(fake: FakeIngest) -> FastAPI:
    app = FastAPI()

    async def receive(request: Request, path: str, events: list[dict[str, Any]]) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with fake.lock:
            if token not in fake.tokens:
                return JSONResponse({"detail": "bad token"}, status_code=401)
            fake.requests.append(Received(path, token, datetime.now(UTC), events))
            if fake.throttle_next > 0:
                fake.throttle_next -= 1
                return JSONResponse({"detail": "slow down"}, status_code=429, headers={"Retry-After": "1"})
            answer: dict[str, list[Any]] = {"accepted": [], "duplicates": [], "rejected": []}
            for i, raw in enumerate(events):
                verdict, why = fake.judge(token, raw)
                if verdict == "conflict":
                    return JSONResponse({"detail": "event_id reused"}, status_code=409)
                if verdict == "rejected":
                    answer["rejected"].append({"event_id": raw.get("event_id"), "index": i, "message": why})
                else:
                    answer["accepted" if verdict == "accepted" else "duplicates"].append(raw["event_id"])
        return JSONResponse(answer, status_code=202)

    @app.post("/v1/events")
    async def one(request: Request) -> JSONResponse:
        return await receive(request, "/v1/events", [await request.json()])

    @app.post("/v1/events/batch")
    async def batch(request: Request) -> JSONResponse:
        return await receive(request, "/v1/events/batch", (await request.json())["events"])

    return app


@pytest.fixture(scope="module")
def ingest() -> Iterator[tuple[str, FakeIngest]]:
    fake = FakeIngest()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(fake), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}", fake
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def subset_tokens(tps_ids: list[str]) -> tuple[dict[str, list[DeviceToken]], dict[str, set[str]]]:
    """Demo devices for some TPS (as load_demo issues them), with made-up tokens."""
    wanted = set(tps_ids)
    devices, _ = plan_devices(demo_tps(), demo_personnel(), read_kecamatan())
    by_tps: dict[str, list[DeviceToken]] = defaultdict(list)
    bound: dict[str, set[str]] = {}
    for i, req in enumerate(devices):
        mine = [t for t in req.tps_ids if t in wanted]
        if not mine:
            continue
        token = DeviceToken(f"dev_{i}", f"tok_{i}", req.personnel_id, req.personnel_ids, tuple(mine))
        bound[token.token] = set(mine)
        for t in mine:
            by_tps[t].append(token)
    return dict(by_tps), bound


def all_events(fake: FakeIngest) -> list[tuple[Received, dict[str, Any]]]:
    return [(r, e) for r in fake.requests for e in r.events]


async def test_a_whole_day_at_high_speed(ingest: tuple[str, FakeIngest]) -> None:
    url, fake = ingest
    tokens, bound = subset_tokens(SUBSET)
    fake.reset(bound)
    fake.throttle_next = 1  # the very first request is answered 429 with Retry-After: 1
    lines: list[str] = []
    # Check-ins thinned out from every 10-20 to 30-45 minutes: the same day with fewer requests.
    stats = await run_day(
        ingest_url=url,
        tokens_by_tps=tokens,
        speed=SPEED,
        seed=7,
        progress=lines.append,
        progress_every_s=0.5,
        checkin_minutes=(30, 45),
    )
    started = datetime.fromisoformat(stats.started_at)
    assert fake.invalid == []
    unique = {e["event_id"]: e for _, e in all_events(fake)}
    assert stats.accepted == len(unique) == stats.planned_events
    assert stats.rejected == 0 and stats.errors == 0
    assert stats.throttled == 1 and stats.retries == 1
    assert stats.tps == len(SUBSET)
    assert any(line.startswith("sim ") and "accepted" in line for line in lines)

    # Every event is valid to the contract, with its typed payload.
    for _, raw in all_events(fake):
        event = FieldEvent.model_validate(raw)
        assert isinstance(event.typed_payload(), PAYLOADS[event.type])
    types = Counter(e["type"] for e in unique.values())
    assert set(types) == {t.value for t in EventType}
    assert types["checkin"] > 5 * len(SUBSET)

    # The 429 was retried after Retry-After with the very same event.
    first = fake.requests[0]
    same = [r for r in fake.requests[1:] if r.events == first.events]
    assert len(same) == 1 and same[0].at - first.at >= timedelta(seconds=0.9)
    assert same[0].token == first.token

    # Nothing is ever in the future; a backlog batch carries the times things happened offline.
    for req, raw in all_events(fake):
        assert datetime.fromisoformat(raw["occurred_at"]) <= req.at + timedelta(seconds=1)
        assert datetime.fromisoformat(raw["occurred_at"]) >= started - timedelta(seconds=1)
    batches = [r for r in fake.requests if r.path == "/v1/events/batch"]
    assert batches
    offline_min = 20 * 60 / SPEED  # 20 simulated minutes, in real seconds
    for req in batches:
        oldest = min(datetime.fromisoformat(e["occurred_at"]) for e in req.events)
        assert (req.at - oldest).total_seconds() >= offline_min * 0.5
    # A report and its resolution that happened offline arrive together in one batch.
    assert any({e["type"] for e in r.events} >= {"incident.reported", "incident.resolved"} for r in batches), (
        "no offline incident in a backlog"
    )

    # Phases in order at every TPS that did not fall silent, in event time and in arrival.
    silent = set(stats.scenario["silent_posts"])
    phases: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for raw in (e for _, e in all_events(fake) if e["type"] == "tps.status"):
        phases[raw["tps_id"]].append((datetime.fromisoformat(raw["occurred_at"]), raw["payload"]["phase"]))
    for tps_id in SUBSET:
        seq = [p for _, p in phases[tps_id]]
        assert [p for _, p in sorted(phases[tps_id])] == seq
        if tps_id in silent:
            assert seq == PHASE_ORDER[: len(seq)]
        else:
            assert seq == PHASE_ORDER
    assert len(silent) >= 1 and silent <= set(SUBSET)

    # Follow-ups point at a report sent before them.
    reports = {e["event_id"] for e in unique.values() if e["type"] == "incident.reported"}
    for e in unique.values():
        if e["type"] in ("incident.update", "incident.resolved", "backup.requested"):
            assert e["payload"]["report_id"] in reports

    # The scripted situations.
    fajar = stats.scenario["serangan_fajar"]
    kec_of = {t.tps_id: t.kecamatan for t in demo_tps()}
    fajar_reports = [unique[i["report_id"]] for i in fajar["incidents"]]
    assert len({r["tps_id"] for r in fajar_reports}) >= 3
    assert {kec_of[r["tps_id"]] for r in fajar_reports} == {fajar["kecamatan"]}
    times = sorted(datetime.fromisoformat(r["occurred_at"]) for r in fajar_reports)
    assert times[-1] - times[0] <= timedelta(seconds=30 * 60 / SPEED)
    assert times[0] - started <= timedelta(seconds=90 * 60 / SPEED)  # at dawn: before 07:00
    clash_id = stats.scenario["clash"]["report_id"]
    assert any(e["type"] == "backup.requested" and e["payload"]["report_id"] == clash_id for e in unique.values())
    critical = IncidentReported.model_validate(unique[stats.scenario["critical"]["report_id"]]["payload"])
    assert critical.weapons is True and (critical.injuries or 0) >= 2
    floods = [i for k in stats.scenario["floods"] for i in k["incidents"]]
    assert floods
    # Most everyday incidents are resolved on site, a few minutes later.
    resolved = {e["payload"]["report_id"] for e in unique.values() if e["type"] == "incident.resolved"}
    assert len(resolved) >= 0.7 * len(reports)
    descriptions = [e["payload"]["description"] for e in unique.values() if e["type"] == "incident.reported"]
    assert all(d and "{" not in d for d in descriptions)


async def test_the_same_seed_repeats_the_day(ingest: tuple[str, FakeIngest]) -> None:
    url, fake = ingest
    few = ["SRG-TNR-001", "SRG-TNR-002", "SRG-TNR-003"]
    tokens, bound = subset_tokens(few)

    async def one_run(seed: int) -> dict[str, tuple[str, str, str]]:
        fake.reset(bound)
        await run_day(
            ingest_url=url,
            tokens_by_tps=tokens,
            speed=40000,
            seed=seed,
            progress=lambda _: None,
            checkin_minutes=(40, 60),
        )
        return {
            e["event_id"]: (e["type"], e["tps_id"], json.dumps(e["payload"], sort_keys=True))
            for _, e in all_events(fake)
        }

    first = await one_run(11)
    again = await one_run(11)
    other = await one_run(12)
    assert first == again
    assert len(first) > 50
    assert not set(first) & set(other)


def test_plan_is_pure_and_in_time_order() -> None:
    tokens, _ = subset_tokens(SUBSET)
    fleet = build_fleet(tokens)

    def plan(seed: int) -> Any:
        return DayPlanner(
            seed=seed, tps=fleet.tps, devices=fleet.devices, personnel=fleet.personnel, texts=load_texts()
        ).build()

    a, b = plan(3), plan(3)
    assert [(s.at, s.device, [e.event for e in s.events]) for s in a.sends] == [
        (s.at, s.device, [e.event for e in s.events]) for s in b.sends
    ]
    ats = [s.at for s in a.sends]
    assert ats == sorted(ats)
    for send in a.sends:
        assert all(e.at <= send.at for e in send.events)
        if send.batch:
            assert len(send.events) >= 1 and min(e.at for e in send.events) < send.at
        device = fleet.devices[send.device]
        assert all(e.event["tps_id"] in device.tps_ids for e in send.events)
    checkins = [e.event for s in a.sends for e in s.events if e.event["type"] == "checkin"]
    statuses = Counter(c["payload"]["status"] for c in checkins)
    assert statuses["on_duty"] > statuses["off_duty"] > 0
    batteries = [c["payload"]["battery"] for c in checkins]
    assert min(batteries) < 60 and max(batteries) > 80


def test_texts_read_like_field_messages() -> None:
    texts = load_texts()
    rng = random.Random(1)
    context = {"tps": "TPS 007", "desa": "Sukajaya", "kecamatan": "Tanara", "paslon": "02", "injuries": 2, "crowd": 30}
    messages = [texts.message(t, rng, context) for c in texts.categories for t in c.reports for _ in range(3)]
    assert all("{" not in m and "}" not in m for m in messages)
    assert len(set(messages)) > 0.9 * len(messages)
    slang = re.compile(r"\b(yg|dgn|tdk|gak|sdh|udah|org|ndan|krn|blm)\b", re.IGNORECASE)
    assert sum(bool(slang.search(m)) for m in messages) > 0.3 * len(messages)
    assert sum(m == m.lower() for m in messages) > 0.3 * len(messages)


async def test_load_mode_reports_rate_latency_and_errors(ingest: tuple[str, FakeIngest]) -> None:
    url, fake = ingest
    tokens, bound = subset_tokens(SUBSET)
    fake.reset(bound)
    lines: list[str] = []
    stats = await run_load(
        ingest_url=url, tokens_by_tps=tokens, rate=150, duration=1.5, batch=1, seed=5, progress=lines.append
    )
    assert 150 * 1.5 * 0.7 <= stats.sent <= 150 * 1.5 + 2
    assert stats.accepted == len(fake.seen) == stats.sent
    assert stats.errors == 0 and stats.rejected == 0 and fake.invalid == []
    assert 0 < stats.latency_p50_ms <= stats.latency_p99_ms
    # The achieved rate is what was answered over the time it took (a loaded machine may lag the target).
    assert stats.achieved_rate == pytest.approx(stats.accepted / stats.elapsed_s, rel=0.02)
    assert stats.achieved_rate > 0
    assert lines[-1].startswith("load done")

    fake.reset(bound)
    batched = await run_load(
        ingest_url=url, tokens_by_tps=tokens, rate=400, duration=1.0, batch=20, seed=5, progress=lambda _: None
    )
    assert all(r.path == "/v1/events/batch" and len(r.events) == 20 for r in fake.requests)
    assert batched.accepted == batched.sent == 20 * len(fake.requests)
    assert fake.invalid == []


def test_cli_parser_and_a_short_run(ingest: tuple[str, FakeIngest], tmp_path: Path) -> None:
    url, fake = ingest
    parser = argparse.ArgumentParser(prog="siaga")
    commands = parser.add_subparsers(dest="command")
    add_simulate_parser(commands)
    help_text = commands.choices["simulate"].format_help()
    for option in ("--ingest-url", "--dispatch-url", "--admin-token", "--setup", "--no-setup", "--speed", "--seed",
                   "--rate", "--duration", "--batch", "--json-out"):  # fmt: skip
        assert option in help_text
    for action in commands.choices["simulate"]._actions:
        assert action.help, f"{action.dest} has no help text"
    # A gateway token bound to every TPS of one kecamatan, as --no-setup expects.
    tanara = {t.tps_id for t in demo_tps() if t.kecamatan == "Tanara"}
    fake.reset({"gateway-token": tanara})
    out = tmp_path / "stats.json"
    args = parser.parse_args(
        [
            "simulate", "--ingest-url", url, "--no-setup", "--device-token", "gateway-token",
            "--kecamatan", "Tanara", "--tps-limit", "3", "--speed", "60000", "--seed", "4",
            "--progress-every", "0.5", "--json-out", str(out),
        ]
    )  # fmt: skip
    assert args.handler is run_simulate
    assert run_simulate(args) == 0
    stats = json.loads(out.read_text())
    assert stats["tps"] == 3 and stats["seed"] == 4
    assert stats["accepted"] == len(fake.seen) > 0
    assert {e["tps_id"] for _, e in all_events(fake)} <= tanara
    assert fake.invalid == []


def test_cli_refuses_setup_without_an_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIAGA_ADMIN_TOKEN", raising=False)
    parser = argparse.ArgumentParser(prog="siaga")
    add_simulate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "--setup"])
    assert run_simulate(args) == 2


def test_stop_event_ends_the_day_early(ingest: tuple[str, FakeIngest]) -> None:
    url, fake = ingest
    tokens, bound = subset_tokens(SUBSET[:2])
    fake.reset(bound)

    async def main() -> Any:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await run_day(
            ingest_url=url, tokens_by_tps=tokens, speed=3000, seed=1, stop_event=stop, progress=lambda _: None
        )

    stats = asyncio.run(main())
    assert stats.stopped_early
    assert 0 < stats.sent < stats.planned_events


async def test_start_at_skips_the_morning_but_sends_each_phase_so_far(ingest: tuple[str, FakeIngest]) -> None:
    url, fake = ingest
    few = ["SRG-MCK-001", "SRG-MCK-002"]
    tokens, bound = subset_tokens(few)
    fake.reset(bound)
    stats = await run_day(
        ingest_url=url,
        tokens_by_tps=tokens,
        speed=40000,
        seed=2,
        start_at=dtime(13, 30),
        progress=lambda _: None,
        checkin_minutes=(40, 60),
    )
    assert stats.sim_start == "13:30" and stats.rejected == 0
    anchor = datetime.fromisoformat(stats.started_at)
    for tps_id in few:
        phases = [
            e["payload"]["phase"] for _, e in all_events(fake) if e["tps_id"] == tps_id and e["type"] == "tps.status"
        ]
        assert phases[0] == "counting" and "preparation" not in phases
    # Of the morning only the catch-up: the latest phase per TPS, the latest check-in per person, and
    # what is still under way at 13:30; the rest maps onto the run.
    sent = [e for _, e in all_events(fake)]
    early = [e for e in sent if datetime.fromisoformat(e["occurred_at"]) < anchor]
    assert {"tps.status", "checkin"} <= {e["type"] for e in early}
    assert {e["type"] for e in early} <= {"tps.status", "checkin", "incident.reported", "incident.update"}
    checkins = Counter(e["payload"]["personnel_id"] for e in early if e["type"] == "checkin")
    assert checkins and max(checkins.values()) == 1
    reports = {e["event_id"] for e in sent if e["type"] == "incident.reported"}
    for e in early:
        if e["type"] == "incident.reported":  # under way: something of it comes after the start
            assert any(f["payload"].get("report_id") == e["event_id"] and f not in early for f in sent)
    assert all(e["payload"]["report_id"] in reports for e in sent if "report_id" in e["payload"])


def _ev(at: float, type_: str, event_id: str, **payload: Any) -> PlannedEvent:
    return PlannedEvent(at, {"event_id": event_id, "type": type_, "tps_id": "T1", "payload": payload})


def test_a_late_start_catches_up_what_still_matters_and_drops_what_was_over() -> None:
    over = [_ev(5, "incident.reported", "r1", description="x"), _ev(8, "incident.resolved", "r1z", report_id="r1")]
    going = [_ev(10, "incident.reported", "r2", description="y"), _ev(30, "incident.resolved", "r2z", report_id="r2")]
    checkins = [_ev(m, "checkin", f"c{m}", personnel_id="P1", status="on_duty") for m in (4, 15)]
    phases = [_ev(m, "tps.status", f"s{m}", phase=ph) for m, ph in ((3, "preparation"), (12, "opening"))]
    backlog = Send(
        25,
        1,
        [
            _ev(12, "checkin", "b1", personnel_id="P2", status="on_duty"),
            _ev(22, "checkin", "b2", personnel_id="P2", status="on_duty"),
        ],
        batch=True,
    )
    sends = [Send(e.at, 0, [e]) for e in sorted([*over, *going, *checkins, *phases], key=lambda e: e.at)]
    plan = DayPlan(sends=sorted([*sends, backlog], key=lambda s: s.at), scenario={})

    out = _from(plan, 20)

    ids = [e.event["event_id"] for send in out for e in send.events]
    assert set(ids) == {"s12", "c15", "r2", "r2z", "b1", "b2"}
    catch_up = [send for send in out if send.at == 20]
    assert [[e.event["event_id"] for e in send.events] for send in catch_up] == [["r2"], ["s12"], ["c15"]]
    assert [send.batch for send in catch_up] == [False, False, True], "check-ins as the phone's backlog"
    assert ids.index("r2") < ids.index("r2z")


def test_an_escorts_expected_time_runs_at_the_speed_of_the_day() -> None:
    departed = {"box_ids": ["B"], "to": "PPK", "expected_minutes": 30}
    assert real_payload(departed, 20)["expected_minutes"] == 1.5
    assert departed["expected_minutes"] == 30, "the plan is not changed"
    assert real_payload({"phase": "voting"}, 20) == {"phase": "voting"}
