"""`siaga simulate`: the field-device simulator and load generator on the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from collections import defaultdict
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx

from siaga.demo import DemoLoadError, TpsRow, demo_tps, load_demo
from siaga.simulator.day import run_day
from siaga.simulator.fleet import TokensByTps
from siaga.simulator.load import run_load


def _minutes_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        lo, hi = float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN-MAX minutes, e.g. 10-20") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError("needs 0 < MIN <= MAX")
    return lo, hi


def add_simulate_parser(subparsers: Any) -> None:
    """Add the `simulate` sub-command to an argparse CLI (its handler: run_simulate)."""
    p = subparsers.add_parser(
        "simulate",
        help="field-device simulator and load generator against any ingest URL",
        description=(
            "Play a realistic election day of the Serang demo (check-ins, TPS phases, incidents, floods, "
            "serangan fajar, clashes, offline devices, silent posts) against an ingest URL, sped up; "
            "or, with --rate, post a steady load and report rate, latency and errors."
        ),
    )
    p.add_argument(
        "--ingest-url",
        default=os.environ.get("SIAGA_INGEST_URL", "http://127.0.0.1:8000"),
        help="base URL of ingest (POST <url>/v1/events); default $SIAGA_INGEST_URL or http://127.0.0.1:8000",
    )
    p.add_argument(
        "--dispatch-url",
        default=os.environ.get("SIAGA_DISPATCH_API_URL", "http://127.0.0.1:8000"),
        help="base URL of dispatch's admin API, used by --setup; default $SIAGA_DISPATCH_API_URL "
        "or http://127.0.0.1:8000",
    )
    p.add_argument(
        "--admin-token",
        default=os.environ.get("SIAGA_ADMIN_TOKEN"),
        help="admin token for --setup (default: $SIAGA_ADMIN_TOKEN); never printed",
    )
    p.add_argument(
        "--setup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="import the Serang TPS and roster and issue the devices first (default); --no-setup "
        "posts with --device-token instead",
    )
    p.add_argument(
        "--device-token",
        default=os.environ.get("SIAGA_DEVICE_TOKEN"),
        help="with --no-setup: a gateway device token bound to the simulated kecamatan, used for every "
        "TPS (default: $SIAGA_DEVICE_TOKEN)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="how much faster than real time the day runs (60: a day in 24 minutes); default 60",
    )
    p.add_argument(
        "--day",
        type=int,
        choices=range(1, 6),
        default=2,
        metavar="N",
        help="day mode: which day of the five-day duty to play: 1 preparation (H-1), 2 the vote (default), "
        "3 counting past midnight and the dawn transport, 4 transport to the PPK, 5 the PPK "
        "recapitulation; illness grows over the days",
    )
    p.add_argument(
        "--start-at",
        type=_hhmm,
        default=None,
        help="simulated time of day (WIB, HH:MM) to start at; default the day's first duty hour (05:30 "
        "on the vote day); what happened before is sent at once: phases, check-ins, open incidents",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for a repeatable run (default: a random one, printed)")
    p.add_argument(
        "--kecamatan",
        action="append",
        default=None,
        help="simulate only this kecamatan (repeat for more); default all 29",
    )
    p.add_argument(
        "--tps-limit",
        type=int,
        default=None,
        help="simulate at most this many TPS, spread over the kecamatan; default all",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="load mode: post this many events a second instead of playing the day",
    )
    p.add_argument("--duration", type=float, default=60.0, help="load mode: how many seconds to post for; default 60")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="load mode: events per request (above 1 uses /v1/events/batch, at most 500); default 1",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        help="seconds between progress lines; default 5",
    )
    p.add_argument(
        "--checkin-minutes",
        type=_minutes_range,
        default=(10.0, 20.0),
        metavar="MIN-MAX",
        help="day mode: each person checks in every MIN to MAX simulated minutes; default 10-20",
    )
    p.add_argument(
        "--inbox-poll",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="day mode: the devices of police and reserves poll their inbox about every SECONDS of real "
        "time and acknowledge most orders (0: never); default 30",
    )
    p.add_argument(
        "--operator-token",
        default=os.environ.get("SIAGA_OPERATOR_TOKEN"),
        help="day mode: also play the command center with this operator token (default: "
        "$SIAGA_OPERATOR_TOKEN; unset: no command center): it acknowledges most escalated incidents "
        "within the ack timeout, sends the nearest unit to clashes, crowds, fires, coverage gaps and "
        "late escorts, and closes what the field left open; never printed",
    )
    p.add_argument("--json-out", type=Path, default=None, help="write the final statistics to this JSON file")
    # `handler` is the documented name; `func` is what siaga.cli dispatches on.
    p.set_defaults(handler=run_simulate, func=run_simulate)


def _hhmm(value: str) -> dtime:
    try:
        hours, minutes = value.split(":")
        return dtime(int(hours), int(minutes))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a time of day like 06:30") from exc


def select_tps(rows: list[TpsRow], kecamatan: list[str] | None, limit: int | None) -> list[TpsRow]:
    """The TPS to simulate: the named kecamatan, then at most `limit`, taken in turns per kecamatan."""
    if kecamatan:
        wanted = {k.casefold() for k in kecamatan}
        rows = [t for t in rows if t.kecamatan.casefold() in wanted]
    if limit is None or limit >= len(rows):
        return rows
    by_kec: dict[str, list[TpsRow]] = defaultdict(list)
    for t in rows:
        by_kec[t.kecamatan].append(t)
    queues = list(by_kec.values())
    out: list[TpsRow] = []
    depth = 0
    while len(out) < limit:
        out += [q[depth] for q in queues if depth < len(q)][: limit - len(out)]
        depth += 1
    chosen = {t.tps_id for t in out}
    return [t for t in rows if t.tps_id in chosen]


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of `siaga simulate`: 0 when the run finished, 1 when it could not start or got nothing in."""
    if args.rate is not None and (args.rate <= 0 or args.duration <= 0 or not 1 <= args.batch <= 500):
        print("simulate: --rate and --duration must be above 0 and --batch between 1 and 500", file=sys.stderr)
        return 2
    if args.speed <= 0:
        print("simulate: --speed must be above 0", file=sys.stderr)
        return 2
    rows = select_tps(list(demo_tps()), args.kecamatan, args.tps_limit)
    if not rows:
        print("simulate: no TPS selected; check --kecamatan (names as in the demo, e.g. Cikande)", file=sys.stderr)
        return 2
    if args.setup and not args.admin_token:
        print(
            "simulate: --setup needs an admin token: pass --admin-token or set SIAGA_ADMIN_TOKEN "
            "(or use --no-setup with --device-token)",
            file=sys.stderr,
        )
        return 2
    if not args.setup and not args.device_token:
        print(
            "simulate: --no-setup needs a device token: pass --device-token or set SIAGA_DEVICE_TOKEN "
            "(a gateway device bound to the simulated kecamatan)",
            file=sys.stderr,
        )
        return 2
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    try:
        return asyncio.run(_simulate(args, rows, seed))
    except KeyboardInterrupt:
        return 130


