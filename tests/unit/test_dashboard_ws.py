"""The dashboard over a real uvicorn server: auth, snapshot, deltas, resume, back-pressure, fan-out."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlmodel import Session, select
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.uri import parse_uri

from services.dashboard.app import Dashboard, create_app
from siaga import topics
from siaga.auth import Role, issue_api_token
from siaga.bus.memory import MemoryBus
from siaga.logs import install_token_redaction
from siaga.models import ApiToken
from siaga.runtime import Context, make_context
from siaga.settings import Settings
from tests.plugins.browser import serve

NOW = datetime(2024, 11, 27, 7, 0, tzinfo=UTC)
TIMEOUT = 10.0


def incident(ident: str, version: int = 1, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ident,
        "tps_id": "TPS-001",
        "tps_name": "TPS 001 Cikande",
        "kecamatan": "Cikande",
        "category": "crowd",
        "severity": "medium",
        "level": 0,
        "status": "open",
        "reports": 1,
        "opened_at": "2024-11-27T07:00:00Z",
        "updated_at": "2024-11-27T07:00:05Z",
        "resolved_at": None,
        "last_alert_failure": None,
        "version": version,
    }
    body.update(fields)
    return body


def tps(ident: str, version: int = 1, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tps_id": ident,
        "name": ident,
        "kecamatan": "Cikande",
        "desa": "Cikande",
        "lat": -6.2,
        "lon": 106.3,
        "state": "normal",
        "assigned": 2,
        "checked_in": 1,
        "version": version,
    }
    body.update(fields)
    return body


async def publish_incidents(bus: MemoryBus, items: list[dict[str, Any]]) -> None:
    await bus.publish_many(
        topics.INCIDENT_UPDATES, [(i["id"], orjson.dumps({"type": "incident", "incident": i})) for i in items]
    )


async def publish_tps(bus: MemoryBus, item: dict[str, Any]) -> None:
    await bus.publish(topics.INCIDENT_UPDATES, f"tps:{item['tps_id']}", orjson.dumps({"type": "tps", "tps": item}))


def make_ctx(tmp_path: Path, bus: MemoryBus, **settings: Any) -> Context:
    return make_context(Settings(database_url=f"sqlite:///{tmp_path / 'siaga.db'}", **settings), bus=bus)


def dashboard_of(ctx: Context) -> Dashboard:
    dash = ctx.extras["dashboard"]
    assert isinstance(dash, Dashboard)
    return dash


async def until(predicate: Callable[[], bool], within_s: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def recv(ws: ClientConnection, within_s: float = TIMEOUT) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), within_s)
    message = orjson.loads(frame)
    assert isinstance(message, dict)
    return message


async def recv_deltas(ws: ClientConnection, after: int, count: int, kind: str = "incident") -> list[dict[str, Any]]:
    """Frames until `count` deltas of `kind` arrived; asserts every seq follows the one before."""
    got: list[dict[str, Any]] = []
    expected = after + 1
    while len([m for m in got if m["type"] == kind]) < count:
        message = await recv(ws)
        assert message["type"] in ("incident", "tps", "stats"), message["type"]
        assert message["seq"] == expected, (message["seq"], expected)
        expected += 1
        got.append(message)
    return got


@asynccontextmanager
async def dashboard(
    tmp_path: Path, bus: MemoryBus | None = None, **settings: Any
) -> AsyncIterator[tuple[str, Context]]:
    """A dashboard on a real server; yields ("127.0.0.1:port", its context)."""
    options = {k: settings.pop(k) for k in list(settings) if k.endswith("_s")}
    ctx = make_ctx(tmp_path, bus or MemoryBus(), **settings)
    async with serve(create_app(ctx, **options)) as address:
        yield address, ctx


def viewer_token(ctx: Context, role: Role = Role.VIEWER) -> str:
    return issue_api_token(ctx.engine, name=f"test-{role.value}", role=role, now=NOW)


async def test_no_or_bad_token_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async with dashboard(tmp_path) as (address, _ctx):
        for query in ("", "?token=nope", "?token="):
            async with connect(f"ws://{address}/ws{query}") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_snapshot_first_then_contiguous_deltas(tmp_path: Path) -> None:
    bus = MemoryBus()
    async with dashboard(tmp_path, bus, stats_interval_s=0.05) as (address, ctx):
        await publish_tps(bus, tps("TPS-001"))
        await publish_incidents(bus, [incident("INC-1")])
        await until(lambda: len(dashboard_of(ctx).hub.incidents) == 1)
        async with connect(f"ws://{address}/ws?token={viewer_token(ctx)}", max_size=None) as ws:
            snap = await recv(ws)
            assert snap["type"] == "snapshot"
            assert [i["id"] for i in snap["incidents"]] == ["INC-1"]
            assert [t["tps_id"] for t in snap["tps"]] == ["TPS-001"]
            assert snap["stats"]["incidents"]["open"] == 1
            await publish_incidents(bus, [incident(f"INC-{n}") for n in range(2, 52)])
            deltas = await recv_deltas(ws, snap["seq"], 50)
            # different keys may sit on different partitions: a set, not an order
            assert {m["incident"]["id"] for m in deltas if m["type"] == "incident"} == {
                f"INC-{n}" for n in range(2, 52)
            }
            # the paced stats delta follows with the new totals
            while True:
                message = await recv(ws)
                if message["type"] == "stats" and message["stats"]["incidents"]["open"] == 51:
                    break


async def test_older_or_equal_versions_produce_no_delta(tmp_path: Path) -> None:
    bus = MemoryBus()
    async with (
        dashboard(tmp_path, bus, stats_interval_s=3600) as (address, ctx),
        connect(f"ws://{address}/ws?token={viewer_token(ctx)}", max_size=None) as ws,
    ):
        snap = await recv(ws)
        await publish_incidents(bus, [incident("INC-1", 2, status="escalated", level=1)])
        await publish_incidents(bus, [incident("INC-1", 2), incident("INC-1", 1)])
        await publish_incidents(bus, [incident("INC-1", 3, status="acknowledged", level=1)])
        deltas = await recv_deltas(ws, snap["seq"], 2)
        assert [(m["incident"]["version"], m["incident"]["status"]) for m in deltas] == [
            (2, "escalated"),
            (3, "acknowledged"),
        ]


async def test_resume_replays_missed_deltas_and_unknown_seq_gets_a_snapshot(tmp_path: Path) -> None:
    bus = MemoryBus()
    async with dashboard(tmp_path, bus, stats_interval_s=3600) as (address, ctx):
        token = viewer_token(ctx)
        await publish_incidents(bus, [incident("INC-0")])
        await until(lambda: len(dashboard_of(ctx).hub.incidents) == 1)
        async with connect(f"ws://{address}/ws?token={token}", max_size=None) as ws:
            seen = (await recv(ws))["seq"]
        # away for a moment: five changes happen
        await publish_incidents(bus, [incident(f"INC-{n}") for n in range(1, 6)])
        await until(lambda: dashboard_of(ctx).hub.seq == seen + 5)
        async with connect(f"ws://{address}/ws?token={token}&since={seen}", max_size=None) as ws:
            replay = await recv_deltas(ws, seen, 5)
            assert {m["incident"]["id"] for m in replay} == {f"INC-{n}" for n in range(1, 6)}
            await publish_incidents(bus, [incident("INC-6")])
            live = await recv_deltas(ws, seen + 5, 1)
            assert live[0]["incident"]["id"] == "INC-6"
        current = dashboard_of(ctx).hub.seq
        for since in (str(current + 1000), str(dashboard_of(ctx).hub.first_seq - 1), "garbage"):
            async with connect(f"ws://{address}/ws?token={token}&since={since}", max_size=None) as ws:
                snap = await recv(ws)
                assert snap["type"] == "snapshot" and snap["seq"] == current
                assert len(snap["incidents"]) == 7


async def test_resume_after_the_replay_buffer_moved_on_gets_a_snapshot(tmp_path: Path) -> None:
    bus = MemoryBus()
    async with dashboard(tmp_path, bus, ws_replay_buffer=3, stats_interval_s=3600) as (address, ctx):
        token = viewer_token(ctx)
        async with connect(f"ws://{address}/ws?token={token}", max_size=None) as ws:
            seen = (await recv(ws))["seq"]
        await publish_incidents(bus, [incident(f"INC-{n}") for n in range(5)])
        await until(lambda: dashboard_of(ctx).hub.seq == seen + 5)
        async with connect(f"ws://{address}/ws?token={token}&since={seen}", max_size=None) as ws:
            snap = await recv(ws)
            assert snap["type"] == "snapshot" and len(snap["incidents"]) == 5


class StalledClient:
    """A WebSocket client that stops reading after the handshake, with a tiny receive buffer
    (websockets' own client reads ahead into large buffers, hiding back-pressure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[dict[str, Any]] = []

    async def open(self) -> None:
        uri = parse_uri(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # set before connect: no autotuning
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.writer is not None
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    async def recv(self) -> dict[str, Any]:
        """The next text frame, reading the socket only now."""
        assert self.reader is not None
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            assert chunk, "the server closed the connection"
            self.protocol.receive_data(chunk)
            for event in self.protocol.events_received():
                if isinstance(event, WsFrame) and event.opcode is Opcode.TEXT:
                    self.pending.append(orjson.loads(event.data))
            self._flush()  # pongs
        return self.pending.pop(0)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def test_a_client_that_never_reads_does_not_slow_another(tmp_path: Path) -> None:
    bus = MemoryBus()
    n = 4000
    async with dashboard(tmp_path, bus, ws_client_queue=1000, stats_interval_s=3600) as (address, ctx):
        token = viewer_token(ctx)
        slow = StalledClient(f"ws://{address}/ws?token={token}")
        await slow.open()
        try:
            async with connect(f"ws://{address}/ws?token={token}", max_size=None) as fast:
                start = (await recv(fast))["seq"]
                reader = asyncio.create_task(recv_deltas(fast, start, n))
                padding = "x" * 4000  # big frames fill the slow client's buffers quickly
                began = asyncio.get_running_loop().time()
                for chunk in range(0, n, 100):
                    await publish_incidents(
                        bus, [incident(f"INC-{i}", description=padding) for i in range(chunk, chunk + 100)]
                    )
                    await asyncio.sleep(0.005)  # a brisk but real-world pace
                deltas = await asyncio.wait_for(reader, 30)
                assert len(deltas) == n
                assert asyncio.get_running_loop().time() - began < 20
            # The slow client got its first snapshot, then at some point fell behind and was sent
            # a fresh snapshot instead of the deltas it could not take.
            first = await slow.recv()
            assert first["type"] == "snapshot"
            latest = first
            while latest["seq"] < start + n:
                latest = await slow.recv()
                if latest["type"] == "snapshot":
                    break
            assert latest["type"] == "snapshot", "the lagging client never got a fresh snapshot"
            assert latest["seq"] > first["seq"]
            # and after it, contiguous deltas again
            await publish_incidents(bus, [incident("INC-after")])
            following = await slow.recv()
            assert following["seq"] == latest["seq"] + 1
        finally:
            await slow.close()


async def test_batching_only_for_clients_that_opt_in(tmp_path: Path) -> None:
    bus = MemoryBus()
    async with dashboard(tmp_path, bus, stats_interval_s=3600) as (address, ctx):
        token = viewer_token(ctx)
        async with (
            connect(f"ws://{address}/ws?token={token}&batch=1", max_size=None) as batched,
            connect(f"ws://{address}/ws?token={token}", max_size=None) as plain,
        ):
            start = (await recv(batched))["seq"]
            assert (await recv(plain))["seq"] == start
            # a lone delta goes out at once, as a plain object, even to a batching client
            await publish_incidents(bus, [incident("INC-lone")])
            lone = await recv(batched)
            assert lone["type"] == "incident" and lone["seq"] == start + 1
            await publish_incidents(bus, [incident(f"INC-{i}") for i in range(300)])
            messages: list[dict[str, Any]] = []
            frames = 0
            while len(messages) < 300:
                frame = await recv(batched)
                frames += 1
                messages.extend(frame["messages"] if frame["type"] == "batch" else [frame])
            assert [m["seq"] for m in messages] == list(range(start + 2, start + 302))
            assert frames < 300  # some were batched
            plain_deltas = await recv_deltas(plain, start, 301)  # one object per frame, contiguous
            assert len(plain_deltas) == 301


async def test_heartbeat_on_an_idle_connection(tmp_path: Path) -> None:
    async with (
        dashboard(tmp_path, heartbeat_s=0.2, stats_interval_s=3600) as (address, ctx),
        connect(f"ws://{address}/ws?token={viewer_token(ctx)}", max_size=None) as ws,
    ):
        assert (await recv(ws))["type"] == "snapshot"
        beat = await recv(ws, within_s=3)
        assert beat["type"] == "heartbeat" and "seq" not in beat


async def test_a_revoked_token_is_disconnected(tmp_path: Path) -> None:
    async with dashboard(tmp_path, heartbeat_s=0.1, reauth_s=0.1, stats_interval_s=3600) as (address, ctx):
        token = viewer_token(ctx)
        async with connect(f"ws://{address}/ws?token={token}", max_size=None) as ws:
            assert (await recv(ws))["type"] == "snapshot"
            with Session(ctx.engine) as s:
                for row in s.exec(select(ApiToken)).all():
                    row.revoked_at = NOW
                    s.add(row)
                s.commit()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(ws, within_s=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_two_dashboards_on_one_bus_each_see_everything(tmp_path: Path) -> None:
    bus = MemoryBus()
    async with (
        dashboard(tmp_path, bus, stats_interval_s=3600) as (a, ctx_a),
        dashboard(tmp_path, bus, stats_interval_s=3600) as (b, ctx_b),
    ):
        async with (
            connect(f"ws://{a}/ws?token={viewer_token(ctx_a)}", max_size=None) as ws_a,
            connect(f"ws://{b}/ws?token={viewer_token(ctx_b)}", max_size=None) as ws_b,
        ):
            snap_a, snap_b = await recv(ws_a), await recv(ws_b)
            await publish_tps(bus, tps("TPS-009", state="silent"))
            await publish_incidents(bus, [incident(f"INC-{i}", tps_id=f"TPS-{i}") for i in range(20)])
            for ws, snap in ((ws_a, snap_a), (ws_b, snap_b)):
                got = await recv_deltas(ws, snap["seq"], 20)
                assert [m["tps"]["tps_id"] for m in got if m["type"] == "tps"] == ["TPS-009"]
                assert {m["incident"]["id"] for m in got if m["type"] == "incident"} == {f"INC-{i}" for i in range(20)}
        # their seqs are their own: a seq of one means nothing to the other
        assert dashboard_of(ctx_a).hub.first_seq != dashboard_of(ctx_b).hub.first_seq


async def test_page_static_files_and_me(tmp_path: Path) -> None:
    async with dashboard(tmp_path, dispatch_url="http://127.0.0.1:9/api/") as (address, ctx):
        operator = viewer_token(ctx, Role.OPERATOR)
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            page = await http.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert '"dispatchUrl":"http://127.0.0.1:9/api"' in page.text
            assert "__SIAGA_CONFIG__" not in page.text
            assert "connect-src 'self' ws: wss: http://127.0.0.1:9/api" in page.headers["content-security-policy"]
            assert page.headers["referrer-policy"] == "no-referrer"
            for name, kind in (("app.js", "javascript"), ("style.css", "css"), ("i18n.json", "json")):
                r = await http.get(f"/static/{name}")
                assert r.status_code == 200 and kind in r.headers["content-type"], name
            labels = (await http.get("/static/i18n.json")).json()
            assert set(labels) == {"id", "en"} and set(labels["id"]) == set(labels["en"])
            assert (await http.get("/static/index.html")).status_code == 404
            assert (await http.get("/static/..%2Fapp.py")).status_code == 404
            me = await http.get("/me", headers={"Authorization": f"Bearer {operator}"})
            assert me.json()["role"] == "operator"
            assert (await http.get("/me", headers={"Authorization": "Bearer nope"})).status_code == 401
            assert (await http.get("/me")).status_code == 401


async def test_the_token_never_reaches_the_server_logs(tmp_path: Path) -> None:
    install_token_redaction()
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    keep = Keep()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    ctx = make_ctx(tmp_path, MemoryBus())
    token = viewer_token(ctx)
    async with serve(create_app(ctx), log_level="info", access_log=True) as address:
        for lg in loggers:
            lg.addHandler(keep)
        try:
            async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                assert (await http.get(f"/?token={token}")).status_code == 200
            async with connect(f"ws://{address}/ws?token={token}&since=1", max_size=None) as ws:
                await recv(ws)
        finally:
            for lg in loggers:
                lg.removeHandler(keep)
    text = "\n".join(lines)
    assert "GET /?token=[redacted]" in text
    assert "/ws?token=[redacted]&since=1" in text
    assert token not in text
