"""The dashboard's live picture and its delta stream: pure, no I/O, one per dashboard process.

The hub folds the messages of `siaga.incident-updates` (siaga.contracts: `IncidentChanged`,
`TpsChanged`) into the current picture (incidents and TPS by id, each kept only when its
`version` is newer), numbers every change with the next
`seq`, keeps the most recent deltas for clients that resume, and computes the command-center
statistics incrementally. Clients attach a `ClientQueue`; the hub hands it every delta
synchronously, so attaching (snapshot or replay) and going live happen with no await in
between: no gap and no duplicate.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from services.dashboard.frames import ClientQueue, Frame, batch_text
from services.dashboard.summary import Level, RegionTotals, SummaryStream
from siaga.contracts import (
    INCIDENT_UPDATE,
    IncidentChanged,
    IncidentPublic,
    TpsChanged,
    TpsPublic,
    validation_problems,
)

__all__ = ["ClientQueue", "Frame", "Hub", "InvalidUpdate", "batch_text", "parse_update", "region_of"]

TPS_STATES = ("normal", "open", "escalated", "silent", "closed")
UNRESOLVED = ("open", "escalated", "acknowledged")


class InvalidUpdate(ValueError):
    """A message on the updates topic the hub cannot use (not JSON, or not valid by its contract)."""


# The strings a national picture repeats hundreds of thousands of times (bench.national: ~150 MB of
# region names alone when every TPS document holds its own copy).
SHARED_STRINGS = ("provinsi", "kabupaten", "kecamatan", "desa", "state", "phase")


def _share_strings(doc: dict[str, Any]) -> None:
    for key in SHARED_STRINGS:
        value = doc.get(key)
        if type(value) is str:
            doc[key] = sys.intern(value)


def _where(part: IncidentPublic | TpsPublic) -> tuple[str, str, str]:
    """(provinsi, kabupaten, kecamatan), interned: a national hub holds 823,220 TPS parts."""
    return sys.intern(part.provinsi), sys.intern(part.kabupaten), sys.intern(part.kecamatan)


@dataclass(frozen=True, slots=True)
class _IncidentPart:
    """What one incident adds to the statistics (subtracted again when a newer copy arrives)."""

    where: tuple[str, str, str]  # (provinsi, kabupaten, kecamatan)
    severity: str
    status: str
    unresolved: bool
    escalated: bool
    on_site: bool
    alert_failed: bool
    resolve_s: float | None

    @classmethod
    def of(cls, inc: IncidentPublic) -> _IncidentPart:
        status = inc.status.value
        unresolved = status != "resolved"
        resolve_s: float | None = None
        if not unresolved and inc.resolved_at is not None:
            # opened_at is device time and resolved_at server time: a fast clock on the device
            # must not make a negative duration.
            resolve_s = max(0.0, (inc.resolved_at - inc.opened_at).total_seconds())
        return cls(
            where=_where(inc),
            severity=inc.severity.value,
            status=status,
            unresolved=unresolved,
            escalated=unresolved and inc.level >= 1,
            on_site=not unresolved and inc.level == 0,
            alert_failed=bool(inc.last_alert_failure),
            resolve_s=resolve_s,
        )


HEALTH = ("unwell", "off_duty", "fatigued", "lapsed")  # the personnel counts a TPS frame carries


@dataclass(frozen=True, slots=True)
class _TpsPart:
    where: tuple[str, str, str]  # (provinsi, kabupaten, kecamatan)
    state: str
    assigned: int
    checked_in: int
    health: tuple[int, ...]  # HEALTH, in order
    duty_days: int

    @classmethod
    def of(cls, tps: TpsPublic) -> _TpsPart:
        return cls(
            where=_where(tps),
            state=tps.state.value,
            assigned=tps.assigned,
            checked_in=tps.checked_in,
            health=(tps.unwell, tps.off_duty, tps.fatigued, tps.lapsed),
            duty_days=tps.duty_days,
        )


@dataclass
class _Aggregates:
    """Running sums behind `Hub.stats()`, updated per change instead of recounted."""

    by_status: Counter[str] = field(default_factory=Counter)
    kec: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)  # by (kabupaten, kecamatan)
    on_site: int = 0
    alert_failures: int = 0
    durations: list[float] = field(default_factory=list)  # sorted, for the median
    tps_states: Counter[str] = field(default_factory=Counter)
    assigned: int = 0
    checked_in: int = 0
    health: Counter[str] = field(default_factory=Counter)

    def _kec(self, name: tuple[str, str]) -> Counter[str]:
        c = self.kec.get(name)
        if c is None:
            c = self.kec[name] = Counter()
        return c

    def incident(self, p: _IncidentPart, sign: int) -> None:
        self.by_status[p.status] += sign
        k = self._kec((p.where[1], p.where[2]))
        k["open"] += sign * p.unresolved
        k["escalated"] += sign * p.escalated
        k["resolved"] += sign * (not p.unresolved)
        self.on_site += sign * p.on_site
        self.alert_failures += sign * p.alert_failed
        if p.resolve_s is not None:
            if sign > 0:
                bisect.insort(self.durations, p.resolve_s)
            else:
                del self.durations[bisect.bisect_left(self.durations, p.resolve_s)]

    def tps(self, p: _TpsPart, sign: int) -> None:
        self.tps_states[p.state] += sign
        k = self._kec((p.where[1], p.where[2]))
        k["tps"] += sign
        k["on_duty"] += sign * p.checked_in
        for name, n in zip(HEALTH, p.health, strict=True):
            k[name] += sign * n
            self.health[name] += sign * n
        if p.duty_days:  # a histogram, so that the kecamatan's most days on duty survives a subtraction
            k[f"days:{p.duty_days}"] += sign
        self.assigned += sign * p.assigned
        self.checked_in += sign * p.checked_in

    def add(self, other: _Aggregates) -> None:
        """Sum another's figures into these (a view made of whole kabupaten: `Hub.adopt`)."""
        self.by_status.update(other.by_status)
        for name, counts in other.kec.items():
            self._kec(name).update(counts)
        self.on_site += other.on_site
        self.alert_failures += other.alert_failures
        self.durations = list(heapq.merge(self.durations, other.durations))
        self.tps_states.update(other.tps_states)
        self.assigned += other.assigned
        self.checked_in += other.checked_in
        self.health.update(other.health)

    def median_resolve_s(self) -> float | None:
        d = self.durations
        if not d:
            return None
        mid = len(d) // 2
        return d[mid] if len(d) % 2 else (d[mid - 1] + d[mid]) / 2


