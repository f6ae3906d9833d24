"""What a service hands the process that runs it: routes, and what to start and stop.

`siaga ingest|dispatch|dashboard` run one ServiceParts each; `siaga dev` runs all three in
one FastAPI app on one port (their API paths do not collide).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from siaga.db import ping
from siaga.memory import limit_arenas, trim_loop
from siaga.openapi import SECURITY_SCHEMES
from siaga.runtime import Context

log = logging.getLogger("siaga")


async def _nothing() -> None:
    return None


@dataclass
class ServiceParts:
    name: str
    router: APIRouter
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[None]] = _nothing
    openapi_tags: list[dict[str, str]] = field(default_factory=list)
    fast_routes: dict[tuple[str, str], ASGIApp] = field(default_factory=dict)  # (method, path): see FastRoutes


GC_YOUNG = 10_000  # allocations between collections of the youngest generation (CPython's default: 700)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a server that allocates per request.

    Judging a batch of 500 events allocates thousands of dicts and objects that reference counting
    frees by itself, yet each 700 allocations ran a collection, and every few hundred a full one
    that walks the whole heap (the libraries and app loaded at start): a fifth of ingest's CPU on
    batches (docs/benchmarks.md). What is alive once the service has started is frozen (never walked
    again), and young collections run every GC_YOUNG allocations. Cycles are still collected.
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG, young), middle, old)


def build_app(ctx: Context, parts: list[ServiceParts], *, title: str) -> FastAPI:
    """One ASGI app serving the given services, with /healthz, /readyz and /metrics."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_arenas(ctx.settings.malloc_arena_max)  # before the bus and the executor start their threads
        await start_bus(ctx)
        for p in parts:
            await p.start()
        tune_gc()
        trimming = asyncio.create_task(trim_loop(ctx.settings.malloc_trim_interval_s))
        log.info("%s started", title)
        try:
            yield
        finally:
            trimming.cancel()
            for p in reversed(parts):
                try:
                    await p.stop()
                except Exception:
                    log.exception("stopping %s failed", p.name)
            await ctx.bus.stop()

    tags = [t for p in parts for t in p.openapi_tags]
    app = App(title=title, version="0.1.0", lifespan=lifespan, openapi_tags=tags or None)
    app.state.ctx = ctx
    routes = {k: v for p in parts for k, v in p.fast_routes.items()}
    origins = [o.strip() for o in ctx.settings.cors_origins.split(",") if o.strip()]
    if routes and origins:
        app.add_middleware(FastRoutes, routes=routes)  # inside CORS, so a browser may read the answers
    elif routes:
        app.front = FastRoutes(app.inner, routes)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": describe_errors(exc.errors())})

    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        # Starlette's Allow names the methods of the first route at this path only (GET /v1/admin/
        # tokens and POST /v1/admin/tokens are two routes): name every method the path takes.
        allowed = methods_at(app, request.scope)
        return JSONResponse(
            status_code=405,
            content={"detail": f"{request.method} is not allowed here; this path takes {', '.join(allowed)}"},
            headers={"Allow": ", ".join(allowed)},
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        bus_ok = await ctx.bus.healthy()
        db_ok = await asyncio.to_thread(ping, ctx.engine)
        ok = bus_ok and db_ok
        return JSONResponse(status_code=200 if ok else 503, content={"bus": bus_ok, "database": db_ok})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    for p in parts:
        app.include_router(p.router)
    return app


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def methods_at(app: FastAPI, scope: Scope) -> list[str]:
    """Every HTTP method some route of the app answers at the scope's path.

    Asked of each route by `matches` with each method (included routers are routes too, so this
    finds the routes inside them), not read from the routes' attributes.
    """
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in app.routes)
    ]


class Decline(Exception):
    """Raised by a fast handler, before it sends anything, for a request it leaves to the full app
    (one whose query needs FastAPI's validation and its 422, say)."""


class FastRoutes:
    """ASGI middleware: the given (method, path) pairs go straight to their handler, the rest on.

    For the few hot paths where FastAPI's own layers (error and telemetry middleware, routing,
    dependency solving) cost as much as the work: ingest's device POSTs. Placed in front of the
    whole FastAPI app, or just inside CORS when CORS is configured. An exception in a handler
    reaches the server (uvicorn answers 500 and logs it) instead of FastAPI's error middleware.
    """

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], ASGIApp]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if handler is not None:
            try:
                await handler(scope, receive, send)
                return
            except Decline:
                pass
        await self.app(scope, receive, send)


class App(FastAPI):
    """FastAPI with an optional ASGI layer in front of everything (see FastRoutes)."""

    front: ASGIApp | None = None

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with the token schemes the routes name (siaga.openapi.secured)."""
        if self.openapi_schema is None:
            schema = super().openapi()
            schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        return self.openapi_schema or {}

    async def inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.front or self.inner)(scope, receive, send)


async def start_bus(ctx: Context) -> None:
    """Start the bus, retrying while the broker is not up yet (services may start before Kafka)."""
    delay = 0.5
    while True:
        try:
            await ctx.bus.start()
            return
        except Exception as exc:
            log.warning("bus not reachable yet (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def describe_errors(errors: object) -> list[dict[str, str]]:
    """Pydantic errors as [{field, message}] with a dotted field path a person can read."""
    out = []
    for e in errors if isinstance(errors, list) else []:
        if e.get("type") == "json_invalid":  # its loc is ("body", <character offset>)
            out.append({"field": "body", "message": "the body is not valid JSON (UTF-8)"})
            continue
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body",)]
        out.append({"field": ".".join(loc) or "body", "message": str(e.get("msg", "invalid"))})
    return out
