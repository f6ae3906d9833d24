"""The roll-up view of SPEC section 10: per-region aggregates instead of every TPS.

A hub (services/dashboard/hub.py) keeps `RegionTotals` for all three levels at once, updated with
its statistics on every change: TPS by state, open and escalated incidents by severity, resolved
incidents and personnel coverage, per provinsi, per kabupaten and per kecamatan. A `SummaryStream`
per (hub, level) turns them into frames for `/ws?view=summary&by=<level>`:

- `{"type": "summary", "seq", "by", "full": true, "regions": [every region]}` first;
- then, at most once per stats interval, `{"type": "summary", "seq": <next>, "by", "full": false,
  "regions": [the regions that changed]}`. A region row is always whole: a client replaces it.

Counts that are zero are left out of a row, so a national summary by kabupaten (514 rows) stays
small (bench/national.py measures it). A summary client that resumes gets a full summary again,
unless it already has the current seq: the summary is small, a replay buffer would not pay.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from services.dashboard.frames import ClientQueue, Frame

Level = Literal["provinsi", "kabupaten", "kecamatan"]
LEVELS: tuple[Level, ...] = ("provinsi", "kabupaten", "kecamatan")
Region = tuple[str, ...]  # (provinsi,), (provinsi, kabupaten) or (provinsi, kabupaten, kecamatan)


class RegionCounts:
    """One region's figures."""

    __slots__ = ("assigned", "checked_in", "escalated", "open", "resolved", "tps")

    def __init__(self) -> None:
        self.tps: Counter[str] = Counter()  # TPS by state
        self.open: Counter[str] = Counter()  # unresolved incidents by severity
        self.escalated: Counter[str] = Counter()  # of those, escalated past on-site (level >= 1)
        self.resolved = 0
        self.assigned = 0
        self.checked_in = 0

    def add(self, other: RegionCounts) -> None:
        self.tps.update(other.tps)
        self.open.update(other.open)
        self.escalated.update(other.escalated)
        self.resolved += other.resolved
        self.assigned += other.assigned
        self.checked_in += other.checked_in

    def row(self, region: Region) -> dict[str, Any]:
        row: dict[str, Any] = dict(zip(LEVELS, region, strict=False))
        row["tps"] = {k: n for k, n in self.tps.items() if n}
        row["open"] = {k: n for k, n in self.open.items() if n}
        row["escalated"] = {k: n for k, n in self.escalated.items() if n}
        row["resolved"] = self.resolved
        row["coverage"] = {"assigned": self.assigned, "checked_in": self.checked_in}
        return row


def regions_of(provinsi: str, kabupaten: str, kecamatan: str) -> tuple[Region, Region, Region]:
    return (provinsi,), (provinsi, kabupaten), (provinsi, kabupaten, kecamatan)


class RegionTotals:
    """The running figures of every region at every level, and which changed since last taken."""

    def __init__(self) -> None:
        self.regions: dict[Level, dict[Region, RegionCounts]] = {level: {} for level in LEVELS}
        self.dirty: dict[Level, set[Region]] = {level: set() for level in LEVELS}

    def _held(self, level: Level, region: Region) -> RegionCounts:
        held = self.regions[level]
        counts = held.get(region)
        if counts is None:
            counts = held[region] = RegionCounts()
        self.dirty[level].add(region)
        return counts

    def adopt(self, source: RegionTotals, kabupaten: str) -> None:
        """Add up one kabupaten's totals of another hub (its kecamatan, itself, and into its provinsi)."""
        for region, counts in source.regions["kabupaten"].items():
            if region[1] == kabupaten:
                self._held("kabupaten", region).add(counts)
                self._held("provinsi", region[:1]).add(counts)
        for region, counts in source.regions["kecamatan"].items():
            if region[1] == kabupaten:
                self._held("kecamatan", region).add(counts)

    def _counts(self, where: tuple[str, str, str]) -> list[RegionCounts]:
        out = []
        for level, region in zip(LEVELS, regions_of(*where), strict=True):
            held = self.regions[level]
            counts = held.get(region)
            if counts is None:
                counts = held[region] = RegionCounts()
            self.dirty[level].add(region)
            out.append(counts)
        return out

    def incident(
        self, where: tuple[str, str, str], severity: str, unresolved: bool, escalated: bool, sign: int
    ) -> None:
        for c in self._counts(where):
            if unresolved:
                c.open[severity] += sign
                if escalated:
                    c.escalated[severity] += sign
            else:
                c.resolved += sign

    def tps(self, where: tuple[str, str, str], state: str, assigned: int, checked_in: int, sign: int) -> None:
        for c in self._counts(where):
            c.tps[state] += sign
            c.assigned += sign * assigned
            c.checked_in += sign * checked_in

    def rows(self, level: Level, only: set[Region] | None = None) -> list[dict[str, Any]]:
        """The rows of a level (or of the regions named), sorted by name."""
        held = self.regions[level]
        keys = sorted(held if only is None else only & held.keys())
        return [held[k].row(k) for k in keys]

    def take_dirty(self, level: Level) -> set[Region]:
        changed, self.dirty[level] = self.dirty[level], set()
        return changed

    def provinsi_of(self, kabupaten: str) -> str | None:
        """The provinsi a kabupaten is in, as the updates say (None: no TPS or incident names it)."""
        for prov, kab in self.regions["kabupaten"]:
            if kab == kabupaten:
                return prov
        return None


class SummaryStream:
    """The summary frames of one hub at one level, and the clients that read them."""

    def __init__(self, totals: RegionTotals, by: Level, *, first_seq: int) -> None:
        self.totals, self.by = totals, by
        self.seq = first_seq
        self._clients: set[ClientQueue] = set()
        self._snapshot: Frame | None = None
        totals.take_dirty(by)  # the first full summary covers what changed before now

    def snapshot(self) -> Frame:
        """Every region at the current seq (cached until the next delta)."""
        if self._snapshot is None or self._snapshot.seq != self.seq:
            self._snapshot = self._frame(full=True, rows=self.totals.rows(self.by))
        return self._snapshot

    def _frame(self, *, full: bool, rows: list[dict[str, Any]]) -> Frame:
        return Frame({"type": "summary", "seq": self.seq, "by": self.by, "full": full, "regions": rows})

    def flush(self) -> Frame | None:
        """The delta of the regions changed since the last flush; None when none did."""
        changed = self.totals.take_dirty(self.by)
        if not changed:
            return None
        self.seq += 1
        frame = self._frame(full=False, rows=self.totals.rows(self.by, changed))
        for client in list(self._clients):
            client.deliver(frame)
        return frame

    def attach(self, client: ClientQueue, since: int | None = None) -> None:
        """Start a client: nothing to send when it holds the current seq, else a full summary; then deltas."""
        if since != self.seq:
            client.request_snapshot()
        self._clients.add(client)

    def detach(self, client: ClientQueue) -> None:
        self._clients.discard(client)

    @property
    def clients(self) -> int:
        return len(self._clients)
