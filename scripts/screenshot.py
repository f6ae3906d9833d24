"""Take the dashboard picture for the docs: `siaga dev` with the Serang demo, then headless chromium.

    .venv/bin/python scripts/screenshot.py                      # writes docs/img/dashboard.png
    .venv/bin/python scripts/screenshot.py --seconds 120 --speed 30 --lang en --out /tmp/shot.png

It starts `siaga dev` (the Serang demo and its simulator) on a free port in a temporary directory,
opens the page as the demo operator whose link `siaga dev` prints, lets the simulated day run for
`--seconds`, printing what the page shows as it goes, and saves a screenshot. Every request the
page makes outside 127.0.0.1 is refused, as on an offline wall screen; the browser keeps
Western Indonesian time, as in the Serang command center.

The simulator only runs as fast as `siaga dev` answers, and the whole regency sends about 3 events
a simulated second, so high speeds fall behind on a small machine (the progress lines say so).
`siaga dev` divides the policy's durations by the speed, so windows, escalations and silent posts
come when they would on the day. Silent posts start between 10:00 and 14:00 of the day: use
`--start-at 09:30` to see them in a short run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
SIAGA = str(Path(sys.executable).parent / "siaga")
CHROMIUM = Path(os.environ.get("SIAGA_CHROMIUM", "/usr/bin/chromium"))
# The same switches as the browser tests (tests/plugins/browser.py): no network of chromium's own.
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
DEMO_LINE = re.compile(r"Siaga demo: open (http://\S+)")
SIM_REACHED = re.compile(r"sim (\d\d):(\d\d) WIB")
DAY_STARTS_MIN = 5 * 60 + 30  # the demo's day starts at 05:30 WIB unless --start-at
BEHIND_WARN_MIN = 15.0  # simulated minutes behind schedule worth a warning
TOKEN_IN_TEXT = re.compile(r"token=[^\s&]+")
# Policy durations of the simulated day, as paths into the policy document; a dict value scales
# each of its entries. late_grace_seconds stays: it waits for network backlogs, in real time.
# What the progress lines read off the page (element id → label).
FIGURES = {
    "kpi-open": "open",
    "kpi-escalated": "escalated",
    "kpi-silent": "silent posts",
    "kpi-on-site": "resolved on site",
    "kpi-coverage": "coverage",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description="Run `siaga dev` with the Serang demo and save a screenshot of the dashboard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png", help="PNG file to write")
    p.add_argument(
        "--seconds", type=float, default=240.0, help="real seconds of the simulated day to let pass before the picture"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="demo speed-up (simulated seconds per real second, as `siaga dev --speed`); the day starts at "
        "05:30 and the simulator falls behind when the server cannot keep up",
    )
    p.add_argument("--width", type=int, default=1600, help="viewport width in CSS pixels")
    p.add_argument("--height", type=int, default=1000, help="viewport height in CSS pixels")
    p.add_argument("--lang", choices=["id", "en"], default="id", help="page language")
    p.add_argument("--start-at", default=None, metavar="HH:MM", help="simulated time of day to start at (WIB)")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--startup-timeout", type=float, default=240.0, help="seconds to wait for the demo to load")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.speed <= 0 or args.width < 320 or args.height < 240:
        p.error("--seconds and --speed must be positive, the viewport at least 320×240")
    return args


def say(line: str) -> None:
    """A progress line (on stderr, so stdout stays free)."""
    print(f"screenshot: {line}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevServer:
    """`siaga dev` with the demo, in its own process group and temporary directory."""

    def __init__(self, workdir: Path, *, speed: float, start_at: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = "adm_" + secrets.token_urlsafe(24)
        self.speed = speed
        self.start_at = start_at
        self.demo_url: str | None = None
        self.last_sim_line = ""
        self.day_started = 0.0  # time.monotonic() when the demo link appeared: the simulator starts then
        self._ready = threading.Event()
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the process and a thread that reads its output (for the demo link and progress)."""
        env = dict(os.environ)
        for name in ("SIAGA_KAFKA_BOOTSTRAP", "SIAGA_PUBLIC_URL", "SIAGA_DISPATCH_URL"):
            env.pop(name, None)  # embedded, one origin, whatever the caller's shell says
        env.update(
            SIAGA_ADMIN_TOKEN=self.admin,
            SIAGA_DATABASE_URL=f"sqlite:///{self.workdir / 'siaga.db'}",
            PYTHONUNBUFFERED="1",
        )
        self._proc = subprocess.Popen(
            [SIAGA, "dev", "--port", str(self.port), "--speed", f"{self.speed:g}"]
            + (["--start-at", self.start_at] if self.start_at else []),
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, name="siaga-dev-output", daemon=True).start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with open(self.workdir / "dev.log", "w", encoding="utf-8") as log:
            for line in self._proc.stdout:
                found = DEMO_LINE.search(line)
                if found:
                    self.demo_url = found.group(1)
                if line.startswith("simulating "):  # the simulator's first line: the demo is loaded
                    self.day_started = time.monotonic()
                    self._ready.set()
                if line.startswith("sim "):
                    self.last_sim_line = line.strip()
                log.write(TOKEN_IN_TEXT.sub("token=[redacted]", line))  # the demo link carries a token
                log.flush()
        self._ready.set()  # the process ended: stop waiting

    def wait_healthy(self, timeout: float) -> None:
        """Until /readyz answers 200."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"siaga dev did not answer on {self.base} within {timeout:g} s")

    def wait_demo(self, timeout: float) -> str:
        """The operator link `siaga dev` prints once the demo is loaded."""
        self._ready.wait(timeout)
        self.check_alive()
        if self.demo_url is None:
            raise TimeoutError(f"no demo link from siaga dev within {timeout:g} s")
        return self.demo_url

    def check_alive(self) -> None:
        """Raise with the end of its log if `siaga dev` has exited."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            tail = (self.workdir / "dev.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"siaga dev exited with {self._proc.returncode}:\n{tail}")

    def behind_min(self) -> float | None:
        """Simulated minutes the simulator's schedule lags behind --speed (None before its first line).

        The simulator only schedules as fast as the server answers: a lag means this machine cannot
        play the demo at this speed, and the page shows an earlier hour than the speed implies.
        """
        found = SIM_REACHED.search(self.last_sim_line)
        if not found or not self.day_started:
            return None
        reached = int(found.group(1)) * 60 + int(found.group(2))
        first = DAY_STARTS_MIN
        if self.start_at:
            hh, _, mm = self.start_at.partition(":")
            first = int(hh) * 60 + int(mm or 0)
        due = first + (time.monotonic() - self.day_started) * self.speed / 60
        return max(0.0, due - reached)

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL if it lingers."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)


