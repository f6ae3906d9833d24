"""The `siaga` command: run the services, the whole system, the simulator, and admin tasks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from siaga.settings import Settings, get_settings

log = logging.getLogger("siaga")


def _serve(app: Any, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=get_settings().access_log, timeout_graceful_shutdown=10
    )


def _context(settings: Settings) -> Any:
    from siaga.runtime import make_context

    return make_context(settings)


def cmd_service(args: argparse.Namespace) -> int:
    """Run one service (ingest, dispatch, dashboard) as its own process."""
    settings = get_settings()
    if args.command == "ingest" and args.workers > 1:
        # Ingest keeps no state of its own: N worker processes share the port (a load balancer in one box).
        import uvicorn

        _context(settings)  # migrate once, before the workers start
        uvicorn.run(
            "siaga.cli:ingest_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=settings.access_log,
        )
        return 0
    ctx = _context(settings)
    if args.command == "ingest":
        from services.ingest.app import create_app as ingest_create

        app = ingest_create(ctx)
    elif args.command == "dispatch":
        from services.dispatch.app import create_app as dispatch_app

        app = dispatch_app(ctx, with_notifier=not args.no_notifier and settings.notifier_in_dispatch)
    else:
        from services.dashboard.app import create_app as dashboard_app

        app = dashboard_app(ctx)
    _serve(app, args.host, args.port)
    return 0


def ingest_app() -> Any:
    """The ingest app for this process (uvicorn's factory for --workers)."""
    from services.ingest.app import create_app
    from siaga.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_format, settings.log_level)
    return create_app(_context(settings))


def cmd_notifier(args: argparse.Namespace) -> int:
    """Run the notifier alone: it consumes siaga.alerts and records deliveries in the database."""
    from fastapi import APIRouter

    from services.dispatch.notifier import Notifier, routing_from_settings, telegram_router
    from services.dispatch.service import Dispatch
    from siaga.service import ServiceParts, build_app

    settings = get_settings()
    ctx = _context(settings)
    dispatch = Dispatch(ctx)  # for its policy store and the delivery records; its consumers are not started

    def routing():  # type: ignore[no-untyped-def]
        return routing_from_settings(settings, dispatch.policies.current().alerts)

    notifier = Notifier(ctx, routing=routing, recorder=dispatch)
    router = APIRouter()
    router.include_router(telegram_router(ctx, routing=routing, actions=dispatch))
    app = build_app(ctx, [ServiceParts("notifier", router, notifier.start, notifier.stop)], title="Siaga notifier")
    _serve(app, args.host, args.port)
    return 0


# The demo's day starts here, not at 05:30: the first twenty minutes (people reaching their posts)
# would leave the feed empty for a minute of real time; they are sent as a catch-up instead.
DEMO_START = "05:50"


def build_dev_app(
    settings: Settings,
    *,
    demo: bool,
    port: int,
    speed: float = 20.0,
    start_at: str | None = None,
    command_center: bool = True,
    day: int = 2,
) -> Any:
    """All three services in one app on one port (the in-process bus unless Kafka is configured)."""
    from services.dashboard.app import build as dashboard_build
    from services.dispatch.app import build as dispatch_build
    from services.ingest.app import build as ingest_build
    from siaga.service import build_app

    ctx = _context(settings)
    parts = [dispatch_build(ctx), ingest_build(ctx), dashboard_build(ctx)]
    if demo:
        parts.append(_demo_part(ctx, port=port, speed=speed, start_at=start_at, command_center=command_center, day=day))
    return build_app(ctx, parts, title="Siaga (dev: ingest + dispatch + dashboard)")