def _by_kecamatan(kec: dict[tuple[str, str], Counter[str]]) -> dict[str, dict[str, int]]:
    """The stats' rows per kecamatan, by name; a name that more than one kabupaten of the view has is
    written `Kabupaten/Kecamatan` for each of them (names repeat across the country)."""
    shown = {(kab, name): c for (kab, name), c in kec.items() if name and any(c.values())}
    homonyms = Counter(name for _, name in shown)
    return {
        (f"{kab}/{name}" if homonyms[name] > 1 else name): _kecamatan(c)
        for (kab, name), c in sorted(shown.items(), key=lambda item: (item[0][1], item[0][0]))
    }


def _kecamatan(c: Counter[str]) -> dict[str, int]:
    """One kecamatan's row of the stats: its incidents, and the health of its personnel (SPEC section 9)."""
    days = [int(k[5:]) for k, n in c.items() if k.startswith("days:") and n > 0]
    row = {k: c[k] for k in ("tps", "open", "escalated", "resolved", "on_duty", *HEALTH)}
    row["duty_days"] = max(days, default=0)
    return row


def _index(by_kabupaten: dict[str, set[str]], ident: str, was: str | None, now: str) -> None:
    if was == now:
        return
    if was is not None:
        by_kabupaten[was].discard(ident)
    by_kabupaten.setdefault(now, set()).add(ident)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def parse_update(raw: bytes) -> tuple[IncidentChanged | TpsChanged, dict[str, Any]]:
    """An updates-topic message checked by its contract, and its own JSON (what a hub holds and sends)."""
    try:
        update = INCIDENT_UPDATE.validate_json(raw)
    except ValidationError as exc:
        raise InvalidUpdate(f"not a valid incident update: {validation_problems(exc)}") from None
    # A second, plain parse for the JSON to hold: cheaper than dumping the model back to a dict.
    return update, orjson.loads(raw)


