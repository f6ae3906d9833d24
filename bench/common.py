"""What the benchmarks share: a broker, a seeded database, servers as processes, a results table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
SIAGA = str(Path(PY).parent / "siaga")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


@contextmanager
def broker() -> Iterator[str]:
    """SIAGA_KAFKA_BOOTSTRAP if set, else a fresh local broker for this run."""
    if os.environ.get("SIAGA_KAFKA_BOOTSTRAP"):
        yield os.environ["SIAGA_KAFKA_BOOTSTRAP"]
        return
    port = free_port()
    home = tempfile.mkdtemp(prefix="siaga-bench-kafka-")
    env = dict(os.environ, SIAGA_KAFKA_PORT=str(port), SIAGA_KAFKA_HOME=home)
    say(f"starting a Kafka broker on 127.0.0.1:{port}")
    subprocess.run(["bash", str(ROOT / "infra/kafka/broker.sh"), "start"], env=env, check=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stopped = subprocess.run(["bash", str(ROOT / "infra/kafka/broker.sh"), "stop"], env=env, check=False)
        if stopped.returncode == 0:
            shutil.rmtree(home, ignore_errors=True)  # the broker's data: tens of MB per run


class Proc:
    """A server process started by `process()`: its base URL and pid (for CPU time)."""

    def __init__(self, url: str, pid: int, log: str) -> None:
        self.url, self.pid, self.log = url, pid, log

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (from /proc/<pid>/stat)."""
        return cpu_seconds(self.pid)


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database: a SQLite file, or a PostgreSQL server of the run's own."""
    if kind == "sqlite":
        yield f"sqlite:///{Path(tempfile.mkdtemp(prefix='siaga-bench-')) / 'siaga.db'}"
        return
    from tests.plugins.postgres import PgServer

    pg = PgServer()
    say("starting PostgreSQL")
    pg.start()
    try:
        yield pg.create_database()
    finally:
        pg.remove()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process in seconds; 0.0 where /proc is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" that ends the command name: field 3 (state) is index 0, utime (14) index 11.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_ticks() -> tuple[int, int]:
    """(all CPU ticks, stolen ticks) of the machine so far, from /proc/stat; zeros where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return sum(fields), fields[7] if len(fields) > 7 else 0


@contextmanager
def process(args: list[str], env: dict[str, str], *, ready_path: str = "/healthz") -> Iterator[Proc]:
    """A server process on a free port (args get --port appended), stopped at the end."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="siaga-bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [*args, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited; log: {log.name}")
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{args} not ready; log: {log.name}")
            time.sleep(0.2)
        yield Proc(url, proc.pid, log.name)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextmanager
def server(args: list[str], env: dict[str, str], *, ready_path: str = "/healthz") -> Iterator[str]:
    """A server process on a free port (args get --port appended), stopped at the end; yields its URL."""
    with process(args, env, ready_path=ready_path) as proc:
        yield proc.url


def seed(db_url: str, n_tps: int = 100) -> tuple[str, list[str]]:
    """A database with n_tps TPS and one device for all of them; returns (device token, tps ids)."""
    from sqlmodel import Session

    from siaga.auth import hash_token, new_token
    from siaga.db import create_schema, make_engine
    from siaga.models import Device, Tps

    engine = make_engine(db_url)
    create_schema(engine)
    ids = [f"B{i:04d}" for i in range(n_tps)]
    token = new_token("dev")
    with Session(engine) as s:
        for i, t in enumerate(ids):
            s.add(Tps(tps_id=t, name=f"TPS {i}", kecamatan=f"Kec{i % 29}", lat=-6.1, lon=106.2))
        s.add(Device(device_id="bench", token_hash=hash_token(token), tps_ids=ids, created_at=datetime.now(UTC)))
        s.commit()
    engine.dispose()
    return token, ids


@lru_cache(maxsize=4)
def serang_plan(seed: int) -> tuple[Any, Any]:
    """The simulator's fleet (TPS, devices, roster) and its plan of a Serang election day for `seed`.

    Built exactly as the `siaga simulate` day builds it (siaga/simulator/plan.py with
    data/incidents.yaml and the demo roster); nothing is posted.
    """
    from siaga.demo import DeviceToken, plan_devices
    from siaga.demo.registry import demo_personnel, demo_tps, read_kecamatan
    from siaga.simulator.fleet import build_fleet
    from siaga.simulator.plan import DayPlanner
    from siaga.simulator.texts import load_texts

    tps, personnel = demo_tps(), demo_personnel()
    devices, _gateways = plan_devices(tps, personnel, read_kecamatan())
    tokens: dict[str, list[DeviceToken]] = {}
    for i, d in enumerate(devices):
        cred = DeviceToken(f"d{i}", f"t{i}", d.personnel_id, d.personnel_ids, d.tps_ids)
        for t in d.tps_ids:
            tokens.setdefault(t, []).append(cred)
    fleet = build_fleet(tokens)
    planner = DayPlanner(seed=seed, tps=fleet.tps, devices=fleet.devices, personnel=fleet.personnel, texts=load_texts())
    return fleet, planner.build()


def day_events(seed: int, *, start: str = "06:55", limit: int = 6000) -> list[Any]:
    """`limit` planned events of the simulated Serang day from `start` (WIB, HH:MM) on, in time order.

    Follow-ups (update, resolved, backup) of a report from before `start` are left out: dispatch
    would dead-letter them. The default window holds the morning peak (TPS opening at 07:00).
    """
    _, plan = serang_plan(seed)
    hh, mm = (int(x) for x in start.split(":"))
    planned: list[Any] = []
    reported: set[str] = set()
    for e in sorted((e for s in plan.sends for e in s.events if e.at >= hh * 60 + mm), key=lambda e: e.at):
        ref = e.event["payload"].get("report_id")
        if ref is not None and ref not in reported:
            continue
        if e.event["type"] == "incident.reported":
            reported.add(e.event["event_id"])
        planned.append(e)
        if len(planned) == limit:
            break
    return planned


def field_records(planned: list[Any]) -> list[tuple[str, bytes]]:
    """(key, value) of siaga.field-events for planned events, the last one happening now."""
    import orjson

    now = datetime.now(UTC)
    last = planned[-1].at if planned else 0.0
    out = []
    for e in planned:
        occurred = now - timedelta(minutes=last - e.at)
        body = {"event": {**e.event, "occurred_at": occurred.isoformat()}, "device_id": "bench", "received_at": now}
        out.append((str(e.event["tps_id"]), orjson.dumps(body)))
    return out


def seed_serang(db_url: str) -> list[str]:
    """A database with the Serang demo's TPS and roster (as the simulator plays them); returns the TPS ids."""
    from sqlmodel import Session

    from siaga.db import create_schema, make_engine
    from siaga.models import Personnel, Tps

    fleet, _ = serang_plan(1)
    engine = make_engine(db_url)
    create_schema(engine)
    with Session(engine) as s:
        for t in fleet.tps:
            s.add(Tps(tps_id=t.tps_id, name=t.name, kecamatan=t.kecamatan, desa=t.desa, lat=t.lat, lon=t.lon))
        for p in fleet.personnel:
            s.add(Personnel(personnel_id=p.personnel_id, name=p.name, role=p.role, tps_ids=list(p.tps_ids)))
        s.commit()
    engine.dispose()
    return [t.tps_id for t in fleet.tps]


def loadgen(
    url: str,
    *,
    token: str,
    tps: list[str],
    batch: int,
    concurrency: int,
    duration: float,
    reconnect: bool = False,
    kind: str = "report",
    max_tps: int = 50,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Run bench/loadgen.py in its own process; its result (see `bench.loadgen.run`)."""
    out = subprocess.run(
        [
            PY,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--token",
            token,
            "--tps",
            ",".join(tps[:max_tps]),
            "--batch",
            str(batch),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            *(["--reconnect"] if reconnect else []),
            "--kind",
            kind,
            "--rate",
            str(rate),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() says only x86_64 on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (others share this machine: record them with every result)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def write(name: str, doc: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the time, the machine and the load average at the end."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC).isoformat()
    doc = {"benchmark": name, "at": at, "machine": machine(), "loadavg_end": loadavg(), **doc}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    sep = "-+-".join("-" * w for w in widths)
    body = [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}."