def _demo_part(
    ctx: Any, *, port: int, speed: float, start_at: str | None, command_center: bool = True, day: int = 2
) -> Any:
    """The Serang demo: a day-scaled policy, an operator link, and the field simulator as its own process."""
    from fastapi import APIRouter

    from siaga.service import ServiceParts

    tasks: list[asyncio.Task[None]] = []
    children: list[asyncio.subprocess.Process] = []
    begin = start_at or (DEMO_START if day == 2 else None)

    async def run() -> None:
        from siaga.auth import Role, issue_api_token
        from siaga.demo import scaled_policy

        dispatch = ctx.extras["dispatch"]
        # A sped-up day needs a sped-up policy, or no window would close before the day ends.
        doc = scaled_policy(dispatch.policies.current().document(), speed)
        await asyncio.to_thread(dispatch.policies.put, doc, by=f"demo (durations / {speed:g})")
        operator = await asyncio.to_thread(
            issue_api_token, ctx.engine, name="demo operator", role=Role.OPERATOR, now=ctx.clock.now()
        )
        env = dict(os.environ)
        if command_center:
            # The simulated duty officers act as an operator of their own, so the timeline tells them
            # apart from whoever uses the link; the token goes by the environment, never argv.
            env["SIAGA_OPERATOR_TOKEN"] = await asyncio.to_thread(
                issue_api_token, ctx.engine, name="command center (simulated)", role=Role.OPERATOR, now=ctx.clock.now()
            )
        print(f"\n  Siaga demo: open http://127.0.0.1:{port}/?token={operator}\n", flush=True)
        base = f"http://127.0.0.1:{port}"
        # The simulator runs in a process of its own, so serving and simulating each get a core.
        args = [
            sys.executable,
            "-c",
            "from siaga.cli import main; main()",
            "simulate",
            "--ingest-url",
            base,
            "--dispatch-url",
            base,
            "--setup",
            "--speed",
            f"{speed:g}",
            "--checkin-minutes",
            "20-35",
            # ~1,000 police and reserve phones: one poll a minute each keeps the shared process free.
            "--inbox-poll",
            "60",
        ]
        args += ["--day", str(day)]
        if begin:
            args += ["--start-at", begin]
        children.append(await asyncio.create_subprocess_exec(*args, env=env))

    async def start() -> None:
        tasks.append(asyncio.create_task(run(), name="demo"))

    async def stop() -> None:
        for t in tasks:
            t.cancel()
        for child in children:
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), 10)
                except TimeoutError:
                    child.kill()

    return ServiceParts("demo", APIRouter(), start, stop)


