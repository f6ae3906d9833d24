"""A real HTTP server for an ASGI app, and Debian's headless chromium driven by Playwright.

`serve(app)` runs uvicorn on 127.0.0.1 (a free port) inside the test's event loop. The
`chromium` fixture launches /usr/bin/chromium once per session (no browser download: Playwright
only drives it); `offline_page` gives a fresh page that refuses every request not to 127.0.0.1
and records each URL it saw, so a test can assert the page never tried the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import uvicorn

CHROMIUM = Path(os.environ.get("SIAGA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1"}
HAVE_CHROMIUM = CHROMIUM.exists()


@contextlib.asynccontextmanager
async def serve(
    app: Any, *, log_level: str = "warning", access_log: bool = False, keep_logging: bool = False
) -> AsyncIterator[str]:
    """Run `app` on a real uvicorn server on 127.0.0.1; yields "127.0.0.1:<port>".

    keep_logging: leave the logging configuration alone (log_config=None, as `siaga` runs it), so
    what a test installed with siaga.logs.setup_logging is what the server logs through.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = (
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=access_log)
        if keep_logging
        else uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=access_log)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 15)
        finally:
            sock.close()


@pytest_asyncio.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    """Debian's chromium under Playwright, headless, with no background network of its own."""
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class OfflinePage:
    """A page whose requests outside 127.0.0.1 are aborted, and every URL it attempted."""

    page: Any
    attempted: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """Attempted URLs whose host is not local."""
        return [u for u in self.attempted if urlsplit(u).hostname not in LOCAL_HOSTS]


@pytest_asyncio.fixture
async def offline_page(chromium: Any) -> AsyncIterator[OfflinePage]:
    """A fresh browser context and page (1600×900) that may reach 127.0.0.1 only."""
    context = await chromium.new_context(viewport={"width": 1600, "height": 900}, service_workers="block")
    page = await context.new_page()
    seen = OfflinePage(page)

    async def guard(route: Any) -> None:
        url = route.request.url
        seen.attempted.append(url)
        if urlsplit(url).hostname in LOCAL_HOSTS or url.startswith("data:"):
            await route.continue_()
        else:
            seen.blocked.append(url)
            await route.abort()

    await context.route("**/*", guard)
    page.on("websocket", lambda ws: seen.attempted.append(ws.url))
    page.on("console", lambda msg: seen.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: seen.console_errors.append(str(exc)))
    try:
        yield seen
    finally:
        await context.close()
