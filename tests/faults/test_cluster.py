"""Faults of a real 3-broker cluster (RF 3, min.insync.replicas 2) under a load of 500+ events/s.

One cluster (tests/plugins/cluster.py) is shared by the module; each test starts its own services
(own topics, own database) on it. Posters play field devices: batches (`POST /v1/events/batch`) of
check-ins and notes on open incidents, each batch retried with the same event_ids until answered 202,
as a device does, for LOAD_S seconds; FAULT_AT seconds in, the fault strikes and heals.

Counted afterwards, from the database dispatch writes:
- lost = event_ids answered 202 that dispatch never applied (no `processedevent` row), plus notes
  answered 202 without their effect (no timeline entry carrying the note);
- doubled = effects applied twice: a note's timeline entry more than once, a seeded report counted
  twice or opening a second incident;
- and every incident's timeline hash chain must verify (`siaga audit verify`).

Figures (events, rate, lost, doubled, recovery) are printed; with SIAGA_CLUSTER_RESULTS=<file> they
are appended to that file as JSON lines too (docs/reliability.md, "3-broker cluster faults").
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from siaga import topics
from siaga.audit import verify
from tests.plugins.cluster import Cluster, kafka_cluster  # noqa: F401  (the module's cluster fixture)
from tests.plugins.postgres import PgServer
from tests.plugins.system import SIAGA, SystemProcs, free_port, tps_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]  # the first test also starts the cluster

N_TPS = 240
LOAD_S = float(os.environ.get("SIAGA_CLUSTER_LOAD_S", "62"))  # seconds of new events
FAULT_AT = 15.0  # seconds into the load
RATE = float(os.environ.get("SIAGA_CLUSTER_RATE", "680"))  # events/s asked for (above 500: faults cost some)
MIN_RATE = 500.0
POSTERS = 4
BATCH = 170  # a batch a second per poster: ingest spends less CPU per event, dispatch has more
NOTE_SHARE = 0.2  # the rest are check-ins


class Procs(SystemProcs):
    """SystemProcs that can also run a second dispatch (`dispatch-b`)."""

    def spawn(self, name: str, extra: list[str] | None = None) -> None:
        if name != "dispatch-b":
            super().spawn(name, extra)
            return
        port = self.ports.get(name) or free_port()
        self.ports[name] = port
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115  (kept open for the child)
        self.procs[name] = subprocess.Popen(
            [SIAGA, "dispatch", "--port", str(port), *(extra or [])],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Load:
    """POSTERS threads posting batches at RATE events/s in all, for LOAD_S seconds; each batch is
    retried (same event_ids) until answered 202."""

    def __init__(self, url: str, token: str, report_of: dict[str, str]) -> None:
        self.url, self.token, self.report_of = url, token, report_of
        self.tps_ids = sorted(report_of)
        self.accepted: set[str] = set()
        self.notes: set[str] = set()  # accepted notes (their text is their event_id)
        self.rejected = 0
        self.statuses: Counter[int] = Counter()  # 0: a broken connection or a timeout
        self.failures: list[float] = []  # monotonic times of failed attempts
        self.gave_up = 0
        self.lock = threading.Lock()
        self.started = self.ended = 0.0
        self.threads = [threading.Thread(target=self._post, args=(k,), daemon=True) for k in range(POSTERS)]

    def _event(self, rnd: random.Random) -> dict[str, Any]:
        tps = rnd.choice(self.tps_ids)
        event_id = str(uuid.uuid4())
        ev: dict[str, Any] = {"event_id": event_id, "tps_id": tps, "occurred_at": datetime.now(UTC).isoformat()}
        if rnd.random() < NOTE_SHARE:
            ev.update(type="incident.update", payload={"report_id": self.report_of[tps], "note": event_id})
        else:
            status = rnd.choice(["on_duty", "on_duty", "on_duty", "unwell"])
            ev.update(type="checkin", payload={"personnel_id": f"P-{tps}", "status": status, "battery": 80})
        return ev

    def _post(self, k: int) -> None:
        rnd = random.Random(k)
        interval = POSTERS * BATCH / RATE
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=10) as client:
            j = 0
            while (due := self.started + k * interval / POSTERS + j * interval) < self.started + LOAD_S:
                time.sleep(max(0.0, due - time.monotonic()))  # behind schedule (after a fault): catch up
                j += 1
                batch = [self._event(rnd) for _ in range(BATCH)]
                deadline = time.monotonic() + 180
                while True:
                    try:
                        r = client.post(self.url + "/v1/events/batch", json={"events": batch}, headers=headers)
                        status = r.status_code
                    except httpx.HTTPError:
                        status = 0
                    with self.lock:
                        self.statuses[status] += 1
                        if status == 202:
                            body = r.json()
                            ok = set(body["accepted"]) | set(body["duplicates"])
                            self.accepted |= ok
                            self.notes |= {e["event_id"] for e in batch if e["type"] == "incident.update"} & ok
                            self.rejected += len(body["rejected"])
                            self.ended = time.monotonic()
                            break
                        self.failures.append(time.monotonic())
                    if time.monotonic() > deadline:
                        with self.lock:
                            self.gave_up += len(batch)
                        break
                    time.sleep(0.3)

    def start(self) -> None:
        self.started = time.monotonic()
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(LOAD_S + 240)
        assert not any(t.is_alive() for t in self.threads), "a poster could not get its batches accepted"

    @property
    def rate(self) -> float:
        return len(self.accepted) / max(1e-9, self.ended - self.started)

    def failure_window(self, since: float) -> float:
        """Seconds from `since` to the last failed attempt after it (0 when none failed)."""
        after = [t for t in self.failures if t >= since]
        return max(after) - since if after else 0.0


def _rows(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return list(c.execute(text(sql)).all())
    finally:
        engine.dispose()


def _json(v: Any) -> dict[str, Any]:
    return dict(json.loads(v) if isinstance(v, str) else v)


class Run:
    """One test's system on the cluster: its topics (RF 3), dispatch and ingest, TPS, a device."""

    def __init__(self, workdir: Path, cluster: Cluster, database_url: str | None, dispatchers: int) -> None:
        env = {
            "SIAGA_KAFKA_REPLICATION_FACTOR": "3",
            "SIAGA_DEVICE_RATE_PER_S": "100000",
            "SIAGA_DEVICE_BURST": "100000",
            "SIAGA_ACCESS_LOG": "false",
        }
        self.cluster = cluster
        self.sysm = Procs(workdir, kafka=cluster.bootstrap, env=env, database_url=database_url)
        self.db = self.sysm.env["SIAGA_DATABASE_URL"]
        self.prefix = self.sysm.env["SIAGA_TOPIC_PREFIX"]
        try:
            self._start(dispatchers)
        except BaseException:
            self.sysm.stop()
            raise

    def _start(self, dispatchers: int) -> None:
        self.cluster.siaga_topics(self.prefix)
        names = ["dispatch", "ingest"] + (["dispatch-b"] if dispatchers == 2 else [])
        for name in names:
            self.sysm.spawn(name)
        for name in names:
            self.sysm.wait_healthy(name, timeout=120)
        rows = tps_rows(N_TPS)
        for i, row in enumerate(rows):  # one TPS a kecamatan: no spread, every incident stands alone
            row["kecamatan"] = f"Kec{i:04d}"
        self.sysm.import_tps(rows)
        self.tps_ids = [r["tps_id"] for r in rows]
        self.device = self.sysm.device(self.tps_ids)
        self.report_of = self._seed()

    def _seed(self) -> dict[str, str]:
        """One report per TPS (the incidents the notes go to), applied before the load starts."""
        now = datetime.now(UTC).isoformat()
        report_of = {tps: str(uuid.uuid4()) for tps in self.tps_ids}
        batch = [
            {
                "event_id": report_of[tps],
                "type": "incident.reported",
                "tps_id": tps,
                "occurred_at": now,
                "payload": {"description": "Kotak suara belum tiba", "category": "logistics"},
            }
            for tps in self.tps_ids
        ]
        r = httpx.post(
            self.sysm.urls["ingest"] + "/v1/events/batch",
            json={"events": batch},
            headers={"Authorization": f"Bearer {self.device}"},
            timeout=60,
        )
        assert r.status_code == 202 and len(r.json()["accepted"]) == N_TPS, r.text
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if _rows(self.db, "SELECT count(*) FROM incidentreport")[0][0] >= N_TPS:
                return report_of
            time.sleep(0.5)
        raise TimeoutError("the seeded reports were not applied")

    def load(self, fault: Callable[[Load], dict[str, Any]]) -> tuple[Load, dict[str, Any]]:
        """The load, with `fault` called FAULT_AT seconds in (it returns figures to report)."""
        load = Load(self.sysm.urls["ingest"], self.device, self.report_of)
        load.start()
        time.sleep(FAULT_AT)
        figures = fault(load)
        load.join()
        return load, figures

    def count(self, load: Load, timeout: float = 300.0) -> dict[str, Any]:
        """Waits until dispatch applied what was accepted (or stopped progressing); lost and doubled."""
        want = len(load.accepted) + N_TPS
        end, last, last_change = time.monotonic() + timeout, -1, time.monotonic()
        drained_at = time.monotonic()
        while time.monotonic() < end:
            n = _rows(self.db, "SELECT count(*) FROM processedevent")[0][0]
            if n >= want:
                break
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > 60:
                break  # nothing applied for a minute: count what is there
            time.sleep(1.0)
        drain_s = time.monotonic() - drained_at
        time.sleep(1.0)  # any late double is counted too
        applied = {r[0] for r in _rows(self.db, "SELECT event_id FROM processedevent")}
        notes = Counter(
            _json(r[0]).get("text") for r in _rows(self.db, "SELECT detail FROM timelineentry WHERE action = 'note'")
        )
        incidents = _rows(self.db, "SELECT tps_id, reports FROM incident WHERE tps_id IS NOT NULL")
        per_tps = Counter(r[0] for r in incidents)
        lost_ids = (load.accepted - applied) | {n for n in load.notes if notes[n] == 0}
        doubled = (
            sum(c - 1 for c in notes.values() if c > 1)
            + sum(r[1] - 1 for r in incidents if r[1] > 1)
            + sum(c - 1 for c in per_tps.values() if c > 1)
        )
        engine = create_engine(self.db)
        try:
            audit = verify(engine)  # every timeline's hash chain: no entry lost, doubled or overwritten
        finally:
            engine.dispose()
        return {
            "audit_ok": audit.ok,
            "events": len(load.accepted),
            "notes": len(load.notes),
            "rate": round(load.rate, 1),
            "lost": len(lost_ids),
            "doubled": doubled,
            "rejected": load.rejected,
            "gave_up": load.gave_up,
            "statuses": dict(load.statuses),
            "drain_s": round(drain_s, 1),
            "lost_sample": sorted(lost_ids)[:5],
        }

    def stop(self) -> None:
        self.sysm.stop()


