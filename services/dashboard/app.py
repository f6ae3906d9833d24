"""The dashboard service: the command-center page and the WebSocket hub of SPEC section 7.

Every dashboard process reads the whole `siaga.incident-updates` topic (a broadcast consumer,
from the beginning, committing nothing) into its own `Hub`, and streams snapshot + deltas to
browsers. The wire protocol is in docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketState

from services.dashboard.frames import Source
from services.dashboard.hub import ClientQueue, Frame, Hub, InvalidUpdate, batch_text, parse_update, region_of
from services.dashboard.summary import LEVELS
from siaga import topics
from siaga.auth import Principal, Role, Scope, bearer, principal_for
from siaga.bus import BusUnavailable, ConsumerLoop, Record, dead_letter_value, publish_dead_letter
from siaga.clock import iso
from siaga.contracts import INCIDENT_UPDATE
from siaga.openapi import API_TOKEN, error_responses, secured
from siaga.runtime import Context
from siaga.service import ServiceParts, build_app

log = logging.getLogger("siaga.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "i18n.json": "application/json; charset=utf-8",
}
CLOSE_UNAUTHORIZED = 4401  # 4000-4999: application codes; 4401 mirrors HTTP 401
CLOSE_BAD_REQUEST = 4400  # a view the query cannot name (mirrors HTTP 400)
CLOSE_NOT_FOUND = 4404  # a region that does not exist, or not inside the token's scope (HTTP 404)
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the page reconnects with backoff

CLIENTS = Gauge("siaga_dashboard_clients", "WebSocket clients connected to this dashboard")
DELTAS = Counter("siaga_dashboard_deltas_total", "Deltas issued by the dashboard hub", ["type"])
RESYNCS = Counter("siaga_dashboard_resyncs_total", "Snapshots sent to clients that fell behind")
INVALID = Counter("siaga_dashboard_invalid_updates_total", "Updates-topic messages the dashboard could not use")


class Me(BaseModel):
    """Who a token belongs to."""

    name: str
    role: Role
    scope: dict[str, list[str]] | None = Field(
        default=None, description="The regions the token is limited to (kecamatan as `Kabupaten/Kecamatan`), or null."
    )


def new_first_seq() -> int:
    """A random starting seq, so a `since` from another dashboard or an earlier run of this one
    almost surely names a seq this hub never issued (and gets a snapshot, not a wrong replay).

    Stays far below 2**53, the largest integer a browser keeps exact.
    """
    return secrets.randbelow(2**32) << 16


def _since(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        return None  # unreadable: treated as a first connection (snapshot)


class ViewError(ValueError):
    """A /ws query that names no view this client may have: closed with `code` and the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _one_region(params: dict[str, str]) -> tuple[str, str] | None:
    """The region filter of a /ws query (`provinsi=`, `kabupaten=` or `kecamatan=Kabupaten/Kecamatan`)."""
    named = [(k, params[k].strip()) for k in LEVELS if params.get(k, "").strip()]
    if len(named) > 1:
        raise ViewError(CLOSE_BAD_REQUEST, "name one region: provinsi, kabupaten or kecamatan, not several")
    return named[0] if named else None


def frames_to_texts(frames: list[Frame], *, batch: bool) -> list[str]:
    """The WebSocket text frames for what a client is owed.

    One JSON object per frame unless the client opted in to batching and more than one delta is
    waiting; a snapshot always travels alone.
    """
    if not batch or len(frames) < 2 or any(f.type == "snapshot" for f in frames):
        return [f.text for f in frames]
    return [batch_text(frames)]


