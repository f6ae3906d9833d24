"""Crash and fault tests through the real broker: each counts what was lost and what was doubled.

A poster plays field devices: it sends one report per TPS (so every report must become exactly one
incident with one report), retrying on 503s and broken connections with the same event_id, as a
device does. Midway, a service is killed with SIGKILL (or the broker or the database stops) and
comes back. Afterwards: lost = reports answered 202 that are not an incident; doubled = incidents
with more than one report, or more incidents than reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.fakes.providers import FakeWebhook
from tests.plugins.kafka import ROOT, _free_port
from tests.plugins.postgres import PgServer
from tests.plugins.system import SystemProcs, tps_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N = 240  # reports, one per TPS


class Poster(threading.Thread):
    """Posts one report per TPS at a steady pace; retries each until ingest answers 202."""

    def __init__(
        self,
        sysm: SystemProcs,
        token: str,
        tps_ids: list[str],
        *,
        rate: float = 40.0,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.sysm, self.token, self.tps_ids, self.rate = sysm, token, tps_ids, rate
        self.payload = payload or {"description": "Genset mati, TPS gelap", "category": "equipment"}
        self.accepted: set[str] = set()
        self.retries = 0
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for tps_id in self.tps_ids:
                ev = {
                    "event_id": str(uuid.uuid4()),
                    "type": "incident.reported",
                    "tps_id": tps_id,
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "payload": self.payload,
                }
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        r = client.post(
                            self.sysm.urls["ingest"] + "/v1/events",
                            json=ev,
                            headers={"Authorization": f"Bearer {self.token}"},
                        )
                        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                        if r.status_code == 202:
                            self.accepted.add(ev["event_id"])  # type: ignore[arg-type]
                            break
                    except httpx.HTTPError:
                        self.statuses[0] = self.statuses.get(0, 0) + 1
                    self.retries += 1
                    time.sleep(0.2)
                time.sleep(1 / self.rate)


def settle(sysm: SystemProcs, token: str, expected: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """The incidents once their count stopped growing (or reached `expected`)."""
    end = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < end:
        found = sysm.incidents(token)
        if len(found) >= expected:
            time.sleep(1.0)  # let any doubles arrive too, so they are counted
            return sysm.incidents(token)
        time.sleep(0.5)
    return found


def lost_and_doubled(poster: Poster, incidents: list[dict[str, Any]]) -> tuple[int, int]:
    tps_incidents = [i for i in incidents if i["tps_id"]]
    by_tps: dict[str, int] = {}
    for i in tps_incidents:
        by_tps[i["tps_id"]] = by_tps.get(i["tps_id"], 0) + 1
    doubled = sum(n - 1 for n in by_tps.values()) + sum(i["reports"] - 1 for i in tps_incidents)
    lost = len(poster.accepted) - len(by_tps)
    return lost, doubled


@pytest.fixture
def loaded(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Callable[..., tuple[SystemProcs, str, str]]]:
    """A system on Kafka with N TPS, a device and an operator token, started as the test asks."""
    systems: list[SystemProcs] = []

    def make(
        *names: str,
        env: dict[str, str] | None = None,
        kafka: str | None = None,
        database_url: str | None = None,
        spread_out: bool = False,
    ) -> tuple[SystemProcs, str, str]:
        sysm = SystemProcs(tmp_path, kafka=kafka or kafka_bootstrap, env=env, database_url=database_url)
        systems.append(sysm)
        sysm.start(*names)
        rows = tps_rows(N)
        if spread_out:  # one TPS a kecamatan: no spread, so every incident speaks for itself
            for i, row in enumerate(rows):
                row["kecamatan"] = f"Kec{i:04d}"
        sysm.import_tps(rows)
        return sysm, sysm.device([f"T{i:04d}" for i in range(N)]), sysm.token("operator")

    yield make
    for s in systems:
        s.stop()


def _run_with_fault(sysm: SystemProcs, device: str, fault: Callable[[], None], **poster_kw: Any) -> Poster:
    poster = Poster(sysm, device, [f"T{i:04d}" for i in range(N)], **poster_kw)
    poster.start()
    time.sleep(2.0)  # under load
    fault()
    poster.join(240)
    assert not poster.is_alive(), "the poster could not get every report accepted"
    return poster


@pytest.mark.parametrize("victim", ["dispatch", "ingest"])
def test_kill_9_under_load_loses_nothing_and_doubles_nothing(loaded: Any, victim: str) -> None:
    sysm, device, op = loaded()

    def crash() -> None:
        sysm.kill(victim)
        time.sleep(1.0)
        sysm.restart(victim)

    poster = _run_with_fault(sysm, device, crash)
    incidents = settle(sysm, op, len(poster.accepted))
    lost, doubled = lost_and_doubled(poster, incidents)
    print(
        f"kill -9 {victim}: accepted={len(poster.accepted)} retries={poster.retries} statuses={poster.statuses} "
        f"lost={lost} doubled={doubled}"
    )
    assert len(poster.accepted) == N
    assert (lost, doubled) == (0, 0)


def test_kill_9_of_the_dashboard_under_load_leaves_a_complete_picture(loaded: Any) -> None:
    sysm, device, op = loaded()
    viewer = sysm.token("viewer")
    ws_url = sysm.urls["dashboard"].replace("http://", "ws://") + f"/ws?token={viewer}"

    async def picture(since: int | None = None) -> tuple[dict[str, Any], int]:
        url = ws_url + (f"&since={since}" if since is not None else "")
        held: dict[str, Any] = {}
        seq = 0
        async with websockets.connect(url, max_size=2**26) as ws:
            while True:
                try:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 3))
                except TimeoutError:
                    return held, seq
                seq = m.get("seq", seq)
                if m["type"] == "snapshot":
                    held = {i["id"]: i for i in m["incidents"]}
                elif m["type"] == "incident":
                    held[m["incident"]["id"]] = m["incident"]

    def crash() -> None:
        sysm.kill("dashboard")
        time.sleep(1.0)
        sysm.restart("dashboard")

    poster = _run_with_fault(sysm, device, crash)
    settle(sysm, op, len(poster.accepted))
    held, _ = asyncio.run(picture())
    tps_ids = [i["tps_id"] for i in held.values() if i["tps_id"]]
    lost, doubled = len(poster.accepted) - len(set(tps_ids)), len(tps_ids) - len(set(tps_ids))
    print(f"kill -9 dashboard: the restarted dashboard holds {len(held)} incidents; lost={lost} doubled={doubled}")
    assert (lost, doubled) == (0, 0)


def test_kill_9_of_the_notifier_mid_retry_loses_no_alert_and_sends_none_twice(loaded: Any) -> None:
    hook = FakeWebhook(secret="s3cret", dedupe=True)
    with hook:
        hook.script(*([500] * 10000))  # the receiver fails until told otherwise: deliveries are mid-retry
        env = {
            "SIAGA_NOTIFIER_IN_DISPATCH": "false",
            "SIAGA_WEBHOOK_URL": hook.hook_url,
            "SIAGA_WEBHOOK_SECRET": "s3cret",
        }
        sysm, device, _op = loaded("dispatch", "ingest", "dashboard", "notifier", env=env, spread_out=True)
        critical = {
            "description": "Bentrok, bawa golok, 2 orang luka",
            "category": "violence",
            "weapons": True,
            "injuries": 2,
        }
        poster = Poster(sysm, device, [f"T{i:04d}" for i in range(20)], rate=20, payload=critical)
        poster.start()
        poster.join(60)
        # A few failed attempts, so deliveries are mid-retry. Not many more: after five in a row the
        # destination's breaker opens for its 30 s cool-down and nothing is tried meanwhile.
        end = time.monotonic() + 60
        while time.monotonic() < end and len(hook.requests) < 3:
            time.sleep(0.2)
        failed_before = len(hook.requests)
        assert failed_before >= 3, "the notifier tried too few deliveries before the kill: nothing was mid-retry"
        assert poster.accepted, "no critical report was accepted: there would be no alert to lose or double"
        sysm.kill("notifier")
        hook.reset()  # from now on it answers 200 (the failed attempts so far are forgotten: none was taken in)
        sysm.restart("notifier")
        expected = 2 * len(poster.accepted)  # level 2 and level 1 for each critical incident
        end = time.monotonic() + 90
        while time.monotonic() < end and len(hook.delivered) < expected:
            time.sleep(0.3)
        time.sleep(2.0)
        accepted = [r for r in hook.requests if r.accepted]
        keys = [r.json()["idempotency_key"] for r in accepted]
        # The receiver answers a repeated idempotency key 200 but marks it: every such request was a
        # second delivery of an alert it had already taken in.
        doubled = sum(r.duplicate for r in accepted)
        print(
            f"kill -9 notifier: {failed_before} failed attempts before the kill, {len(hook.requests)} requests "
            f"after, {len(set(keys))} distinct keys, {len(hook.delivered)} delivered, {doubled} doubled, "
            f"expected {expected}"
        )
        assert len(hook.delivered) == expected, "lost alerts"
        assert len(set(keys)) == expected
        assert doubled == 0, f"{doubled} alerts were delivered twice"
        assert len(keys) == expected


@pytest.fixture
def own_broker() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A broker of this test's own (so stopping it disturbs no other test)."""
    port = _free_port()
    env = dict(os.environ, SIAGA_KAFKA_PORT=str(port), SIAGA_KAFKA_HOME=tempfile.mkdtemp(prefix="siaga-fault-kafka-"))
    script = str(ROOT / "infra" / "kafka" / "broker.sh")

    def start() -> None:
        subprocess.run(["bash", script, "start"], env=env, check=True, timeout=300)

    def stop() -> None:
        subprocess.run(["bash", script, "stop"], env=env, check=True, timeout=120)

    start()
    yield f"127.0.0.1:{port}", start, stop
    stop()