def _report(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: " + json.dumps(figures, sort_keys=True))
    out = os.environ.get("SIAGA_CLUSTER_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": name, "at": datetime.now(UTC).isoformat(), **figures}, sort_keys=True) + "\n")


def _check(load: Load, figures: dict[str, Any]) -> None:
    assert figures["gave_up"] == 0 and figures["rejected"] == 0, figures
    assert figures["rate"] >= MIN_RATE, f"load too light: {figures['rate']} events/s"
    assert LOAD_S >= 60 or os.environ.get("SIAGA_CLUSTER_LOAD_S"), "at least 60 s of load"
    assert (figures["lost"], figures["doubled"]) == (0, 0), figures
    assert figures["audit_ok"], "siaga audit verify: a timeline's hash chain is broken"


@pytest.fixture
def run(tmp_path: Path, kafka_cluster: Cluster) -> Iterator[Callable[..., Run]]:  # noqa: F811
    runs: list[Run] = []
    kafka_cluster.await_brokers(3)

    def make(database_url: str | None = None, dispatchers: int = 1) -> Run:
        r = Run(tmp_path, kafka_cluster, database_url, dispatchers)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.stop()
    for n in list(kafka_cluster.partitioned):
        kafka_cluster.heal(n)
    for n, node in kafka_cluster.nodes.items():  # a test that failed mid-fault leaves the next a whole cluster
        if node.proc is None or node.proc.poll() is not None:
            kafka_cluster.start_node(n)


