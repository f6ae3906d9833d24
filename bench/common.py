"""What the benchmarks share: a broker, a seeded database, servers as processes, a results table."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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
    env = dict(os.environ, SIAGA_KAFKA_PORT=str(port), SIAGA_KAFKA_HOME=tempfile.mkdtemp(prefix="siaga-bench-kafka-"))
    say(f"starting a Kafka broker on 127.0.0.1:{port}")
    subprocess.run(["bash", str(ROOT / "infra/kafka/broker.sh"), "start"], env=env, check=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(ROOT / "infra/kafka/broker.sh"), "stop"], env=env, check=False)


@contextmanager
def server(args: list[str], env: dict[str, str], *, ready_path: str = "/healthz") -> Iterator[str]:
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
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


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


def loadgen(url: str, *, token: str, tps: list[str], batch: int, concurrency: int, duration: float) -> dict[str, Any]:
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
            ",".join(tps[:50]),
            "--batch",
            str(batch),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def write(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "at": datetime.now(UTC).isoformat(), "machine": machine(), **doc}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    sep = "-+-".join("-" * w for w in widths)
    body = [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}."