def figures(page: Any) -> str:
    """The headline figures as the page shows them."""
    values = []
    for element, label in FIGURES.items():
        text = (page.text_content(f"#{element}") or "").strip()
        values.append(f"{label} {text}")
    values.append(f"TPS drawn {page.get_attribute('#map', 'data-tps-count')}")
    return " · ".join(values)


def capture(dev: DevServer, url: str, args: argparse.Namespace) -> list[str]:
    """Open the page, let the day run, save the picture; returns the URLs the page was refused."""
    from playwright.sync_api import sync_playwright

    refused: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                viewport={"width": args.width, "height": args.height},
                timezone_id="Asia/Jakarta",
                service_workers="block",
            )
            # The language is kept in localStorage, like the operator's own choice.
            context.add_init_script(f"localStorage.setItem('siaga.lang', '{args.lang}')")

            def guard(route: Any) -> None:
                target = route.request.url
                if urlsplit(target).hostname == "127.0.0.1" or target.startswith("data:"):
                    route.continue_()
                else:
                    refused.append(target)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector('#conn[data-state="live"]', timeout=60_000)
            page.wait_for_selector('#map:not([data-tps-count="0"])', timeout=60_000)
            started = time.monotonic()
            while (left := args.seconds - (time.monotonic() - started)) > 0:
                page.wait_for_timeout(min(args.progress_every, left) * 1000)
                dev.check_alive()
                elapsed = time.monotonic() - started
                say(f"{elapsed:4.0f}/{args.seconds:g} s  {figures(page)}")
                if dev.last_sim_line:
                    say(f"          simulator: {dev.last_sim_line}")
                behind = dev.behind_min()
                if behind is not None and behind > BEHIND_WARN_MIN:
                    say(f"          the simulator is {behind:.0f} simulated minutes behind: lower --speed")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.mouse.move(0, 0)  # no hover tooltip in the picture
            page.screenshot(path=str(args.out))
            say(f"final: {figures(page)}; connection {page.get_attribute('#conn', 'data-state')}")
        finally:
            browser.close()
    return refused


def main(argv: list[str] | None = None) -> int:
    """Run the demo, take the picture; 0 on success."""
    args = parse_args(argv)
    if not CHROMIUM.exists():
        say(f"{CHROMIUM} is not installed (apt-get install chromium, or set SIAGA_CHROMIUM)")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="siaga-screenshot-"))
    dev = DevServer(workdir, speed=args.speed, start_at=args.start_at)
    try:
        say(f"starting siaga dev --speed {args.speed:g} on {dev.base} (in {workdir})")
        dev.start()
        dev.wait_healthy(args.startup_timeout)
        say("loading the Serang demo…")
        url = dev.wait_demo(args.startup_timeout)
        say(f"demo loaded; the day runs for {args.seconds:g} s at speed {args.speed:g}")
        refused = capture(dev, url, args)
    except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        dev.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if refused:
        say(f"the page tried to reach the internet (refused): {sorted(set(refused))}")
        return 1
    say(f"wrote {args.out} ({args.width}×{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