def _busiest(cluster: Cluster, topic: str) -> tuple[int, int, dict[int, int]]:
    """The node leading most partitions of `topic` (of a tie, the active controller if it is one of
    them: the harder case), the controller, and the leader counts."""
    leaders, controller = cluster.leaders(topic), cluster.controller()
    most = max(leaders.values())
    tied = [n for n in leaders if leaders[n] == most]
    return (controller if controller in tied else tied[0]), controller, leaders


def test_kill_9_of_the_broker_leading_most_field_event_partitions(run: Any, kafka_cluster: Cluster) -> None:  # noqa: F811
    r = run()
    topic = r.prefix + topics.FIELD_EVENTS

    def fault(load: Load) -> dict[str, Any]:
        victim, controller, leaders = _busiest(kafka_cluster, topic)
        at = time.monotonic()
        kafka_cluster.kill(victim)
        time.sleep(10.0)  # the cluster runs on two brokers meanwhile
        kafka_cluster.start_node(victim, wait=False)
        kafka_cluster.await_full_isr(topic, timeout=150)
        return {
            "victim": victim,
            "controller_before": controller,
            "leaders_before": leaders,
            "leaders_after": kafka_cluster.leaders(topic),
            "client_errors_s": round(load.failure_window(at), 1),
            "isr_full_after_kill_s": round(time.monotonic() - at, 1),
        }

    load, extra = r.load(fault)
    figures = {**r.count(load), **extra}
    _report("kill -9 of the busiest broker", figures)
    _check(load, figures)