async def _simulate(args: argparse.Namespace, rows: list[TpsRow], seed: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on some platforms
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    wanted = {t.tps_id for t in rows}
    tokens: TokensByTps
    if args.setup:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
            try:
                setup = await load_demo(client, dispatch_url=args.dispatch_url, admin_token=args.admin_token)
            except (DemoLoadError, httpx.HTTPError) as exc:
                print(f"simulate: demo setup at {args.dispatch_url} failed: {exc}", file=sys.stderr)
                return 1
        print(
            f"demo loaded: {len(setup.devices)} devices, {len(setup.gateways)} gateways; "
            f"TPS import {_summary(setup.tps_import)}, roster import {_summary(setup.personnel_import)}"
        )
        tokens = {t: v for t, v in setup.tokens_by_tps.items() if t in wanted}
    else:
        tokens = {t: [args.device_token] for t in sorted(wanted)}
    stats: Any
    if args.rate is not None:
        stats = await run_load(
            ingest_url=args.ingest_url,
            tokens_by_tps=tokens,
            rate=args.rate,
            duration=args.duration,
            batch=args.batch,
            seed=seed,
            stop_event=stop,
            progress_every_s=args.progress_every,
        )
    else:
        stats = await run_day(
            ingest_url=args.ingest_url,
            tokens_by_tps=tokens,
            speed=args.speed,
            seed=seed,
            start_at=args.start_at,
            stop_event=stop,
            progress_every_s=args.progress_every,
            checkin_minutes=args.checkin_minutes,
            inbox_poll_s=args.inbox_poll,
            operator_token=args.operator_token,
            dispatch_url=args.dispatch_url,
            day=args.day,
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    for reason in stats.rejections[:5]:
        print(f"  refused: {reason}")
    got_in = stats.accepted + stats.duplicates
    return 1 if stats.sent and not got_in else 0


def _summary(answer: dict[str, Any]) -> str:
    refused = answer.get("refused") or answer.get("rejected") or []
    imported = answer.get("imported", answer.get("count", "?"))
    return f"{imported} imported, {len(refused)} refused"