def cmd_dev(args: argparse.Namespace) -> int:
    """Run the whole system in one process, with the Serang demo unless --no-demo."""
    if not os.environ.get("SIAGA_ADMIN_TOKEN"):
        os.environ["SIAGA_ADMIN_TOKEN"] = "adm_" + secrets.token_urlsafe(24)
        print(
            "  SIAGA_ADMIN_TOKEN was not set: this run's admin token is in the environment of this process "
            "only; set it yourself to use the admin API.",
            flush=True,
        )
    if not args.no_demo and "SIAGA_ACCESS_LOG" not in os.environ:
        os.environ["SIAGA_ACCESS_LOG"] = "false"  # hundreds of simulated devices would drown the terminal
    get_settings.cache_clear()
    settings = get_settings()
    if args.public_url:
        settings.public_url = args.public_url
    elif "SIAGA_PUBLIC_URL" not in os.environ:
        settings.public_url = f"http://127.0.0.1:{args.port}"
    app = build_dev_app(
        settings,
        demo=not args.no_demo,
        port=args.port,
        speed=args.speed,
        start_at=args.start_at,
        command_center=args.command_center,
        day=args.day,
    )
    _serve(app, args.host, args.port)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """Admin tasks straight on the database (for the first tokens and for scripts)."""
    from sqlmodel import Session

    from siaga.auth import Role, hash_token, issue_api_token, new_token
    from siaga.models import Device

    settings = get_settings()
    ctx = _context(settings)
    if args.admin_command == "token":
        scope = None
        if args.provinsi or args.kabupaten or args.kecamatan:
            from fastapi import HTTPException
            from sqlmodel import Session

            from services.dispatch.admin import ScopeBody, resolve_scope

            if args.role == "admin":
                print(
                    "an admin token sees everything: --provinsi/--kabupaten/--kecamatan are for viewers and operators",
                    file=sys.stderr,
                )
                return 2
            body = ScopeBody(
                provinsi=args.provinsi or [], kabupaten=args.kabupaten or [], kecamatan=args.kecamatan or []
            )
            try:
                with Session(ctx.engine) as s:
                    scope = resolve_scope(s, body)
            except HTTPException as exc:
                refusals: list[dict[str, str]] = list(exc.detail)  # type: ignore[arg-type]  # the 422 list
                for refusal in refusals:
                    print(f"{refusal['field']}: {refusal['message']}", file=sys.stderr)
                return 2
        print(issue_api_token(ctx.engine, name=args.name, role=Role(args.role), now=ctx.clock.now(), scope=scope))
        return 0
    if args.admin_command == "device":
        # The same refusals as POST /v1/admin/devices: a device bound to nothing, or to TPS the
        # registry does not know, could never post an event.
        if not args.tps and not args.kecamatan:
            print("a device needs --tps, or --kecamatan for a gateway", file=sys.stderr)
            return 2
        from sqlmodel import col, select

        from siaga.models import Tps

        with Session(ctx.engine) as s:
            known_tps = set(s.exec(select(Tps.tps_id).where(col(Tps.tps_id).in_(args.tps or []))).all())
            known_kec = set(s.exec(select(Tps.kecamatan).where(col(Tps.kecamatan).in_(args.kecamatan or []))).all())
        unknown = [t for t in args.tps or [] if t not in known_tps]
        empty = [k for k in args.kecamatan or [] if k not in known_kec]
        if unknown or empty:
            problem = f"unknown TPS {unknown[:10]}" if unknown else f"no TPS in kecamatan {empty}"
            print(f"{problem}: import the TPS registry first (siaga admin import-tps)", file=sys.stderr)
            return 1
        token = new_token("dev")
        with Session(ctx.engine) as s:
            d = Device(
                device_id="dev_" + secrets.token_hex(8),
                personnel_id=args.personnel_id,
                token_hash=hash_token(token),
                tps_ids=args.tps or [],
                kecamatan=args.kecamatan or [],
                created_at=ctx.clock.now(),
            )
            s.add(d)
            s.commit()
            print(f"{d.device_id} {token}")
        return 0
    if args.admin_command in ("import-tps", "import-personnel"):
        import httpx

        path = "/v1/admin/tps/import" if args.admin_command == "import-tps" else "/v1/admin/personnel/import"
        admin_token: str | None = args.admin_token or settings.admin_token
        if not admin_token:
            print("needs --admin-token or SIAGA_ADMIN_TOKEN", file=sys.stderr)
            return 2
        r = httpx.post(
            args.dispatch_url.rstrip("/") + path,
            content=Path(args.file).read_bytes(),
            timeout=120,
            headers={"Content-Type": "text/csv", "Authorization": f"Bearer {admin_token}"},
        )
        print(r.text)
        return 0 if r.status_code == 200 else 1
    return 2


def cmd_replay_dead_letter(args: argparse.Namespace) -> int:
    """Publish chosen siaga.dead-letter entries again to their original topics (siaga/deadletter.py)."""
    from siaga.bus import BusUnavailable, Record
    from siaga.clock import SystemClock, iso
    from siaga.deadletter import DeadLetter, Outcome, ReplayStalled, Selection, parse_time, replay_dead_letters
    from siaga.runtime import make_bus

    settings = get_settings()
    if not settings.kafka_bootstrap:
        print(
            "replay-dead-letter needs the Kafka cluster: set SIAGA_KAFKA_BOOTSTRAP (and SIAGA_TOPIC_PREFIX if the "
            "deployment uses one). The in-process bus of `siaga dev` lives and dies with that process.",
            file=sys.stderr,
        )
        return 2
    now = SystemClock().now()
    try:
        since = parse_time(args.since, now=now) if args.since else None
        until = parse_time(args.until, now=now) if args.until else None
    except ValueError as exc:
        print(f"--since/--until: {exc}", file=sys.stderr)
        return 2
    selection = Selection(
        topics=frozenset(args.topic or ()),
        consumers=frozenset(args.consumer or ()),
        since=since,
        until=until,
        reason=args.reason,
        from_offset=args.from_offset,
        limit=args.limit,
    )

    def on_entry(entry: DeadLetter | Record, outcome: Outcome, why: str) -> None:
        if args.quiet or (outcome is Outcome.FILTERED and not args.verbose):
            return
        where = f"{entry.partition}@{entry.offset}"
        if isinstance(entry, Record):
            print(f"{where}  {outcome.value}: {why}", flush=True)
            return
        failed = iso(entry.failed_at) or "?"
        print(
            f"{where}  {entry.topic} key={entry.key} by {entry.consumer or '?'} at {failed}: "
            f"{entry.reason[:120]}  -> {outcome.value}{': ' + why if why else ''}",
            flush=True,
        )

    def on_progress(done: int, total: int) -> None:
        print(f"published {done}/{total}", file=sys.stderr, flush=True)

    async def run() -> int:
        bus = make_bus(settings)
        try:
            await bus.start()
            report = await replay_dead_letters(
                bus,
                selection,
                dry_run=args.dry_run,
                on_entry=on_entry,
                on_progress=on_progress,
                reopen=_delivery_reopener(settings) if args.resend_failed else None,
            )
        except (BusUnavailable, ReplayStalled) as exc:
            print(f"replay stopped: {exc}", file=sys.stderr)
            return 1
        finally:
            await bus.stop()
        print(report.summary() + (" (dry run: nothing published)" if args.dry_run else ""), flush=True)
        return 0

    return asyncio.run(run())