class Dashboard:
    """One dashboard process: the hub, the updates consumer and the WebSocket clients."""

    def __init__(
        self,
        ctx: Context,
        *,
        heartbeat_s: float = 20.0,
        stats_interval_s: float = 1.0,
        batch_interval_s: float = 0.1,
        reauth_s: float = 60.0,
    ) -> None:
        self.ctx = ctx
        self.hub = Hub(ctx.settings.ws_replay_buffer, first_seq=new_first_seq(), per_kabupaten=True)
        # A hub per token scope (SPEC section 10), made when its first client connects and kept (its
        # seq, so that a client can resume): fed from the main hub the updates of its regions.
        self.scoped: dict[Scope, Hub] = {}
        self._by_provinsi: dict[str, list[Hub]] = {}
        self._by_kabupaten: dict[str, list[Hub]] = {}
        self._by_kecamatan: dict[tuple[str, str], list[Hub]] = {}
        self._idle_since: dict[Scope, float] = {}  # scoped hubs with no client, since when (loop time)
        self.heartbeat_s, self.stats_interval_s = heartbeat_s, stats_interval_s
        self.batch_interval_s, self.reauth_s = batch_interval_s, reauth_s
        self._consumer: ConsumerLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the updates topic from the beginning into the hub; pace the stats deltas."""
        source = self.ctx.bus.consumer([topics.INCIDENT_UPDATES], None, broadcast=True)
        self._consumer = ConsumerLoop(self.ctx.bus, source, self.handle, name="dashboard", commit=False)
        await self._consumer.start()
        self._ticker = asyncio.create_task(self._stats_ticker(), name="dashboard:stats")

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._consumer:
            await self._consumer.stop()

    async def handle(self, records: list[Record]) -> None:
        """Fold update messages into the hub. A message it cannot use goes to dead-letter and is skipped.

        Every dashboard reads every message, so with N instances a poison update is filed N times;
        the dead-letter record names topic, partition and offset, so the copies are easy to match.
        """
        for record in records:
            if not record.value:
                continue  # a compaction tombstone
            try:
                update, body = parse_update(record.value)
                frame = self.hub.apply_parsed(update, body)
                if frame is not None and self.scoped:
                    for hub in self._hubs_of(*region_of(update)):
                        hub.apply_parsed(update, body)
            except InvalidUpdate as exc:
                INVALID.inc()
                log.warning("dashboard: skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
                await self._dead_letter(record, f"{type(exc).__name__}: {exc}")
                continue
            if frame is not None:
                DELTAS.labels(frame.type).inc()
        # Let the client senders run between batches: an in-process bus hands over records
        # without ever suspending, and the queues would fill before any frame went out.
        await asyncio.sleep(0)

    async def _dead_letter(self, record: Record, reason: str) -> None:
        try:
            value = dead_letter_value(record, reason, "dashboard")
            await publish_dead_letter(self.ctx.bus, record.key, value, consumer="dashboard", topic=record.topic)
        except BusUnavailable:
            log.warning("dashboard: dead-letter publish failed; the update stays skipped")

    async def _stats_ticker(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            for hub in (self.hub, *self.scoped.values()):
                if hub.flush_stats() is not None:
                    DELTAS.labels("stats").inc()
                if summaries := hub.flush_summaries():
                    DELTAS.labels("summary").inc(summaries)
            self.evict_idle(asyncio.get_running_loop().time())

    def evict_idle(self, now: float) -> list[Scope]:
        """Drop the scoped hubs nobody has read for `SIAGA_WS_VIEW_IDLE_S`: a command center that drills
        down into every kabupaten in turn must not keep feeding them all. What was dropped."""
        dropped = []
        for scope, hub in list(self.scoped.items()):
            if hub.clients:
                self._idle_since.pop(scope, None)
                continue
            since = self._idle_since.setdefault(scope, now)
            if now - since >= self.ctx.settings.ws_view_idle_s:
                dropped.append(scope)
                self._drop(scope, hub)
        return dropped

    def _drop(self, scope: Scope, hub: Hub) -> None:
        del self.scoped[scope]
        self._idle_since.pop(scope, None)
        _unlist(self._by_provinsi, scope.provinsi, hub)
        _unlist(self._by_kabupaten, scope.kabupaten, hub)
        _unlist(self._by_kecamatan, scope.kecamatan, hub)

    # -- scoped views -----------------------------------------------------------------------------
    def _hubs_of(self, provinsi: str, kabupaten: str, kecamatan: str) -> list[Hub]:
        """The scoped hubs whose scope admits this region (each once)."""
        found = [
            *self._by_provinsi.get(provinsi, ()),
            *self._by_kabupaten.get(kabupaten, ()),
            *self._by_kecamatan.get((kabupaten, kecamatan), ()),
        ]
        return found if len(found) < 2 else list(dict.fromkeys(found))

    def hub_for(self, scope: Scope | None) -> Hub:
        """The hub a client of this scope reads: the main one, or its scope's (made from the main one's
        picture the first time; no await, so no update falls between the copy and the feed)."""
        if scope is None:
            return self.hub
        hub = self.scoped.get(scope)
        if hub is not None:
            return hub
        hub = Hub(self.ctx.settings.ws_replay_buffer, first_seq=new_first_seq())
        main = self.hub
        # Whole kabupaten are added up from the main hub's per-kabupaten figures; a kabupaten name
        # that is also another provinsi's (outside the scope), and single kecamatan, go item by item.
        provinsi_of: dict[str, set[str]] = {}
        for prov, kab in main.regions.regions["kabupaten"]:
            provinsi_of.setdefault(kab, set()).add(prov)
        whole = {kab for kab, provs in provinsi_of.items() if kab in scope.kabupaten or provs <= scope.provinsi}
        if main.can_adopt():
            for kab in sorted(whole):
                hub.adopt(main, kab)
        else:
            whole = set()
        partly = {kab for kab, _ in scope.kecamatan} | {
            kab for kab, provs in provinsi_of.items() if provs & scope.provinsi
        }
        for kind, held, index in (
            ("incident", main.incidents, main.incidents_by_kabupaten),
            ("tps", main.tps, main.tps_by_kabupaten),
        ):
            for kab in sorted(partly - whole):
                for ident in index.get(kab, ()):
                    doc = held[ident]
                    if scope.admits(doc.get("provinsi", ""), doc.get("kabupaten", ""), doc["kecamatan"]):
                        update = INCIDENT_UPDATE.validate_python({"type": kind, kind: doc})
                        hub.apply_parsed(update, {kind: doc})
        hub.flush_stats()
        self.scoped[scope] = hub
        for name in scope.provinsi:
            self._by_provinsi.setdefault(name, []).append(hub)
        for name in scope.kabupaten:
            self._by_kabupaten.setdefault(name, []).append(hub)
        for pair in scope.kecamatan:
            self._by_kecamatan.setdefault(pair, []).append(hub)
        return hub

    def view_scope(self, principal: Principal, params: dict[str, str]) -> Scope | None:
        """The scope a /ws client reads: its token's, or the one region it names inside it (drill-down).

        A region that does not exist and one outside the token's scope are refused alike (404).
        """
        named = _one_region(params)
        if named is None:
            return principal.scope
        kind, name = named
        known = self.hub.regions.regions
        if kind == "provinsi":
            where: tuple[str, str, str] | None = (name, "", "") if (name,) in known["provinsi"] else None
            view = Scope(provinsi=frozenset({name}))
        elif kind == "kabupaten":
            prov = self.hub.regions.provinsi_of(name)
            where = None if prov is None else (prov, name, "")
            view = Scope(kabupaten=frozenset({name}))
        else:
            kab, _, kec = name.partition("/")
            prov = self.hub.regions.provinsi_of(kab)
            where = (prov, kab, kec) if prov is not None and (prov, kab, kec) in known["kecamatan"] else None
            view = Scope(kecamatan=frozenset({(kab, kec)}))
        if where is None or not _inside(principal.scope, kind, *where):
            shown = name if kind != "kecamatan" else name + " (written Kabupaten/Kecamatan)"
            raise ViewError(CLOSE_NOT_FOUND, f"no {kind} {shown!r} in this dashboard's view")
        return view

    def source_for(self, principal: Principal, params: dict[str, str]) -> tuple[Hub, Source]:
        """The hub and what a client reads of it: the detail view, or a summary (`view=summary&by=`)."""
        view = params.get("view", "detail").strip().lower() or "detail"
        if view not in ("detail", "summary"):
            raise ViewError(CLOSE_BAD_REQUEST, f"view must be detail or summary, not {view!r}")
        by = params.get("by", "kabupaten").strip().lower() or "kabupaten"
        if by not in LEVELS:
            raise ViewError(CLOSE_BAD_REQUEST, f"by must be provinsi, kabupaten or kecamatan, not {by!r}")
        hub = self.hub_for(self.view_scope(principal, params))
        return hub, hub if view == "detail" else hub.summary(by)

    # -- HTTP -------------------------------------------------------------------------------------
    def page(self) -> HTMLResponse:
        """The command-center page with its configuration filled in."""
        s = self.ctx.settings
        config = {
            "dispatchUrl": s.dispatch_url.rstrip("/"),
            "language": s.language if s.language in ("id", "en") else "id",
            "staleAfterS": max(30.0, self.heartbeat_s * 1.5),
            # A national registry opens on the regional summary, not 823,220 TPS in a browser.
            "defaultView": "summary" if len(self.hub.tps) > s.ws_detail_max_tps else "detail",
        }
        # "<" escaped so no value can close the <script> element it sits in.
        blob = orjson.dumps(config).decode().replace("<", "\\u003c")
        html = self._page.replace("__SIAGA_CONFIG__", blob)
        connect = "'self' ws: wss:"
        if s.dispatch_url.startswith(("http://", "https://")):
            connect += " " + s.dispatch_url.rstrip("/")
        headers = {
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                f"connect-src {connect}; frame-ancestors 'none'; base-uri 'none'"
            ),
            # The page URL may carry ?token=: never hand it to anyone as a referrer.
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }
        return HTMLResponse(html, headers=headers)

    async def principal(self, token: str | None) -> Principal | None:
        """The viewer/operator/admin behind a token (looked up off the event loop)."""
        if not token:
            return None
        s = self.ctx.settings
        return await asyncio.to_thread(principal_for, self.ctx.engine, token, s.admin_token)

    # -- WebSocket --------------------------------------------------------------------------------
    async def serve(self, ws: WebSocket) -> None:
        """One browser: auth, snapshot or replay, then live deltas until either side leaves."""
        token = ws.query_params.get("token") or bearer(ws.headers.get("authorization"))
        try:
            principal = await self.principal(token)
        except Exception:
            log.exception("dashboard: token lookup failed")
            await ws.accept()
            await ws.close(code=CLOSE_TRY_AGAIN, reason="the token could not be checked; try again shortly")
            return
        await ws.accept()
        if principal is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="a valid viewer token is required (?token=...)")
            return
        params = dict(ws.query_params)
        try:
            _hub, source = self.source_for(principal, params)
        except ViewError as exc:
            await ws.close(code=exc.code, reason=str(exc)[:120])  # a close reason is at most 123 bytes
            return
        batch = params.get("batch", "").lower() in ("1", "true", "yes")
        wake = asyncio.Event()
        client = ClientQueue(self.ctx.settings.ws_client_queue, wake.set)
        source.attach(client, _since(params.get("since")))
        CLIENTS.inc()
        sender = asyncio.create_task(self._send(ws, source, client, wake, batch=batch, token=token))
        receiver = asyncio.create_task(self._receive(ws))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            source.detach(client)
            CLIENTS.dec()
            for task in (sender, receiver):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _receive(self, ws: WebSocket) -> None:
        # Clients have nothing to say; reading is how a disconnect is noticed.
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def _send(
        self, ws: WebSocket, source: Source, client: ClientQueue, wake: asyncio.Event, *, batch: bool, token: str | None
    ) -> None:
        loop = asyncio.get_running_loop()
        last_sent = last_auth = loop.time()
        resyncs = client.resyncs
        while True:
            idle_left = self.heartbeat_s - (loop.time() - last_sent)
            if idle_left > 0 and not wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), idle_left)
            # clear and take with no await between: a delivery after take sets the event again
            wake.clear()
            frames = client.take(source)
            if client.resyncs != resyncs:
                RESYNCS.inc(client.resyncs - resyncs)
                resyncs = client.resyncs
            if frames:
                for text in frames_to_texts(frames, batch=batch):
                    await ws.send_text(text)
                last_sent = loop.time()
            elif loop.time() - last_sent >= self.heartbeat_s:
                # Browsers cannot see protocol pings: this frame is what tells the page it is live.
                await ws.send_text(orjson.dumps({"type": "heartbeat", "at": iso(self.ctx.clock.now())}).decode())
                last_sent = loop.time()
            if loop.time() - last_auth >= self.reauth_s:
                last_auth = loop.time()
                if await self.principal(token) is None:  # revoked while connected
                    await ws.close(code=CLOSE_UNAUTHORIZED, reason="the token was revoked")
                    return
            if frames and batch:
                # Under load, what arrives in the next moment goes out as one frame.
                await asyncio.sleep(self.batch_interval_s)


K = TypeVar("K")


def _unlist(index: dict[K, list[Hub]], keys: frozenset[K], hub: Hub) -> None:
    for key in keys:
        hubs = index[key]
        hubs.remove(hub)
        if not hubs:
            del index[key]


def _inside(scope: Scope | None, kind: str, provinsi: str, kabupaten: str, kecamatan: str) -> bool:
    """Whether a whole region lies inside a token's scope (a kabupaten view needs more than one kecamatan)."""
    if scope is None or provinsi in scope.provinsi:
        return True
    if kind == "kabupaten":
        return kabupaten in scope.kabupaten
    return kind == "kecamatan" and scope.admits(provinsi, kabupaten, kecamatan)


