"""The whole system as separate processes, for end-to-end and fault tests.

`SystemProcs` starts `siaga dev` (embedded) or `siaga dispatch|ingest|dashboard` (on Kafka) the way
an operator would, with their own database file, waits until they answer, and can kill -9 and
restart any of them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.plugins.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SIAGA = str(Path(sys.executable).parent / "siaga")


class SystemProcs:
    def __init__(
        self, workdir: Path, *, kafka: str | None, env: dict[str, str] | None = None, database_url: str | None = None
    ) -> None:
        self.workdir = workdir
        self.kafka = kafka
        self.admin = "adm_" + uuid.uuid4().hex
        self.env = dict(os.environ)
        self.env.pop("SIAGA_KAFKA_BOOTSTRAP", None)
        self.env.update(
            {
                "SIAGA_ADMIN_TOKEN": self.admin,
                "SIAGA_DATABASE_URL": database_url or f"sqlite:///{workdir / 'siaga.db'}",
                "SIAGA_TICK_INTERVAL_S": "0.2",
                "SIAGA_KAFKA_PUBLISH_TIMEOUT_S": "3",
                "SIAGA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if kafka:
            self.env["SIAGA_KAFKA_BOOTSTRAP"] = kafka
        self.env.update(env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.urls: dict[str, str] = {}

    def start(self, *names: str) -> None:
        names = names or (("dispatch", "ingest", "dashboard") if self.kafka else ("dev",))
        for name in names:
            self.spawn(name)
        for name in names:
            self.wait_healthy(name)

    def spawn(self, name: str, extra: list[str] | None = None) -> None:
        port = self.ports.get(name) or free_port()
        self.ports[name] = port
        # "dispatch2" is a second `siaga dispatch` (same group: the partitions are shared).
        command = name.rstrip("0123456789") or name
        args = [SIAGA, command, "--port", str(port), *(extra or [])]
        if name == "dev":
            args.append("--no-demo")
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115  (kept open for the child)
        self.procs[name] = subprocess.Popen(
            args, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        if name == "dev":
            self.urls.update(ingest=url, dispatch=url, dashboard=url)
        else:
            self.urls[name] = url

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/readyz"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout}s:\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def restart(self, name: str) -> None:
        self.spawn(name)
        self.wait_healthy(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()

    # -- acting as the admin, a device and an operator
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def import_tps(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        buf = io.StringIO()
        w = csv.DictWriter(buf, ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"])
        w.writeheader()
        w.writerows(rows)
        r = httpx.post(
            self.urls["dispatch"] + "/v1/admin/tps/import",
            content=buf.getvalue().encode(),
            headers={**self.admin_headers(), "Content-Type": "text/csv"},
            timeout=30,
        )
        r.raise_for_status()
        return dict(r.json())

    def device(self, tps_ids: list[str]) -> str:
        r = httpx.post(
            self.urls["dispatch"] + "/v1/admin/devices",
            json={"personnel_id": "P1", "tps_ids": tps_ids},
            headers=self.admin_headers(),
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def token(self, role: str) -> str:
        r = httpx.post(
            self.urls["dispatch"] + "/v1/admin/tokens",
            json={"name": f"test-{role}", "role": role},
            headers=self.admin_headers(),
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def incidents(self, token: str) -> list[dict[str, Any]]:
        r = httpx.get(
            self.urls["dispatch"] + "/v1/incidents",
            params={"limit": 10000},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        r.raise_for_status()
        return list(r.json()["items"])

    def wait_for(self, token: str, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [i for i in self.incidents(token) if pred(i)]
            if found:
                return found
            time.sleep(0.2)
        return []


def tps_rows(n: int, kecamatan: str = "Cikande", prefix: str = "T") -> list[dict[str, Any]]:
    return [
        {
            "tps_id": f"{prefix}{i:04d}",
            "name": f"TPS {i:03d}",
            "kecamatan": kecamatan,
            "desa": "Desa",
            "lat": f"{-6.1 - i * 0.001:.5f}",
            "lon": f"{106.2 + i * 0.001:.5f}",
            "rawan": "",
        }
        for i in range(n)
    ]


@pytest.fixture
def embedded_system(tmp_path: Path) -> Iterator[SystemProcs]:
    """`siaga dev --no-demo`: one process, in-process bus, SQLite."""
    sysm = SystemProcs(tmp_path, kafka=None)
    sysm.start()
    yield sysm
    sysm.stop()


@pytest.fixture
def kafka_system(tmp_path: Path, kafka_bootstrap: str) -> Iterator[SystemProcs]:
    """dispatch, ingest and dashboard as three processes on the real broker."""
    sysm = SystemProcs(tmp_path, kafka=kafka_bootstrap)
    sysm.start()
    yield sysm
    sysm.stop()