def test_kill_9_of_one_of_two_dispatch_instances(run: Any, kafka_cluster: Cluster) -> None:  # noqa: F811
    r = run(dispatchers=2)
    survivor_log = r.sysm.workdir / "dispatch-b.log"

    def assigned_lines() -> int:  # the survivor's field-events consumer told of a new assignment
        lines = survivor_log.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if "partitions assigned" in line and topics.FIELD_EVENTS in line)

    def fault(load: Load) -> dict[str, Any]:
        before = assigned_lines()
        at = time.monotonic()
        r.sysm.kill("dispatch")
        rebalanced = None
        while time.monotonic() - at < 60:
            if assigned_lines() > before:
                rebalanced = time.monotonic() - at
                break
            time.sleep(0.2)
        time.sleep(max(0.0, 10.0 - (time.monotonic() - at)))
        r.sysm.restart("dispatch")  # and back: a second rebalance, under load
        return {
            "survivor_took_over_s": None if rebalanced is None else round(rebalanced, 1),
            "client_errors_s": round(load.failure_window(at), 1),
        }

    load, extra = r.load(fault)
    figures = {**r.count(load), **extra}
    _report("kill -9 of one of two dispatch instances", figures)
    assert figures["survivor_took_over_s"] is not None, "the survivor got the dead instance's partitions"
    _check(load, figures)


def test_network_partition_of_one_broker(run: Any, kafka_cluster: Cluster) -> None:  # noqa: F811
    r = run()
    topic = r.prefix + topics.FIELD_EVENTS

    def fault(load: Load) -> dict[str, Any]:
        victim, controller, leaders = _busiest(kafka_cluster, topic)
        at = time.monotonic()
        kafka_cluster.partition(victim)
        time.sleep(20.0)
        during = kafka_cluster.leaders(topic)
        kafka_cluster.heal(victim)
        healed = time.monotonic()
        isr_s = kafka_cluster.await_full_isr(topic, timeout=120)
        return {
            "victim": victim,
            "controller_before": controller,
            "partitioned_s": round(healed - at, 1),
            "leaders_before": leaders,
            "leaders_during": during,
            "client_errors_s": round(load.failure_window(at), 1),
            "isr_full_after_heal_s": round(isr_s, 1),
        }

    load, extra = r.load(fault)
    figures = {**r.count(load), **extra}
    _report("network partition of the busiest broker", figures)
    assert figures["leaders_during"][figures["victim"]] == 0, "leadership moved off the isolated broker"
    _check(load, figures)


def _postmaster_tree(pg: PgServer) -> list[int]:
    """The postmaster and its children (the whole server)."""
    pid = int(Path(pg.data, "postmaster.pid").read_text().split()[0])
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


@pytest.mark.postgres
def test_postgres_killed_with_kill_9_and_restarted(run: Any, kafka_cluster: Cluster) -> None:  # noqa: F811
    pg = PgServer()
    pg.start()
    try:
        r = run(database_url=pg.create_database())

        def fault(load: Load) -> dict[str, Any]:
            at = time.monotonic()
            for pid in _postmaster_tree(pg):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(3.0)
            pg.start()  # crash recovery from the WAL
            return {"restarted_after_s": round(time.monotonic() - at, 1), "_at": at}

        load, extra = r.load(fault)
        at = extra.pop("_at")
        extra["client_errors_s"] = round(load.failure_window(at), 1)
        figures = {**r.count(load), **extra}
        _report("PostgreSQL kill -9 and restart", figures)
        assert figures["statuses"].get(503, 0) + figures["statuses"].get(0, 0) > 0, "the crash was seen by clients"
        _check(load, figures)
    finally:
        pg.remove()