def _delivery_reopener(settings: Settings) -> Any:
    """For --resend-failed: make the failed alert deliveries named by the replayed entries pending again."""
    from services.dispatch.notifier.store import DeliveryStore
    from siaga.clock import SystemClock
    from siaga.db import make_engine

    store = DeliveryStore(make_engine(settings.database_url))

    async def reopen(keys: list[str]) -> int:
        return await asyncio.to_thread(store.reopen_failed, keys, now=SystemClock().now())

    return reopen


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify the hash chain of every incident timeline: in the database, or in audit export files."""
    from siaga.audit import ExportError, verify, verify_export

    if args.file:
        try:
            result = verify_export([Path(f) for f in args.file], partial=args.partial)
        except ExportError as exc:
            print(f"cannot check the export: {exc}", file=sys.stderr)
            return 2
    else:
        if args.partial:
            print("--partial is for export files: pass them with --file", file=sys.stderr)
            return 2
        result = verify(_context(get_settings()).engine)
    print(result.message)
    return 0 if result.ok else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    """Show or change the database's schema revision (every service start also upgrades to head)."""
    from siaga.db import current_revision, downgrade, head_revision, make_engine, upgrade

    engine = make_engine(get_settings().database_url)
    if args.show:
        print(f"current: {current_revision(engine) or 'none'}  head: {head_revision()}")
    elif args.downgrade:
        downgrade(engine, args.downgrade)
    else:
        upgrade(engine, args.revision)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siaga",
        description="Siaga: live incident monitoring and escalation for "
        "election-day security operations. Configuration: SIAGA_* environment "
        "variables (docs/configuration.md).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run ingest, dispatch and dashboard in one process, with the Serang demo",
        description="All three services on one port. Embedded defaults (in-process bus, SQLite "
        "file siaga.db) unless SIAGA_KAFKA_BOOTSTRAP or SIAGA_DATABASE_URL are set.",
    )
    dev.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    dev.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dev.add_argument("--no-demo", action="store_true", help="start empty: no Serang data, no simulator")
    dev.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="demo speed-up: simulated seconds per real second (default 20: a day in about 45 minutes); "
        "the policy's durations are divided by it too",
    )
    dev.add_argument(
        "--start-at",
        default=None,
        metavar="HH:MM",
        help=f"simulated time of day (WIB) the demo starts at; default {DEMO_START} on the vote day (the "
        "posts are manned from 05:30; what happened since, phases, check-ins and incidents still open, "
        "is sent at once, so the first incidents show within seconds of the link), else the day's first "
        "duty hour",
    )
    dev.add_argument(
        "--day",
        type=int,
        choices=range(1, 6),
        default=2,
        metavar="N",
        help="demo: which day of the five-day duty to play (1 preparation, 2 the vote: default, 3 counting, "
        "4 transport to the PPK, 5 recapitulation); see `siaga simulate --help`",
    )
    dev.add_argument(
        "--command-center",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="demo: a simulated command center acknowledges most escalations, sends the nearest unit "
        "where people are needed and closes what the field left open (default); --no-command-center "
        "leaves all of that to you",
    )
    dev.add_argument("--public-url", default=None, help="URL of the dashboard for alert links (default: this port)")
    dev.set_defaults(func=cmd_dev)

    for name, text in (
        ("ingest", "the field-device API"),
        ("dispatch", "registry, operator API, escalation engine and (unless --no-notifier) the notifier"),
        ("dashboard", "the live dashboard"),
    ):
        sp = sub.add_parser(name, help=f"run {text} as its own process", description=f"Run {text}.")
        sp.add_argument(
            "--port",
            type=int,
            default={"ingest": 8001, "dispatch": 8002, "dashboard": 8003}[name],
            help="port to serve on",
        )
        sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        if name == "ingest":
            sp.add_argument(
                "--workers", type=int, default=1, help="worker processes sharing the port (ingest is stateless)"
            )
        if name == "dispatch":
            sp.add_argument(
                "--no-notifier", action="store_true", help="do not run the notifier here (run `siaga notifier` instead)"
            )
        sp.set_defaults(func=cmd_service)

    nt = sub.add_parser(
        "notifier",
        help="run the alert notifier alone",
        description="Consume siaga.alerts and deliver alerts (Telegram, WhatsApp, Slack, webhook).",
    )
    nt.add_argument("--port", type=int, default=8004, help="port for /healthz, /metrics and the Telegram webhook")
    nt.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    nt.set_defaults(func=cmd_notifier)

    try:
        from siaga.simulator import add_simulate_parser

        add_simulate_parser(sub)
    except ImportError:  # the simulator is optional in a stripped install
        pass

    ad = sub.add_parser("admin", help="admin tasks: tokens, devices, imports")
    asub = ad.add_subparsers(dest="admin_command", required=True, metavar="TASK")
    tk = asub.add_parser("token", help="issue a viewer/operator/admin token (printed once)")
    tk.add_argument("--name", required=True, help="who the token is for")
    tk.add_argument("--role", choices=["viewer", "operator", "admin"], default="operator", help="its role")
    for region, example in (("provinsi", "Banten"), ("kabupaten", "'Kabupaten Serang'"), ("kecamatan", "Cikande")):
        tk.add_argument(
            f"--{region}",
            nargs="*",
            metavar=region.upper(),
            help=f"limit a viewer or operator token to these {region} (e.g. {example}); "
            + ("write a name found in several kabupaten as 'Kabupaten/Kecamatan'; " if region == "kecamatan" else "")
            + "any region listed admits (SPEC section 10)",
        )
    dv = asub.add_parser("device", help="issue a device token (printed once, after the device id)")
    dv.add_argument("--personnel-id", default=None, help="the officer or Linmas carrying the device")
    dv.add_argument("--tps", nargs="*", help="TPS ids the device may post for")
    dv.add_argument("--kecamatan", nargs="*", help="kecamatan a gateway device may post for")
    for name, what in (("import-tps", "TPS registry"), ("import-personnel", "personnel roster")):
        im = asub.add_parser(name, help=f"import the {what} CSV through dispatch's admin API")
        im.add_argument("file", help="the CSV file")
        im.add_argument("--dispatch-url", default="http://127.0.0.1:8000", help="dispatch's base URL")
        im.add_argument("--admin-token", default=None, help="admin token (default: SIAGA_ADMIN_TOKEN)")
    ad.set_defaults(func=cmd_admin)
    _add_replay_parser(asub)

    mg = sub.add_parser(
        "migrate",
        help="upgrade (or show, or downgrade) the database schema",
        description="Apply the schema migrations to SIAGA_DATABASE_URL (docs/migrations.md).",
    )
    mg.add_argument("revision", nargs="?", default="head", help="revision to upgrade to (default head)")
    mg.add_argument("--show", action="store_true", help="print the current and the newest revision, change nothing")
    mg.add_argument("--downgrade", metavar="REVISION", help="downgrade to this revision ('base' drops every table)")
    mg.set_defaults(func=cmd_migrate)

    au = sub.add_parser("audit", help="check the tamper-evident incident record")
    ausub = au.add_subparsers(dest="audit_command", required=True, metavar="TASK")
    av = ausub.add_parser(
        "verify",
        help="prove every timeline's hash chain intact, or name the first broken link",
        description="Walk every incident timeline's hash chain, in the database (SIAGA_DATABASE_URL) or, with "
        "--file, in audit exports (GET /v1/admin/audit/export) without any database. Exit 0 when intact, 1 "
        "naming the first broken entry, 2 when a file cannot be read as an export.",
    )
    av.add_argument(
        "--file",
        action="append",
        metavar="EXPORT",
        help="an audit export (JSON lines) to check instead of the database; repeat it to check several "
        "exports together (an entry in two files must be the same in both)",
    )
    av.add_argument(
        "--partial",
        action="store_true",
        help="the exports were taken with ?since=: a chain may start past entry 1, on its stated link "
        "(without it, every chain must start at entry 1)",
    )
    au.set_defaults(func=cmd_audit)
    return p