def _static(name: str) -> Response:
    media = STATIC_TYPES.get(name)
    if media is None:
        return JSONResponse(status_code=404, content={"detail": f"no static file {name!r}"})
    body = (STATIC_DIR / name).read_bytes()
    return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})


def build(ctx: Context, **options: Any) -> ServiceParts:
    """The dashboard's routes (`/`, `/static/...`, `/me`, `/ws`) and its start/stop.

    `options` go to `Dashboard` (heartbeat_s, stats_interval_s, batch_interval_s, reauth_s);
    tests shorten them.
    """
    dash = Dashboard(ctx, **options)
    ctx.extras["dashboard"] = dash
    router = APIRouter(tags=["dashboard"])

    @router.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return dash.page()

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return _static(name)

    @router.get(
        "/me",
        summary="Who the bearer token belongs to (the page shows operator buttons by it)",
        response_model=Me,
        responses=error_responses(401),
        openapi_extra=secured(API_TOKEN),
    )
    async def me(request: Request) -> JSONResponse:
        principal = await dash.principal(bearer(request.headers.get("authorization")))
        if principal is None:
            return JSONResponse(
                status_code=401,
                content={"detail": "a valid viewer, operator or admin token is required"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        scope = principal.scope.document() if principal.scope else None
        return JSONResponse({"name": principal.name, "role": principal.role.value, "scope": scope})

    @router.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await dash.serve(ws)

    return ServiceParts(
        name="dashboard",
        router=router,
        start=dash.start,
        stop=dash.stop,
        openapi_tags=[{"name": "dashboard", "description": "The command-center page and its WebSocket"}],
    )


def create_app(ctx: Context, **options: Any) -> FastAPI:
    """The dashboard as its own ASGI app (`siaga dashboard`)."""
    return build_app(ctx, [build(ctx, **options)], title="Siaga dashboard")
