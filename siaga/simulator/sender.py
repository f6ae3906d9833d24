"""Posting events to ingest as a field device does: retries that keep the event ids, counted answers."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_BATCH = 500  # SPEC section 4: a batch holds up to 500 events
_KEEP_REJECTIONS = 20


@dataclass
class Counters:
    """What happened to the events posted so far (each event counted once, however many attempts)."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0  # given up on: network errors or server errors after every retry
    requests: int = 0  # HTTP requests, retries included
    retries: int = 0
    throttled: int = 0  # 429 and 503 answers (each followed by a retry after Retry-After)
    batches: int = 0
    status_codes: Counter[int] = field(default_factory=Counter)
    rejections: list[str] = field(default_factory=list)  # a sample of why events were refused
    latencies_s: list[float] = field(default_factory=list)

    def line(self) -> str:
        """The counts for a progress line."""
        return (
            f"sent {self.sent} | accepted {self.accepted} | duplicates {self.duplicates} | "
            f"rejected {self.rejected} | errors {self.errors}"
        )

    def _refused(self, what: str) -> None:
        if len(self.rejections) < _KEEP_REJECTIONS:
            self.rejections.append(what[:300])


class Poster:
    """Posts events with one device token; honours Retry-After on 429 and 503, backs off on errors.

    A retry sends the very same bytes, so every event keeps its event_id and content and ingest
    answers a retried event that did get through as a duplicate, never as a second event.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        ingest_url: str,
        counters: Counters,
        *,
        max_attempts: int = 8,
        max_wait_s: float = 60.0,
        record_latency: bool = False,
        stop_event: asyncio.Event | None = None,
    ) -> None:
        self.client = client
        self.base = ingest_url.rstrip("/")
        self.counters = counters
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.record_latency = record_latency
        self.stop_event = stop_event
        self._jitter = random.Random(0)

    async def post(self, token: str, events: list[dict[str, Any]], *, batch: bool) -> None:
        """Post events: one by one on /v1/events, or as batches of up to 500 on /v1/events/batch."""
        if not batch:
            for event in events:
                await self._post(token, "/v1/events", event, 1)
            return
        for i in range(0, len(events), MAX_BATCH):
            chunk = events[i : i + MAX_BATCH]
            self.counters.batches += 1
            await self._post(token, "/v1/events/batch", {"events": chunk}, len(chunk))

    async def _post(self, token: str, path: str, body: dict[str, Any], count: int) -> None:
        c = self.counters
        c.sent += count
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for attempt in range(self.max_attempts):
            if attempt:
                c.retries += 1
            started = time.perf_counter()
            try:
                resp = await self.client.post(self.base + path, content=content, headers=headers)
            except httpx.TransportError as exc:
                c.requests += 1
                c._refused(f"{path}: {type(exc).__name__}")
                if not await self._wait(self._backoff(attempt)):
                    break
                continue
            c.requests += 1
            if self.record_latency:
                c.latencies_s.append(time.perf_counter() - started)
            c.status_codes[resp.status_code] += 1
            if resp.status_code in (429, 503):
                c.throttled += 1
                if not await self._wait(_retry_after(resp, self._backoff(attempt))):
                    break
                continue
            if resp.status_code >= 500:
                if not await self._wait(self._backoff(attempt)):
                    break
                continue
            if resp.status_code in (200, 202):
                self._count_answer(resp, count, path)
            else:
                c.rejected += count
                c._refused(f"{path}: HTTP {resp.status_code}: {resp.text}")
            return
        c.errors += count

    def _count_answer(self, resp: httpx.Response, count: int, path: str) -> None:
        c = self.counters
        try:
            answer = resp.json()
            accepted = len(answer.get("accepted", []))
            duplicates = len(answer.get("duplicates", []))
            rejected = answer.get("rejected", [])
        except (ValueError, AttributeError):
            c.errors += count
            c._refused(f"{path}: unreadable answer: {resp.text}")
            return
        c.accepted += accepted
        c.duplicates += duplicates
        c.rejected += len(rejected)
        for r in rejected[:3]:
            c._refused(f"{path}: {r}")

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_wait_s, 0.25 * 2**attempt) * self._jitter.uniform(0.8, 1.2))

    async def _wait(self, seconds: float) -> bool:
        """Sleep before a retry; False when the run is being stopped (give up at once)."""
        seconds = min(max(seconds, 0.0), self.max_wait_s)
        if self.stop_event is None:
            await asyncio.sleep(seconds)
            return True
        if self.stop_event.is_set():
            return False
        try:
            await asyncio.wait_for(self.stop_event.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False


def _retry_after(resp: httpx.Response, fallback: float) -> float:
    value = resp.headers.get("Retry-After", "")
    try:
        return float(value)
    except ValueError:
        return fallback


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