def _add_replay_parser(asub: Any) -> None:
    rp = asub.add_parser(
        "replay-dead-letter",
        help="publish dead-lettered messages again to their original topics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Read siaga.dead-letter up to its end and publish the chosen entries' original
messages again (same key, same bytes) to their original topic, oldest first. Consumers
dedupe: dispatch applies a field event once by its event_id, the notifier sends to a
recipient once by its idempotency key, so replaying what was already applied, or
replaying twice, changes nothing. Fix the cause first (import the missing TPS, mend the
channel), then replay: else the consumer gives up on the same message for the same reason.
An alert delivery that failed for good stays failed unless --resend-failed reopens it.

Never replayed: siaga.incident-updates entries (compacted topic: an old copy would hide
the incident's newer state; dispatch publishes it again on its next change), entries of
other topics, unreadable entries. Several entries naming one original message (one per
dashboard, one per failed recipient) are replayed once. Entries filed while the replay
runs wait for the next one.

Reads SIAGA_KAFKA_BOOTSTRAP and SIAGA_TOPIC_PREFIX (and, with --resend-failed only,
SIAGA_DATABASE_URL). Prints one line per
entry (dead-letter partition@offset, original topic and key, who gave up, when, why, and
what the replay did), progress on stderr, and a summary. Exit status 0, 1 when Kafka
failed, 2 for a wrong option.""",
        epilog="""examples:
  siaga admin replay-dead-letter --dry-run
  siaga admin replay-dead-letter --topic siaga.field-events --since 2h
  siaga admin replay-dead-letter --topic siaga.alerts --since 1h --resend-failed
  siaga admin replay-dead-letter --consumer dispatch --reason UnknownTps --limit 50""",
    )
    rp.add_argument(
        "--topic",
        action="append",
        metavar="TOPIC",
        help="only entries whose original topic is this (siaga.field-events or siaga.alerts; repeatable)",
    )
    rp.add_argument(
        "--consumer",
        action="append",
        metavar="NAME",
        help="only entries filed by this consumer (dispatch, siaga-notifier, dashboard; repeatable)",
    )
    rp.add_argument(
        "--since",
        metavar="WHEN",
        help="only entries that failed at or after WHEN: an RFC 3339 time (2026-04-17T09:00:00+07:00) "
        "or a span back from now (30m, 2h, 1d)",
    )
    rp.add_argument("--until", metavar="WHEN", help="only entries that failed before WHEN (same forms as --since)")
    rp.add_argument("--reason", metavar="TEXT", help="only entries whose reason contains TEXT (any case)")
    rp.add_argument(
        "--from-offset",
        type=int,
        default=0,
        metavar="N",
        help="only entries at dead-letter offset N or later (to go on from an earlier replay's last line)",
    )
    rp.add_argument("--limit", type=int, metavar="N", help="replay at most N entries (the oldest chosen)")
    rp.add_argument(
        "--resend-failed",
        action="store_true",
        help="for siaga.alerts entries of deliveries that failed for good: mark each such delivery pending "
        "again first, so the replayed intent sends it (without this the notifier, which never sends a "
        "delivery recorded as failed again, sends nothing for them); needs SIAGA_DATABASE_URL",
    )
    rp.add_argument("--dry-run", action="store_true", help="list what would be replayed; publish nothing")
    rp.add_argument("--verbose", action="store_true", help="list the entries the filters left out too")
    rp.add_argument("--quiet", action="store_true", help="print only progress and the summary")
    rp.set_defaults(func=cmd_replay_dead_letter)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = get_settings()
    from siaga.logs import setup_logging

    setup_logging(settings.log_format, settings.log_level)
    sys.exit(args.func(args))
