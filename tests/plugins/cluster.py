"""A 3-broker Kafka cluster (KRaft, combined broker+controller nodes) on loopback, every link through a
TCP proxy the tests can cut, for the cluster fault tests (tests/faults/test_cluster.py).

Layout (see docs/kafka.md, "The 3-broker cluster"):

- three JVMs, each `process.roles=broker,controller` (a static quorum of three voters), replication
  factor 3 and `min.insync.replicas=2` for every topic, internal ones included;
- no link goes straight from one process to another: clients reach node N only through N's client
  proxy (its advertised `CLIENT` listener is the proxy port); node A reaches node B's replication
  listener and controller listener only through an A->B proxy of their own (per-node
  `controller.quorum.voters`, and one inter-broker listener name per source node, `INTER_<A>`, that
  every node advertises at a proxy port). So `partition(N)` isolates N from clients and peers in
  both directions, like a pulled cable: the proxy then drops every byte (a blackhole, not a refused
  connection) until `heal(N)`, which closes the blackholed connections;
- the proxy is a separate Python process (`python -m tests.plugins.cluster proxy SPEC`) driven by
  lines on its stdin, so the test process's own load does not slow the traffic.

`Cluster.kill(n)` is `kill -9`; `Cluster.start_node(n)` restarts it on its data. `Cluster.stop()`
stops the nodes and the proxy and removes the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.kafka import ROOT, _free_port

NODES = (1, 2, 3)
KAFKA_DIR = ROOT / "infra" / "kafka"
HEAP = os.environ.get("SIAGA_CLUSTER_HEAP", "384m")


def _kafka_version() -> str:
    pom = (KAFKA_DIR / "pom.xml").read_text()
    return pom.split("<kafka.version>", 1)[1].split("</kafka.version>", 1)[0].strip()


def jars_dir() -> Path:
    """The jar cache of infra/kafka/broker.sh (fetched there on first use)."""
    configured = os.environ.get("SIAGA_KAFKA_JARS")
    path = Path(configured) if configured else Path.home() / ".cache" / "siaga" / f"kafka-{_kafka_version()}" / "libs"
    if not (path / ".siaga-complete").exists():
        subprocess.run(["bash", str(KAFKA_DIR / "broker.sh"), "fetch"], check=True, timeout=600)
    return path


# Settings of every node beyond the listeners: a 3-node cluster that survives one node, with failure
# detection fast enough for tests on a shared 2-core machine (not so fast that a GC pause fences a node).
CLUSTER_SETTINGS = """
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
auto.create.topics.enable=false
num.partitions=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
replica.lag.time.max.ms=10000
replica.socket.timeout.ms=10000
controller.quorum.request.timeout.ms=2000
num.network.threads=2
num.io.threads=3
num.replica.fetchers=1
log.retention.hours=168
"""


@dataclass
class Route:
    """One proxy: listen -> target, cut while any node of `nodes` is partitioned."""

    listen: int
    target: int
    nodes: tuple[int, ...]


@dataclass
class Node:
    node_id: int
    home: Path
    client: int  # its own CLIENT listener (clients never use it directly)
    client_proxy: int  # what it advertises to clients
    controller: int  # its own CONTROLLER listener
    inter: dict[int, int] = field(default_factory=dict)  # INTER_<src> listener port, per source node
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.home / "server.properties"


class Cluster:
    """Three combined KRaft nodes behind a cuttable proxy; see the module docstring."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="siaga-cluster-"))
        self.jars = jars_dir()
        self.nodes: dict[int, Node] = {}
        for n in NODES:
            self.nodes[n] = Node(
                node_id=n,
                home=self.root / f"node{n}",
                client=_free_port(),
                client_proxy=_free_port(),
                controller=_free_port(),
                inter={src: _free_port() for src in NODES},
            )
        # inter_proxy[(src, dst)]: the port src's replica fetchers use to reach dst (dst's INTER_<src>);
        # ctl_proxy[(src, dst)]: the port src uses to reach dst's controller listener.
        self.inter_proxy = {(s, d): _free_port() for s in NODES for d in NODES if s != d}
        self.ctl_proxy = {(s, d): _free_port() for s in NODES for d in NODES if s != d}
        self.routes = [Route(self.nodes[n].client_proxy, self.nodes[n].client, (n,)) for n in NODES]
        self.routes += [Route(p, self.nodes[d].inter[s], (s, d)) for (s, d), p in self.inter_proxy.items()]
        self.routes += [Route(p, self.nodes[d].controller, (s, d)) for (s, d), p in self.ctl_proxy.items()]
        self.proxy: subprocess.Popen[str] | None = None
        self.partitioned: set[int] = set()

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.nodes[n].client_proxy}" for n in NODES)

    # -- configuration

    def _config(self, n: int) -> str:
        node = self.nodes[n]
        voters = ",".join(
            f"{v}@127.0.0.1:{self.nodes[v].controller if v == n else self.ctl_proxy[(n, v)]}" for v in NODES
        )
        listeners = [f"CLIENT://127.0.0.1:{node.client}", f"CONTROLLER://127.0.0.1:{node.controller}"]
        listeners += [f"INTER_{s}://127.0.0.1:{node.inter[s]}" for s in NODES]
        advertised = [f"CLIENT://127.0.0.1:{node.client_proxy}"]
        advertised += [f"INTER_{s}://127.0.0.1:{node.inter[s] if s == n else self.inter_proxy[(s, n)]}" for s in NODES]
        protocols = ",".join(f"{name}:PLAINTEXT" for name in ["CLIENT", "CONTROLLER", *(f"INTER_{s}" for s in NODES)])
        return "\n".join(
            [
                "# Written by tests/plugins/cluster.py: one node of the 3-node test cluster.",
                "process.roles=broker,controller",
                f"node.id={n}",
                f"controller.quorum.voters={voters}",
                f"listeners={','.join(listeners)}",
                f"advertised.listeners={','.join(advertised)}",
                f"inter.broker.listener.name=INTER_{n}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={protocols}",
                f"log.dirs={node.home / 'data'}",
                CLUSTER_SETTINGS,
            ]
        )

    def _java(self, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2-tool.xml'}",
            "-cp",
            f"{self.jars}/*",
            *args,
        ]

    # -- lifecycle

    def start(self, timeout: float = 180.0) -> None:
        self._start_proxy()
        cluster_id = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"), check=True, capture_output=True, text=True
        ).stdout.strip()
        for n, node in self.nodes.items():
            (node.home / "logs").mkdir(parents=True, exist_ok=True)
            node.conf.write_text(self._config(n))
        formats = [
            subprocess.Popen(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.conf)),
                stdout=open(node.home / "logs" / "format.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            for node in self.nodes.values()
        ]
        for p in formats:
            if p.wait(120) != 0:
                raise RuntimeError(f"StorageTool format failed, see {self.root}/node*/logs/format.log")
        for n in NODES:
            self.start_node(n, wait=False)
        self.await_brokers(3, timeout)

    def start_node(self, n: int, *, wait: bool = True, timeout: float = 120.0) -> float:
        """Start (or restart, on its data) node n; with wait, the seconds until the cluster saw 3 brokers."""
        node = self.nodes[n]
        started = time.monotonic()
        log = open(node.home / "logs" / "stdout.log", "ab")  # noqa: SIM115  (kept open for the child)
        node.proc = subprocess.Popen(
            [
                "java",
                f"-Xms{HEAP}",
                f"-Xmx{HEAP}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dkafka.logs.dir={node.home / 'logs'}",
                f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}",
                "-cp",
                f"{self.jars}/*",
                "kafka.Kafka",
                str(node.conf),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if wait:
            self.await_brokers(3, timeout)
        return time.monotonic() - started

    def kill(self, n: int) -> None:
        """kill -9 of node n (broker and controller)."""
        proc = self.nodes[n].proc
        assert proc is not None, f"node {n} is not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        self.nodes[n].proc = None

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 20 s) and the proxy; remove the data."""
        procs = [node.proc for node in self.nodes.values() if node.proc is not None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        # A node waits for the quorum to shut down cleanly: past the deadline, kill what is left.
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
        for node in self.nodes.values():
            node.proc = None
        if self.proxy is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proxy.kill()
            self.proxy.wait(10)
            self.proxy = None
        if not os.environ.get("SIAGA_CLUSTER_KEEP"):  # set it to keep the logs and data for a post-mortem
            shutil.rmtree(self.root, ignore_errors=True)

    # -- the proxy

    def _start_proxy(self) -> None:
        spec = json.dumps([[r.listen, r.target, list(r.nodes)] for r in self.routes])
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.plugins.cluster", "proxy", spec],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.root / "proxy.log", "ab"),  # noqa: SIM115
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._proxy_answer()

    def _proxy_answer(self) -> str:
        assert self.proxy is not None and self.proxy.stdout is not None
        line = self.proxy.stdout.readline().strip()
        if not line.startswith("ok"):
            raise RuntimeError(f"proxy said {line!r}; see {self.root / 'proxy.log'}")
        return line

    def _proxy(self, command: str) -> str:
        assert self.proxy is not None and self.proxy.stdin is not None
        self.proxy.stdin.write(command + "\n")
        self.proxy.stdin.flush()
        return self._proxy_answer()

    def partition(self, n: int) -> None:
        """Isolate node n from clients and from the other nodes, both ways (every byte dropped)."""
        self._proxy(f"cut {n}")
        self.partitioned.add(n)

    def heal(self, n: int) -> None:
        """End node n's partition: the blackholed connections are closed, new ones go through."""
        self._proxy(f"heal {n}")
        self.partitioned.discard(n)

    def proxy_stats(self) -> dict[str, Any]:
        return dict(json.loads(self._proxy("stats")[3:]))

    # -- asking the cluster

    async def _admin(self) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        await admin.start()
        return admin

    def await_brokers(self, count: int, timeout: float = 120.0) -> None:
        """Until the cluster names `count` live brokers (and every node process still runs)."""

        async def brokers() -> int:
            admin = await self._admin()
            try:
                described = await asyncio.wait_for(admin.describe_cluster(), 5)
                return len(described.get("brokers") or [])
            finally:
                await admin.close()

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for n, node in self.nodes.items():
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"node {n} exited with {node.proc.returncode}; see {node.home}/logs")
            try:
                if asyncio.run(brokers()) >= count:
                    return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"the cluster did not show {count} brokers within {timeout}s (last error {last!r})")

    def controller(self) -> int:
        """The node id the cluster names as its active controller."""

        async def run() -> int:
            admin = await self._admin()
            try:
                return int((await asyncio.wait_for(admin.describe_cluster(), 10))["controller_id"])
            finally:
                await admin.close()

        return asyncio.run(run())

    def describe(self, topic: str) -> list[dict[str, Any]]:
        """The partitions of `topic`: partition, leader, replicas, isr."""

        async def run() -> list[dict[str, Any]]:
            admin = await self._admin()
            try:
                [described] = await admin.describe_topics([topic])
                return sorted(
                    (
                        {"partition": p["partition"], "leader": p["leader"], "replicas": p["replicas"], "isr": p["isr"]}
                        for p in described["partitions"]
                    ),
                    key=lambda p: p["partition"],
                )
            finally:
                await admin.close()

        return asyncio.run(run())

    def leaders(self, topic: str) -> dict[int, int]:
        """node id -> how many partitions of `topic` it leads."""
        counts = dict.fromkeys(NODES, 0)
        for p in self.describe(topic):
            if p["leader"] in counts:
                counts[p["leader"]] += 1
        return counts

    def await_full_isr(self, topic: str, timeout: float = 120.0) -> float:
        """Seconds until every partition of `topic` has all three replicas in sync again."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if all(len(p["isr"]) == 3 for p in self.describe(topic)):
                    return time.monotonic() - started
            except Exception:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{topic}: ISR not back to 3 within {timeout}s: {self.describe(topic)}")

    def create_topics(self, partitions: Mapping[str, int], configs: Mapping[str, Mapping[str, str]]) -> None:
        """Create the topics with replication factor 3 and min.insync.replicas 2."""
        from aiokafka.admin import NewTopic

        async def run() -> None:
            admin = await self._admin()
            try:
                new = [
                    NewTopic(
                        name,
                        num_partitions=count,
                        replication_factor=3,
                        topic_configs={"min.insync.replicas": "2", **configs.get(name, {})},
                    )
                    for name, count in partitions.items()
                ]
                response = await admin.create_topics(new, timeout_ms=30_000)
                for err in response.topic_errors:
                    if err[1] not in (0, 36):  # 36: exists already
                        raise RuntimeError(f"could not create topic {err[0]}: error {err[1]}")
            finally:
                await admin.close()

        asyncio.run(run())
        deadline = time.monotonic() + 60
        for name in partitions:
            while not all(p["leader"] >= 0 and len(p["isr"]) == 3 for p in self.describe(name)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name} has no full ISR: {self.describe(name)}")
                time.sleep(0.2)

    def siaga_topics(self, prefix: str) -> None:
        """The four topics of the services (siaga/runtime.py's partition counts), RF 3."""
        from siaga import topics
        from siaga.bus.kafka import DEFAULT_TOPIC_CONFIGS
        from siaga.settings import Settings

        s = Settings()
        counts = {
            topics.FIELD_EVENTS: s.field_events_partitions,
            topics.INCIDENT_UPDATES: s.updates_partitions,
            topics.ALERTS: s.alerts_partitions,
            topics.DEAD_LETTER: 1,
        }
        self.create_topics(
            {prefix + name: n for name, n in counts.items()},
            {prefix + name: c for name, c in DEFAULT_TOPIC_CONFIGS.items()},
        )


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[Cluster]:
    """Three brokers (RF 3, min ISR 2) behind a cuttable proxy, shared by a module's tests."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------------------- the proxy


class _Conn:
    """One proxied connection; `dead` once a byte was dropped (the stream is broken from then on)."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dead = False

    def close(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.close()


class _Proxy:
    """Forwards every route; a cut route drops what it reads (both ways) until healed."""

    def __init__(self, routes: list[tuple[int, int, list[int]]]) -> None:
        self.routes = routes
        self.cut: set[int] = set()  # partitioned nodes
        self.conns: dict[int, set[_Conn]] = {i: set() for i in range(len(routes))}
        self.bytes = 0
        self.dropped = 0

    def _is_cut(self, nodes: list[int]) -> bool:
        return any(n in self.cut for n in nodes)

    async def serve(self) -> None:
        for i, (listen, target, nodes) in enumerate(self.routes):
            await asyncio.start_server(self._handler(i, target, nodes), "127.0.0.1", listen, reuse_address=True)
        print("ok", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            verb, _, arg = line.partition(" ")
            if verb == "cut":
                self.cut.add(int(arg))
            elif verb == "heal":
                self.cut.discard(int(arg))
                for i, (_listen, _target, nodes) in enumerate(self.routes):
                    if not self._is_cut(nodes):
                        for conn in list(self.conns[i]):
                            if conn.dead:  # bytes were dropped: end it, the peers reconnect
                                conn.close()
            elif verb == "stats":
                stats = {"bytes": self.bytes, "dropped": self.dropped, "cut": sorted(self.cut)}
                print("ok " + json.dumps(stats), flush=True)
                continue
            print("ok", flush=True)

    def _handler(
        self, i: int, target: int, nodes: list[int]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._conn(i, reader, writer, target, nodes)

        return handle

    async def _conn(
        self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int, nodes: list[int]
    ) -> None:
        conn = _Conn(writer)
        self.conns[i].add(conn)
        try:
            if self._is_cut(nodes):
                # A blackhole: accepted (on loopback the kernel answers the SYN anyway), never answered.
                conn.dead = True
                while data := await reader.read(65536):
                    self.dropped += len(data)
                return
            up_reader, conn.upstream = await asyncio.open_connection("127.0.0.1", target)
            await asyncio.gather(
                self._pump(reader, conn.upstream, nodes, conn), self._pump(up_reader, writer, nodes, conn)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.conns[i].discard(conn)
            conn.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, nodes: list[int], conn: _Conn) -> None:
        try:
            while data := await src.read(65536):
                if conn.dead or self._is_cut(nodes):
                    conn.dead = True
                    self.dropped += len(data)
                    continue
                self.bytes += len(data)
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            if not conn.dead:  # a blackholed connection stays open (silent) until healed
                dst.close()


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "proxy":
        with contextlib.suppress(KeyboardInterrupt):
            routes = [
                (int(listen), int(target), [int(n) for n in nodes]) for listen, target, nodes in json.loads(argv[1])
            ]
            asyncio.run(_Proxy(routes).serve())
        return 0
    print("usage: python -m tests.plugins.cluster proxy SPEC_JSON", file=sys.stderr)
    return 64


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
