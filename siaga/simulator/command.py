"""A simulated command center for the demo (SPEC section 5 and 9): it answers what climbs the ladder.

Without one, nobody acknowledges in a demo, and every escalated incident climbs to Polda within
minutes of sped-up time. The duty officers simulated here do what the chief's orders ask:
- read the escalated incidents (`GET /v1/incidents?status=escalated`) every `poll_s` real seconds;
- acknowledge about `ack_share` of them after 0.5 to 4 simulated minutes, inside the policy's
  ack timeout (5 minutes), so the rest climb as they should;
- send the nearest available unit (`POST /assign {"nearest": true}`) to what needs people there:
  high or critical violence, crowds and fires, coverage gaps and overdue escorts;
- close, after 45 to 120 simulated minutes, most acknowledged incidents the field never resolved
  (a Polsek that handled it by phone), so the board does not fill with stale work.
On-site incidents (level 0) are left alone: resolving them is the field's job.

The random choices are seeded, so a `--seed` repeats the command center's decisions too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

import httpx

# Categories where the command center sends someone when the incident is high or critical.
SEND_FOR = frozenset({"violence", "crowd", "fire"})
# Categories where it always sends someone: the post lacks people, or boxes are missing on the road.
ALWAYS_SEND = frozenset({"coverage", "escort_overdue"})
_RESOLUTIONS = (
    "ditangani Polsek, situasi kondusif",
    "sudah ditindaklanjuti Polres, aman terkendali",
    "koordinasi dengan Panwascam dan PPK selesai",
    "selesai ditangani, personel kembali ke TPS",
)


@dataclass
class CommandStats:
    polls: int = 0
    seen: int = 0
    acknowledged: int = 0
    left: int = 0  # escalated incidents the command center chose not to acknowledge
    assigned: int = 0
    nobody_free: int = 0
    resolved: int = 0
    errors: int = 0


class CommandCenter:
    """Acknowledges, assigns and closes escalated incidents through the operator API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        dispatch_url: str,
        token: str,
        *,
        speed: float,
        poll_s: float = 2.0,
        ack_share: float = 0.9,
        ack_minutes: tuple[float, float] = (0.5, 4.0),
        close_minutes: tuple[float, float] = (45.0, 120.0),
        close_share: float = 0.8,
        seed: int = 0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self.http, self.url = http, dispatch_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.speed, self.poll_s = speed, poll_s
        self.ack_share, self.ack_minutes = ack_share, ack_minutes
        self.close_minutes, self.close_share = close_minutes, close_share
        self.rng = random.Random(seed ^ 0x5EC0)
        self.stats = CommandStats()
        self._decided: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def real_s(self, sim_minutes: float) -> float:
        """Real seconds that `sim_minutes` of the sped-up day last."""
        return sim_minutes * 60 / self.speed

    async def poll(self) -> None:
        """One look at the escalated incidents; each new one gets its decision, carried out later."""
        try:
            r = await self.http.get(
                f"{self.url}/v1/incidents", params={"status": "escalated", "limit": 1000}, headers=self.headers
            )
        except httpx.HTTPError:
            self.stats.errors += 1
            return
        self.stats.polls += 1
        if r.status_code != 200:
            self.stats.errors += 1
            return
        for inc in r.json()["items"]:
            if inc["id"] in self._decided:
                continue
            self._decided.add(inc["id"])
            self.stats.seen += 1
            if self.rng.random() >= self.ack_share:
                self.stats.left += 1  # busy elsewhere: this one climbs, as the ladder says
                continue
            delay = self.real_s(self.rng.uniform(*self.ack_minutes))
            close = self.real_s(self.rng.uniform(*self.close_minutes)) if self.rng.random() < self.close_share else None
            self._spawn(self._handle(inc, delay, close))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def needs_someone(self, inc: dict[str, Any]) -> bool:
        """Whether a duty officer would send a unit to this incident."""
        if inc["category"] in ALWAYS_SEND:
            return True
        return inc["category"] in SEND_FOR and inc["severity"] in ("high", "critical")

    async def _handle(self, inc: dict[str, Any], delay_s: float, close_s: float | None) -> None:
        await asyncio.sleep(delay_s)
        answer = await self._act(inc["id"], "ack")
        if answer is None:
            return  # resolved meanwhile, or already acknowledged by the operator at the screen
        self.stats.acknowledged += 1
        if self.needs_someone(answer) and not answer.get("orders"):
            sent = await self._act(
                inc["id"], "assign", {"nearest": True, "note": "segera merapat ke lokasi, laporkan situasi"}
            )
            if sent is not None:
                self.stats.assigned += 1
        if close_s is None:
            return
        await asyncio.sleep(close_s)
        now = await self._get(inc["id"])
        if now is None or now["status"] != "acknowledged":
            return  # the field resolved it meanwhile
        if await self._act(inc["id"], "resolve", {"resolution": self.rng.choice(_RESOLUTIONS)}) is not None:
            self.stats.resolved += 1

    async def _get(self, incident_id: str) -> dict[str, Any] | None:
        try:
            r = await self.http.get(f"{self.url}/v1/incidents/{incident_id}", headers=self.headers)
        except httpx.HTTPError:
            self.stats.errors += 1
            return None
        return dict(r.json()) if r.status_code == 200 else None

    async def _act(self, incident_id: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """POST an operator action; the incident on success, None when refused (409: overtaken by events)."""
        try:
            r = await self.http.post(f"{self.url}/v1/incidents/{incident_id}/{action}", json=body, headers=self.headers)
        except httpx.HTTPError:
            self.stats.errors += 1
            return None
        if r.status_code == 200:
            return dict(r.json())
        if r.status_code == 409 and action == "assign":
            self.stats.nobody_free += 1
        elif r.status_code != 409:
            self.stats.errors += 1
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; then cancel what is still waiting."""
        try:
            while not stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