def region_of(update: IncidentChanged | TpsChanged) -> tuple[str, str, str]:
    """(provinsi, kabupaten, kecamatan) of an update: what a scope admits or not."""
    part: IncidentPublic | TpsPublic = update.incident if isinstance(update, IncidentChanged) else update.tps
    return part.provinsi, part.kabupaten, part.kecamatan


class Hub:
    """The current picture, the numbered delta stream and the statistics of one dashboard (or of one
    scope's view of it: services/dashboard/app.py keeps a hub per token scope)."""

    def __init__(self, replay_buffer: int, *, first_seq: int = 0, per_kabupaten: bool = False) -> None:
        self.first_seq = first_seq
        self.seq = first_seq
        self.incidents: dict[str, dict[str, Any]] = {}
        self.tps: dict[str, dict[str, Any]] = {}
        self._inc_parts: dict[str, _IncidentPart] = {}
        self._tps_parts: dict[str, _TpsPart] = {}
        self._agg = _Aggregates()
        self.regions = RegionTotals()
        self._summaries: dict[Level, SummaryStream] = {}
        # The ids held per kabupaten: a region's view (services/dashboard/app.py) is made from these,
        # not from a walk over a national registry.
        self.tps_by_kabupaten: dict[str, set[str]] = {}
        self.incidents_by_kabupaten: dict[str, set[str]] = {}
        # The statistics of each kabupaten too (the main hub's): a region's view adds up its
        # kabupaten's instead of applying its TPS one by one (bench.national: 23,663 TPS in ~1 s).
        self._by_kabupaten: dict[str, _Aggregates] | None = {} if per_kabupaten else None
        self._recent: deque[Frame] = deque(maxlen=max(0, replay_buffer))
        self._clients: set[ClientQueue] = set()
        self._snapshot: Frame | None = None
        self._last_stats: dict[str, Any] | None = None
        self.ignored = 0  # copies not newer than what is held (redelivery)

    # -- input ------------------------------------------------------------------------------------
    def apply(self, raw: bytes) -> Frame | None:
        """Fold one updates-topic message (its bytes) in; the delta it produced, or None when not newer.

        The message is checked by its contract; what the hub holds and sends on is the message's own
        JSON, so a field a newer dispatch adds reaches the page too. Raises InvalidUpdate, with the
        reason, for a message that is not valid.
        """
        return self.apply_parsed(*parse_update(raw))

    def apply_parsed(self, update: IncidentChanged | TpsChanged, body: dict[str, Any]) -> Frame | None:
        """`apply` of an update already checked and parsed (`parse_update`): a scoped hub's input."""
        if isinstance(update, IncidentChanged):
            return self._apply_incident(update.incident, body["incident"])
        return self._apply_tps(update.tps, body["tps"])

    def _apply_incident(self, typed: IncidentPublic, inc: dict[str, Any]) -> Frame | None:
        ident, version = typed.id, typed.version
        held = self.incidents.get(ident)
        if held is not None and held["version"] >= version:
            self.ignored += 1
            return None
        old = self._inc_parts.get(ident)
        part = _IncidentPart.of(typed)
        if old is not None:
            self._agg.incident(old, -1)
        self._agg.incident(part, +1)
        if self._by_kabupaten is not None:
            if old is not None:
                self._kabupaten_agg(old.where[1]).incident(old, -1)
            self._kabupaten_agg(part.where[1]).incident(part, +1)
        if old is None or (old.where, old.severity, old.unresolved, old.escalated) != (
            part.where,
            part.severity,
            part.unresolved,
            part.escalated,
        ):
            if old is not None:
                self.regions.incident(old.where, old.severity, old.unresolved, old.escalated, -1)
            self.regions.incident(part.where, part.severity, part.unresolved, part.escalated, +1)
            _index(self.incidents_by_kabupaten, ident, None if old is None else old.where[1], part.where[1])
        self.incidents[ident], self._inc_parts[ident] = inc, part
        return self._issue({"type": "incident", "incident": inc})

    def _apply_tps(self, typed: TpsPublic, tps: dict[str, Any]) -> Frame | None:
        ident, version = typed.tps_id, typed.version
        held = self.tps.get(ident)
        if held is not None and held["version"] >= version:
            self.ignored += 1
            return None
        old = self._tps_parts.get(ident)
        part = _TpsPart.of(typed)
        _share_strings(tps)
        if old is not None:
            self._agg.tps(old, -1)
        self._agg.tps(part, +1)
        if self._by_kabupaten is not None:
            if old is not None:
                self._kabupaten_agg(old.where[1]).tps(old, -1)
            self._kabupaten_agg(part.where[1]).tps(part, +1)
        # Most TPS updates are check-ins that change none of what a region counts.
        if old is None or (old.where, old.state, old.assigned, old.checked_in) != (
            part.where,
            part.state,
            part.assigned,
            part.checked_in,
        ):
            if old is not None:
                self.regions.tps(old.where, old.state, old.assigned, old.checked_in, -1)
            self.regions.tps(part.where, part.state, part.assigned, part.checked_in, +1)
            _index(self.tps_by_kabupaten, ident, None if old is None else old.where[1], part.where[1])
        self.tps[ident], self._tps_parts[ident] = tps, part
        return self._issue({"type": "tps", "tps": tps})

    def flush_stats(self) -> Frame | None:
        """A stats delta when the statistics changed since the last one (the caller paces this)."""
        stats = self.stats()
        if stats == self._last_stats:
            return None
        self._last_stats = stats
        return self._issue({"type": "stats", "stats": stats})

    def _kabupaten_agg(self, name: str) -> _Aggregates:
        assert self._by_kabupaten is not None
        agg = self._by_kabupaten.get(name)
        if agg is None:
            agg = self._by_kabupaten[name] = _Aggregates()
        return agg

    def can_adopt(self) -> bool:
        """Whether this hub keeps what `adopt` copies (the per-kabupaten statistics)."""
        return self._by_kabupaten is not None

    def adopt(self, source: Hub, kabupaten: str) -> None:
        """Take in one whole kabupaten of `source`'s picture (a hub with `per_kabupaten`): its documents
        and their parts as they are, its statistics and its region totals added up, with no
        re-validation and no delta. For a new region view, before any client attaches."""
        assert source._by_kabupaten is not None, "adopt from a hub that keeps per-kabupaten statistics"
        for ident in source.tps_by_kabupaten.get(kabupaten, ()):
            self.tps[ident], self._tps_parts[ident] = source.tps[ident], source._tps_parts[ident]
        for ident in source.incidents_by_kabupaten.get(kabupaten, ()):
            self.incidents[ident], self._inc_parts[ident] = source.incidents[ident], source._inc_parts[ident]
        self.tps_by_kabupaten.setdefault(kabupaten, set()).update(source.tps_by_kabupaten.get(kabupaten, ()))
        self.incidents_by_kabupaten.setdefault(kabupaten, set()).update(
            source.incidents_by_kabupaten.get(kabupaten, ())
        )
        agg = source._by_kabupaten.get(kabupaten)
        if agg is not None:
            self._agg.add(agg)
        self.regions.adopt(source.regions, kabupaten)

    def summary(self, by: Level) -> SummaryStream:
        """The roll-up stream of this hub's picture at one level (made on first use)."""
        stream = self._summaries.get(by)
        if stream is None:
            stream = self._summaries[by] = SummaryStream(self.regions, by, first_seq=self.first_seq)
        return stream

    def flush_summaries(self) -> int:
        """Send the summary deltas due (the caller paces this with the stats); how many went out."""
        return sum(stream.flush() is not None for stream in self._summaries.values())

    def _issue(self, body: dict[str, Any]) -> Frame:
        self.seq += 1
        frame = Frame({"type": body["type"], "seq": self.seq, **{k: v for k, v in body.items() if k != "type"}})
        self._recent.append(frame)
        for client in list(self._clients):
            client.deliver(frame)
        return frame

    # -- output -----------------------------------------------------------------------------------
    def snapshot(self) -> Frame:
        """The whole picture at the current seq (cached until the next delta)."""
        if self._snapshot is None or self._snapshot.seq != self.seq:
            self._snapshot = Frame(
                {
                    "type": "snapshot",
                    "seq": self.seq,
                    "incidents": list(self.incidents.values()),
                    "tps": list(self.tps.values()),
                    "stats": self.stats(),
                }
            )
        return self._snapshot

    def replay_since(self, since: int) -> list[Frame] | None:
        """The deltas after `since` when all are still held, else None (the client needs a snapshot).

        None too when this hub never issued `since` (before its first seq, or beyond its last).
        """
        if since < self.first_seq or since > self.seq:
            return None
        if since == self.seq:
            return []
        if not self._recent or self._recent[0].seq > since + 1:
            return None
        start = since + 1 - self._recent[0].seq
        return list(itertools.islice(self._recent, start, None))

    def attach(self, client: ClientQueue, since: int | None = None) -> None:
        """Start a client: a replay from `since` when possible, else a snapshot; then every delta.

        Atomic (no await): nothing issued before this call is missed, nothing is sent twice.
        """
        replay = None if since is None else self.replay_since(since)
        if replay is None or len(replay) > client.limit:
            client.request_snapshot()
        else:
            client.preload(replay)
        self._clients.add(client)

    def detach(self, client: ClientQueue) -> None:
        self._clients.discard(client)

    @property
    def clients(self) -> int:
        """Clients of this hub: its detail view and its summaries."""
        return len(self._clients) + sum(stream.clients for stream in self._summaries.values())

    def stats(self) -> dict[str, Any]:
        """The command-center figures (docs/dashboard.md lists them)."""
        a = self._agg
        resolved = a.by_status["resolved"]
        unresolved = sum(a.by_status[s] for s in a.by_status if s != "resolved")
        by_kec = _by_kecamatan(a.kec)
        median = a.median_resolve_s()
        return {
            "incidents": {
                "total": len(self.incidents),
                "open": unresolved,
                "escalated": sum(c["escalated"] for c in a.kec.values()),
                "acknowledged": a.by_status["acknowledged"],
                "resolved": resolved,
            },
            "by_kecamatan": by_kec,
            "resolved_on_site": {"resolved": resolved, "on_site": a.on_site, "share": _share(a.on_site, resolved)},
            "median_resolve_s": None if median is None else round(median, 1),
            "coverage": {
                "assigned": a.assigned,
                "checked_in": a.checked_in,
                "share": _share(min(a.checked_in, a.assigned), a.assigned),
                **{name: a.health[name] for name in HEALTH},
            },
            "silent_posts": a.tps_states["silent"],
            "alert_failures": a.alert_failures,
            "tps": {"total": len(self.tps), "by_state": {s: a.tps_states[s] for s in TPS_STATES}},
        }
