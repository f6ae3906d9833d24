"""The simulated field reads its inbox (SPEC section 9): devices poll, and most acknowledge their orders.

Each device of a person (not the Linmas pairs) polls `GET /v1/device/inbox` about every `poll_s`
seconds of real time, with its cursor and the last ETag (so an empty poll is a 304), and
acknowledges a share of the assignments it finds after a short delay, as a responder who read the
order would. Notices and messages are read and left. So the demo shows the loop: an operator sends
the nearest unit, its phone acknowledges, the timeline says so; now and then an order goes
unanswered and is re-sent, then flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx


@dataclass
class InboxStats:
    polls: int = 0
    not_modified: int = 0
    items: int = 0
    acknowledged: int = 0
    ignored: int = 0
    errors: int = 0


@dataclass
class _Device:
    token: str
    cursor: str = "0"
    etag: str | None = None
    seen: set[str] = field(default_factory=set)


class InboxResponder:
    """Polls the inboxes of `tokens` and acknowledges `ack_share` of the assignments in them."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        ingest_url: str,
        tokens: Sequence[str],
        *,
        poll_s: float = 30.0,
        ack_share: float = 0.85,
        ack_delay_s: tuple[float, float] = (1.0, 8.0),
        seed: int = 0,
    ) -> None:
        self.http, self.url = http, ingest_url.rstrip("/")
        self.devices = [_Device(t) for t in dict.fromkeys(tokens)]
        self.poll_s, self.ack_share, self.ack_delay_s = poll_s, ack_share, ack_delay_s
        self.rng = random.Random(seed)
        self.stats = InboxStats()
        self._acks: set[asyncio.Task[None]] = set()

    async def poll(self, device: _Device) -> None:
        """One poll of one device's inbox; acknowledges (later) what it decides to."""
        headers = {"Authorization": f"Bearer {device.token}"}
        if device.etag:
            headers["If-None-Match"] = device.etag
        try:
            r = await self.http.get(f"{self.url}/v1/device/inbox", params={"since": device.cursor}, headers=headers)
        except httpx.HTTPError:
            self.stats.errors += 1
            return
        self.stats.polls += 1
        if r.status_code == 304:
            self.stats.not_modified += 1
            return
        if r.status_code != 200:
            self.stats.errors += 1
            return
        page = r.json()
        device.cursor, device.etag = page["cursor"], r.headers.get("etag")
        for item in page["items"]:
            self.stats.items += 1
            if item.get("kind") != "assignment" or item["order_id"] in device.seen:
                continue  # a re-send of an order already decided on is the same order
            device.seen.add(item["order_id"])
            if self.rng.random() < self.ack_share:
                task = asyncio.create_task(self._ack(device, item["order_id"], self.rng.uniform(*self.ack_delay_s)))
                self._acks.add(task)
                task.add_done_callback(self._acks.discard)
            else:
                self.stats.ignored += 1
        if page.get("more"):
            await self.poll(device)

    async def _ack(self, device: _Device, order_id: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            r = await self.http.post(
                f"{self.url}/v1/device/inbox/{order_id}/ack",
                json={"note": "siap, meluncur"},
                headers={"Authorization": f"Bearer {device.token}"},
            )
        except httpx.HTTPError:
            self.stats.errors += 1
            return
        if r.status_code == 200:
            self.stats.acknowledged += 1
        else:
            self.stats.errors += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every device about every `poll_s`, spread over the interval, until `stop` is set."""
        if not self.devices:
            return
        gap = self.poll_s / len(self.devices)
        polls: set[asyncio.Task[None]] = set()
        limit = asyncio.Semaphore(16)  # a slow server delays the polls, never piles them up

        async def one(device: _Device) -> None:
            async with limit:
                await self.poll(device)

        try:
            while not stop.is_set():
                for device in self.devices:
                    if stop.is_set():
                        break
                    # Spread over the interval and not waited for: a poll's latency does not stretch the round.
                    task = asyncio.create_task(one(device))
                    polls.add(task)
                    task.add_done_callback(polls.discard)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=gap)
        finally:
            for task in (*polls, *self._acks):
                task.cancel()