def test_broker_stopped_and_started_under_load(loaded: Any, own_broker: Any) -> None:
    bootstrap, start, stop = own_broker
    sysm, device, op = loaded(kafka=bootstrap)

    def outage() -> None:
        stop()
        time.sleep(3.0)
        start()

    poster = _run_with_fault(sysm, device, outage)
    incidents = settle(sysm, op, len(poster.accepted), timeout=120)
    lost, doubled = lost_and_doubled(poster, incidents)
    print(f"broker outage: statuses={poster.statuses} lost={lost} doubled={doubled}")
    assert poster.statuses.get(503, 0) > 0, "the outage was seen as 503s"
    assert (lost, doubled) == (0, 0)


@pytest.mark.postgres
def test_database_unavailable_for_a_while(loaded: Any) -> None:
    pg = PgServer()
    pg.start()
    try:
        sysm, device, op = loaded(database_url=pg.create_database())

        def outage() -> None:
            pg.stop()
            time.sleep(3.0)
            pg.start()

        poster = _run_with_fault(sysm, device, outage)
        incidents = settle(sysm, op, len(poster.accepted), timeout=120)
        lost, doubled = lost_and_doubled(poster, incidents)
        print(f"database outage: statuses={poster.statuses} lost={lost} doubled={doubled}")
        assert poster.statuses.get(503, 0) > 0, "the outage was seen as 503s"
        assert (lost, doubled) == (0, 0)
    finally:
        pg.remove()


