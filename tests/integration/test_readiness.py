"""`GET /readyz` (SPEC section 4: "bus and database reachable") fails while either is down, names
which one, and recovers when it is back; `GET /healthz` (the process is alive) stays 200 throughout.

What is stopped is real: a Kafka broker of this module's own (infra/kafka/broker.sh, as in
test_kafka_outage.py; the session broker is not disturbed) and a PostgreSQL server of its own
(tests/plugins/postgres.py `PgServer`). The app is the composed dev app, as `siaga dev` runs it
with SIAGA_KAFKA_BOOTSTRAP or SIAGA_DATABASE_URL set, reached in-process over ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.bus.memory import MemoryBus
from siaga.cli import build_dev_app
from siaga.runtime import Context
from tests.integration.test_kafka_outage import Broker, _free_port
from tests.plugins.postgres import PgServer
from tests.security import security_settings

UP = {"bus": True, "database": True}


@contextlib.asynccontextmanager
async def probed(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Context, httpx.AsyncClient]]:
    """The composed dev app started (its lifespan): its context, and a client for its probes."""
    app = build_dev_app(security_settings(tmp_path / "siaga.db", **settings), demo=False, port=0)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://siaga.test", timeout=30) as client:
            yield app.state.ctx, client


async def ready_becomes(client: httpx.AsyncClient, status: int, body: dict[str, bool], timeout_s: float) -> None:
    """Poll /readyz until it answers `status` with `body`; fail with the last answer seen."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    seen: tuple[int, Any] = (0, None)
    while loop.time() < end:
        r = await client.get("/readyz")
        seen = (r.status_code, r.json())
        if seen == (status, body):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz never answered {status} {body} within {timeout_s}s; last: {seen}")


async def assert_alive(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"}), "liveness does not depend on the bus or database"


# -- the bus ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    b = Broker(_free_port(), tempfile.mkdtemp(prefix="siaga-test-kafka-readyz-"))
    started = b.run("start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield b
    finally:
        b.run("stop")
        shutil.rmtree(b.home, ignore_errors=True)


@pytest.mark.kafka
async def test_readyz_fails_naming_the_bus_while_the_broker_is_down(broker: Broker, tmp_path: Path) -> None:
    settings = {"kafka_bootstrap": broker.bootstrap, "topic_prefix": f"rdy{uuid.uuid4().hex[:6]}."}
    async with probed(tmp_path, **settings) as (_, client):
        await ready_becomes(client, 200, UP, timeout_s=10)
        stopped = await broker.arun("stop")
        assert stopped.returncode == 0, stopped.stderr
        try:
            await ready_becomes(client, 503, {"bus": False, "database": True}, timeout_s=20)
            await assert_alive(client)
        finally:
            restarted = await broker.arun("start")
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        await ready_becomes(client, 200, UP, timeout_s=30)


# -- the database -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this module's own: the tests stop and start it."""
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.mark.postgres
async def test_readyz_fails_naming_the_database_while_postgres_is_down(pg: PgServer, tmp_path: Path) -> None:
    url = await asyncio.to_thread(pg.create_database)
    async with probed(tmp_path, database_url=url) as (_, client):
        await ready_becomes(client, 200, UP, timeout_s=10)
        await asyncio.to_thread(pg.stop)
        try:
            await ready_becomes(client, 503, {"bus": True, "database": False}, timeout_s=20)
            await assert_alive(client)
        finally:
            await asyncio.to_thread(pg.start)
        await ready_becomes(client, 200, UP, timeout_s=30)


async def test_readyz_fails_naming_the_bus_when_the_in_process_bus_is_unavailable(tmp_path: Path) -> None:
    async with probed(tmp_path) as (ctx, client):
        await ready_becomes(client, 200, UP, timeout_s=5)
        bus = ctx.bus
        assert isinstance(bus, MemoryBus)
        bus.available = False  # the in-process bus's own switch for an outage
        await ready_becomes(client, 503, {"bus": False, "database": True}, timeout_s=5)
        bus.available = True
        await ready_becomes(client, 200, UP, timeout_s=5)