def test_a_pending_deadline_survives_kill_9_of_dispatch_and_fires_once(loaded: Any, tmp_path: Path) -> None:
    import yaml

    from services.dispatch.policy import DEFAULT_FILE

    policy = yaml.safe_load(DEFAULT_FILE.read_text())
    policy["local_window_minutes"] = {"low": 0.25, "medium": 0.25, "high": 0.25}  # 15 s
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with FakeWebhook(dedupe=False) as hook:
        env = {"SIAGA_POLICY_FILE": str(path), "SIAGA_WEBHOOK_URL": hook.hook_url}
        sysm, device, op = loaded(env=env, spread_out=True)
        poster = Poster(
            sysm, device, ["T0000"], payload={"description": "Kotak suara belum tiba", "category": "logistics"}
        )
        poster.run()
        [inc] = sysm.wait_for(op, lambda i: i["tps_id"] == "T0000")
        assert inc["level"] == 0
        sysm.kill("dispatch")  # the deadline passes while dispatch is dead
        time.sleep(16)
        sysm.restart("dispatch")
        escalated = sysm.wait_for(op, lambda i: i["id"] == inc["id"] and i["level"] >= 1, timeout=30)
        assert escalated, "the deadline fired after the restart"
        time.sleep(3)
        police = [r.json() for r in hook.requests if r.json()["level"] == 1 and "police" in r.json()["idempotency_key"]]
        print(f"deadline across kill -9: escalated to {escalated[0]['level']}, {len(police)} level-1 alert(s)")
        assert len(police) == 1, "fired once"
