"""The plan of a simulated election day: every event, its simulated time and the device that sends it.

Pure and deterministic: the same seed, TPS and devices give the same plan (same event ids, texts
and times). Times are minutes since midnight WIB of the election day; the runner maps them onto
the real clock. Event dicts carry no `occurred_at`: it is set from `PlannedEvent.at` when sent.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from siaga.demo.registry import PersonnelRow, TpsRow
from siaga.events import EventType, Phase
from siaga.simulator.texts import VOTE_DAY, CategoryTexts, DutyDay, Texts

DAY_START = 5 * 60 + 30  # 05:30 WIB: personnel report for duty
_ARRIVAL_MINUTES = 2.0  # the earliest an everyday incident is reported: just after the posts are manned
# Version 4 and RFC 4122 variant bits of a UUID, as uuid.UUID(int=..., version=4) sets them.
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
# Pilkada 2024: a box for the governor's race and one for the regent's (a Pemilu has five).
BALLOT_BOXES = ("GUB", "BUP")
PHASES = [Phase.PREPARATION, Phase.OPENING, Phase.VOTING, Phase.COUNTING, Phase.TRANSPORT, Phase.CLOSED]


@dataclass(frozen=True)
class SimDevice:
    """A device as the simulator sees it: a token, the TPS it may post for, who checks in through it."""

    index: int
    token: str = field(repr=False)
    tps_ids: tuple[str, ...]
    personnel_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedEvent:
    """A field event at simulated minute `at` (minutes since midnight WIB)."""

    at: float
    event: dict[str, Any]


@dataclass
class Send:
    """One request a device makes at simulated minute `at`: one event, or a backlog batch."""

    at: float
    device: int
    events: list[PlannedEvent]
    batch: bool = False


@dataclass
class DayPlan:
    """Every request of the day in time order, and the day's story for the record."""

    sends: list[Send]
    scenario: dict[str, Any]
    start: float = DAY_START  # the simulated minute the day begins (its duty hours)

    @property
    def events(self) -> int:
        return sum(len(s.events) for s in self.sends)


@dataclass
class _Tps:
    row: TpsRow
    devices: list[int]  # own devices first (bound to few TPS), reserve and gateways last
    phases: dict[Phase, float] = field(default_factory=dict)
    end: float = 24 * 60  # the end of the day's duty: the close of a day whose TPS never close

    @property
    def closed_at(self) -> float:
        return self.phases.get(Phase.CLOSED, self.end)


class DayPlanner:
    """Builds a DayPlan; one instance per plan."""

    def __init__(
        self,
        *,
        seed: int,
        tps: Sequence[TpsRow],
        devices: Sequence[SimDevice],
        personnel: Sequence[PersonnelRow],
        texts: Texts,
        checkin_minutes: tuple[float, float] = (10.0, 20.0),
        day: int = VOTE_DAY,
    ) -> None:
        if day not in texts.days:
            raise ValueError(f"day must be one of {sorted(texts.days)}, not {day}")
        self.day: DutyDay = texts.days[day]
        self.vote = day == VOTE_DAY
        # Each day its own streams, so the same seed on two days never repeats an event id.
        suffix = "" if self.vote else f"-day-{day}"
        self.rng = random.Random(seed) if self.vote else random.Random(f"{seed}{suffix}")
        # The evening transport draws from its own stream, so adding it moved nothing else of the day.
        self.escort_rng = random.Random(f"{seed}-escorts{suffix}")
        # Who falls sick: a stream of its own too, so illness leaves the rest of the day as it was.
        self.health_rng = random.Random(f"{seed}-health{suffix}")
        self.texts = texts
        self.devices = list(devices)
        self.checkin_minutes = checkin_minutes
        own_first = sorted(devices, key=lambda d: (len(d.tps_ids), d.index))
        self.tps: dict[str, _Tps] = {}
        for row in tps:
            mine = [d.index for d in own_first if row.tps_id in d.tps_ids]
            if mine:
                self.tps[row.tps_id] = _Tps(row, mine, end=self.day.duty[1])
        if self.day.tps_share < 1 and self.tps:
            # The posts with work that day; the others stand down.
            count = max(1, round(len(self.tps) * self.day.tps_share))
            working = set(self.rng.sample(sorted(self.tps), count))
            self.tps = {t: v for t, v in self.tps.items() if t in working}
        self.personnel = [p for p in personnel if any(t in self.tps for t in p.tps_ids)]
        self.events: list[tuple[int, PlannedEvent]] = []  # (device, event)
        self.busy: set[str] = set()  # TPS with a scripted situation: never silent
        self.story: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _id(self) -> str:
        return seeded_uuid(self.rng)

    def _add(self, device: int, at: float, type_: EventType, tps_id: str, payload: dict[str, Any]) -> str:
        event_id = self._id()
        event = {"event_id": event_id, "type": type_.value, "tps_id": tps_id, "payload": payload}
        self.events.append((device, PlannedEvent(round(at, 4), event)))
        return event_id

    def _uniform(self, pair: Sequence[float]) -> float:
        return self.rng.uniform(float(pair[0]), float(pair[1]))

    def _reporter(self, tps: _Tps) -> int:
        # The TPS's own phones (Linmas pair, TPS officer) report; the reserve rarely does.
        own = tps.devices[:2]
        return self.rng.choice(own)

    def _location(self, row: TpsRow, spread: float = 0.0006) -> dict[str, float]:
        return {
            "lat": round(row.lat + self.rng.uniform(-spread, spread), 6),
            "lon": round(row.lon + self.rng.uniform(-spread, spread), 6),
        }

    def _context(self, tps: _Tps, **facts: int) -> dict[str, Any]:
        return {
            "tps": tps.row.name,
            "desa": tps.row.desa,
            "kecamatan": tps.row.kecamatan,
            "paslon": self.rng.choice(self.texts.words["paslon"]),
            **facts,
        }

    # -- the day ---------------------------------------------------------------------------------
    def build(self) -> DayPlan:
        """The whole day: phases, check-ins, everyday incidents, the day's scripted situations, outages."""
        scripted = self.day.scenarios
        for tps in self.tps.values():
            if self.vote:
                self._phases(tps)
            else:
                self._day_phases(tps)
        if "serangan_fajar" in scripted:
            self._serangan_fajar()
        if "floods" in scripted:
            self._floods()
        if "clash" in scripted:
            self._clash()
        if "critical" in scripted:
            self._critical()
        for tps in self.tps.values():
            self._everyday_incidents(tps)
        self._checkins()
        if "escorts" in scripted:
            self._escorts()
        silent = self._silent_posts() if "silent_posts" in scripted else {}
        sends = self._outages(silent, any_offline="outages" in scripted)
        sends.sort(key=lambda s: s.at)
        return DayPlan(sends=sends, scenario=self.story, start=DAY_START if self.vote else self.day.duty[0])

    def _day_phases(self, tps: _Tps) -> None:
        """A day after or before the vote: the TPS phases of the day's data, each in its window."""
        rng = self.rng
        previous = -math.inf
        device = tps.devices[0]
        for name, low, high in self.day.phases:
            phase = Phase(name)
            at = max(rng.uniform(low, high), previous + 1)
            tps.phases[phase] = previous = at
            note = rng.choice(self.texts.phase_notes[phase.value])
            payload: dict[str, Any] = {"phase": phase.value, **({"note": note} if note else {})}
            self._add(device, at, EventType.TPS_STATUS, tps.row.tps_id, payload)

    def _phases(self, tps: _Tps) -> None:
        rng = self.rng
        prep = min(max(rng.gauss(6 * 60, 8), 5 * 60 + 45), 6 * 60 + 30)
        opening = 7 * 60 + rng.uniform(-3, 6)
        voting = opening + rng.uniform(2, 10)
        counting = 13 * 60 + rng.uniform(0, 20)
        # Counting takes three to six hours; a few TPS drag on into the evening.
        transport = counting + min(rng.uniform(150, 300) + rng.expovariate(1 / 30), 7 * 60)
        closed = transport + rng.uniform(25, 90)
        times = [prep, opening, voting, counting, transport, closed]
        device = tps.devices[0]
        for phase, at in zip(PHASES, times, strict=True):
            tps.phases[phase] = at
            note = rng.choice(self.texts.phase_notes[phase.value])
            payload: dict[str, Any] = {"phase": phase.value}
            if note:
                payload["note"] = note
            self._add(device, at, EventType.TPS_STATUS, tps.row.tps_id, payload)

    def _checkins(self) -> None:
        by_personnel: dict[str, int] = {}
        for d in self.devices:
            for pid in d.personnel_ids:
                by_personnel.setdefault(pid, d.index)
        for person in self.personnel:
            stations = [self.tps[t] for t in person.tps_ids if t in self.tps]
            self._person_day(person, stations, by_personnel.get(person.personnel_id))

    def _person_day(self, person: PersonnelRow, stations: list[_Tps], device: int | None) -> None:
        rng = self.rng
        reserve = person.role == "reserve"
        low, high = self.checkin_minutes
        if reserve:  # the kecamatan reserve waits at the Polsek and reports less often
            low, high = low * 3, high * 3
        first, last = self.day.duty
        if self.vote:
            at = DAY_START + rng.uniform(0, 30)
            end = max(s.closed_at for s in stations) + rng.uniform(5, 30)
        else:  # the other days: the day's duty hours
            at = first + rng.uniform(0, 30)
            end = last - rng.uniform(0, 30)
        battery = rng.uniform(65, 100)
        drain = rng.uniform(0.6, 2.2)
        ill = (9 * 60, 19 * 60) if self.vote else (first + 60, max(first + 60, last - 60))
        unwell_from = rng.uniform(*ill) if rng.random() < self.day.unwell else math.inf
        unwell_until = unwell_from + rng.uniform(20, 120)
        home = stations[0]
        if person.role != "linmas" and self.health_rng.random() < self.day.sick:
            # Too ill to stay: reports unwell on arrival and goes home, and the post is a person short.
            self._checkin(device, home, person.personnel_id, "unwell", battery, at)
            self._checkin(device, home, person.personnel_id, "off_duty", battery, at + self.health_rng.uniform(5, 20))
            self.story.setdefault("sick", []).append(person.personnel_id)
            return
        while at < end:
            tps = home if rng.random() < 0.7 else rng.choice(stations)
            status = "unwell" if unwell_from <= at < unwell_until else "on_duty"
            self._checkin(device, tps, person.personnel_id, status, battery, at)
            at += rng.uniform(low, high)
            battery -= drain * rng.uniform(0.5, 1.5)
            if battery < 12 and rng.random() < 0.6:  # power bank
                battery = rng.uniform(55, 90)
            battery = max(battery, 1)
        self._checkin(device, home, person.personnel_id, "off_duty", battery, end)

    def _checkin(
        self, device: int | None, tps: _Tps, personnel_id: str, status: str, battery: float, at: float
    ) -> None:
        if device is None or device not in tps.devices:
            device = tps.devices[0]
        payload: dict[str, Any] = {"personnel_id": personnel_id, "status": status, "battery": int(battery)}
        if self.rng.random() < 0.75:
            payload["location"] = self._location(tps.row)
        self._add(device, at, EventType.CHECKIN, tps.row.tps_id, payload)

    # -- incidents ---------------------------------------------------------------------------------
    def _incident(
        self,
        tps: _Tps,
        at: float,
        category: str | None,
        text: str,
        *,
        facts: Mapping[str, Any] | None = None,
        facts_in_payload: float = 0.5,
        device: int | None = None,
    ) -> tuple[int, str]:
        """Post a report; returns its device and event id (the report_id of what follows)."""
        device = self._reporter(tps) if device is None else device
        payload: dict[str, Any] = {"description": text}
        if category is not None:
            payload["category"] = category
        elif self.rng.random() < 0.3:
            payload["category"] = "other"
        for key, value in (facts or {}).items():
            # Devices leave facts out as often as not; dispatch reads them from the text then.
            if key == "needs_backup" or self.rng.random() < facts_in_payload:
                payload[key] = value
        if self.rng.random() < 0.5:
            payload["location"] = self._location(tps.row)
        return device, self._add(device, at, EventType.INCIDENT_REPORTED, tps.row.tps_id, payload)

    def _follow_up(
        self,
        tps: _Tps,
        device: int,
        report_id: str,
        at: float,
        kind: EventType,
        text: str,
    ) -> None:
        key = {
            EventType.INCIDENT_UPDATE: "note",
            EventType.INCIDENT_RESOLVED: "resolution",
            EventType.BACKUP_REQUESTED: "reason",
        }[kind]
        self._add(device, at, kind, tps.row.tps_id, {"report_id": report_id, key: text})

    def _everyday_incidents(self, tps: _Tps) -> None:
        rng = self.rng
        texts = self.texts
        day = self.day
        weights = [
            c.weight * day.weights.get(c.name, 1.0) * (texts.rawan_boost if c.name in tps.row.rawan else 1)
            for c in texts.categories
        ]
        boost = 1 + len(tps.row.rawan) * 0.5
        for _ in range(_poisson(rng, texts.rate_per_tps * day.incident_rate * boost)):
            cat = rng.choices(texts.categories, weights=weights)[0]
            self._everyday_incident(tps, cat)

    def _everyday_incident(self, tps: _Tps, cat: CategoryTexts) -> None:
        rng = self.rng
        if self.vote:
            window = rng.choices(cat.windows, weights=[w for _, _, w in cat.windows])[0]
            at = rng.uniform(window[0], window[1]) * 60
            # Officers are at the post from 05:30: what they find on arrival (missing logistics, dawn
            # vote buying) is reported before the TPS's preparation phase begins.
            at = min(max(at, DAY_START + _ARRIVAL_MINUTES), tps.closed_at - 5)
        else:  # the categories' hours are the vote's; another day's incidents come in its duty hours
            first, last = self.day.duty
            at = rng.uniform(first + 10, last - 10)
        facts = {k: rng.randint(*r) for k, r in cat.facts.items()}
        context = self._context(tps, **{"injuries": 0, "crowd": 0, **facts})
        text = self.texts.message(rng.choice(cat.reports), rng, context)
        payload_facts: dict[str, Any] = {}
        if "injuries" in facts:
            payload_facts["injuries"] = facts["injuries"]
        if "crowd" in facts:
            payload_facts["crowd_size"] = facts["crowd"]
        sent = cat.name if rng.random() < cat.send_category else None
        device, report = self._incident(tps, at, sent, text, facts=payload_facts)
        if rng.random() < cat.unresolved:
            return
        if rng.random() < cat.on_site:
            done = at + self._uniform(cat.on_site_minutes)
        else:  # beyond the local window: it climbs, and is resolved with the command center's help
            low, high = cat.resolve_minutes
            done = at + self._uniform((max(low, cat.on_site_minutes[1] + 1), max(high, cat.on_site_minutes[1] + 2)))
        if cat.updates and rng.random() < 0.35:
            note = self.texts.message(rng.choice(cat.updates), rng, context)
            self._follow_up(tps, device, report, rng.uniform(at + 1, done - 0.5), EventType.INCIDENT_UPDATE, note)
        resolution = self.texts.message(rng.choice(cat.resolutions), rng, context)
        self._follow_up(tps, device, report, done, EventType.INCIDENT_RESOLVED, resolution)

    def _scripted(
        self,
        name: str,
        tps: _Tps,
        at: float,
        category: str | None,
        *,
        facts: dict[str, int] | None = None,
        extra_facts: dict[str, Any] | None = None,
        backup_after: float | None = None,
    ) -> dict[str, Any]:
        """A scripted incident from scenarios.<name>: report, updates, backup, resolution."""
        rng = self.rng
        spec = self.texts.scenarios[name]
        facts = facts or {}
        context = self._context(tps, **{"injuries": 0, "crowd": 0, **facts})
        text = self.texts.message(rng.choice(spec["reports"]), rng, context)
        payload_facts: dict[str, Any] = dict(extra_facts or {})
        if "injuries" in facts:
            payload_facts["injuries"] = facts["injuries"]
        if "crowd" in facts:
            payload_facts["crowd_size"] = facts["crowd"]
        # The scripted clashes are the demo's escalations: their facts always travel in the payload.
        device, report = self._incident(
            tps, at, category, text, facts=payload_facts, facts_in_payload=1.0 if extra_facts else 0.5
        )
        self.busy.add(tps.row.tps_id)
        done = at + self._uniform(spec["resolve_minutes"])
        record: dict[str, Any] = {"tps_id": tps.row.tps_id, "report_id": report, "at": _hhmm(at)}
        if spec.get("updates"):
            note = self.texts.message(rng.choice(spec["updates"]), rng, context)
            self._follow_up(tps, device, report, at + rng.uniform(2, 6), EventType.INCIDENT_UPDATE, note)
        if backup_after is not None:
            reason = self.texts.message(rng.choice(spec["backup_reasons"]), rng, context)
            self._follow_up(tps, device, report, at + backup_after, EventType.BACKUP_REQUESTED, reason)
            record["backup_at"] = _hhmm(at + backup_after)
            arrived_texts = spec.get("arrived") or spec["updates"]
            arrived = self.texts.message(rng.choice(arrived_texts), rng, context)
            self._follow_up(
                tps, device, report, at + backup_after + rng.uniform(15, 30), EventType.INCIDENT_UPDATE, arrived
            )
        if rng.random() < float(spec.get("unresolved", 0.0)):
            return record
        resolution = self.texts.message(rng.choice(spec["resolutions"]), rng, context)
        self._follow_up(tps, device, report, done, EventType.INCIDENT_RESOLVED, resolution)
        record["resolved_at"] = _hhmm(done)
        return record

    def _by_kecamatan(self) -> dict[str, list[_Tps]]:
        out: dict[str, list[_Tps]] = defaultdict(list)
        for tps in self.tps.values():
            out[tps.row.kecamatan].append(tps)
        return out

    def _serangan_fajar(self) -> None:
        """Vote buying spreading over one kecamatan at dawn: three or more TPS within half an hour."""
        rng = self.rng
        spec = self.texts.scenarios["serangan_fajar"]
        groups = {k: v for k, v in self._by_kecamatan().items() if len(v) >= 3}
        if not groups:
            return
        # Where money politics was seen before, else the kecamatan with the most TPS.
        kec = max(groups, key=lambda k: (sum("money_politics" in t.row.rawan for t in groups[k]), len(groups[k]), k))
        count = min(rng.randint(*spec["tps"]), len(groups[kec]))
        chosen = sorted(rng.sample(groups[kec], count), key=lambda t: t.row.tps_id)
        start = self._uniform(spec["start"]) * 60
        offsets = sorted(rng.uniform(0, spec["spread_min"]) for _ in chosen)
        records = [
            self._scripted("serangan_fajar", tps, start + off, "money_politics" if rng.random() < 0.5 else None)
            for tps, off in zip(chosen, offsets, strict=True)
        ]
        self.story["serangan_fajar"] = {"kecamatan": kec, "incidents": records}

    def _floods(self) -> None:
        """Morning rain: flood reports across the flood-prone TPS of the wettest kecamatan."""
        rng = self.rng
        spec = self.texts.scenarios["flood"]
        groups = self._by_kecamatan()
        prone = sorted(
            (k for k, v in groups.items() if any("flood" in t.row.rawan for t in v)),
            key=lambda k: (-sum("flood" in t.row.rawan for t in groups[k]), k),
        )[: int(spec["kecamatan"])]
        story = []
        for kec in prone:
            rain = max(self._uniform(spec["rain_start"]) * 60, self.day.duty[0] + 15)
            hit = [
                t
                for t in groups[kec]
                if rng.random() < (spec["share_rawan"] if "flood" in t.row.rawan else spec["share_other"])
            ] or [next(t for t in groups[kec] if "flood" in t.row.rawan)]
            records = []
            for tps in hit:
                at = rain + rng.uniform(0, spec["report_within_min"])
                category = "flood" if rng.random() < 0.6 else None
                records.append(self._scripted("flood", tps, at, category))
            story.append({"kecamatan": kec, "rain_from": _hhmm(rain), "incidents": records})
        self.story["floods"] = story

    def _pick_conflict_tps(self, prefer: Iterable[str]) -> _Tps | None:
        wanted = set(prefer)
        free = [t for t in self.tps.values() if t.row.tps_id not in self.busy]
        if not free:
            return None
        rated = sorted(free, key=lambda t: (-len(wanted & set(t.row.rawan)), t.row.tps_id))
        best = [t for t in rated if wanted & set(t.row.rawan)] or rated
        return self.rng.choice(best[:8])

    def _clash(self) -> None:
        """A clash at counting time that the post cannot hold alone: backup requested."""
        rng = self.rng
        spec = self.texts.scenarios["clash"]
        tps = self._pick_conflict_tps(["crowd", "violence", "intimidation"])
        if tps is None:
            return
        at = self._uniform(spec["start"]) * 60
        facts = {k: rng.randint(*v) for k, v in spec["facts"].items()}
        category = rng.choice(["crowd", "violence", None])
        record = self._scripted(
            "clash",
            tps,
            at,
            category,
            facts=facts,
            extra_facts={"weapons": False, "injuries": 0},
            backup_after=rng.uniform(5, 10),
        )
        self.story["clash"] = record

    def _critical(self) -> None:
        """A clash with sharp weapons and wounded: critical, straight to the command center."""
        rng = self.rng
        spec = self.texts.scenarios["critical"]
        tps = self._pick_conflict_tps(["violence", "crowd"])
        if tps is None:
            return
        at = self._uniform(spec["start"]) * 60
        facts = {k: rng.randint(*v) for k, v in spec["facts"].items()}
        record = self._scripted(
            "critical",
            tps,
            at,
            "violence",
            facts=facts,
            extra_facts={"weapons": True, "needs_backup": True},
            backup_after=rng.uniform(1, 3),
        )
        self.story["critical"] = record

    def _escorts(self) -> None:
        """The evening transport: each TPS's ballot boxes go to the PPK under escort; one or two are late."""
        rng = self.escort_rng
        covering: dict[str, list[str]] = {}
        for p in self.personnel:
            for t in p.tps_ids:
                covering.setdefault(t, []).append(p.personnel_id)
        stations = sorted(t for t, v in self.tps.items() if Phase.TRANSPORT in v.phases)
        if not stations:
            return
        late = set(rng.sample(stations, min(len(stations), max(1, round(len(stations) * 0.002)))))
        story: dict[str, Any] = {}
        for tps_id in stations:
            tps = self.tps[tps_id]
            leave = tps.phases[Phase.TRANSPORT] + rng.uniform(1, 8)
            expected = round(rng.uniform(15, 45))
            boxes = [f"{tps_id}-{kind}" for kind in BALLOT_BOXES]
            device = tps.devices[0]
            escorts = covering.get(tps_id, [])[:2]
            to = f"PPK {tps.row.kecamatan}"
            payload = {"box_ids": boxes, "to": to, "personnel_ids": escorts, "expected_minutes": expected}
            self._add(device, leave, EventType.ESCORT_DEPARTED, tps_id, payload)
            if tps_id in late:  # a flat tyre, a flooded road: past expected time plus the 15-minute grace
                travel = expected + 15 + rng.uniform(12, 35)
                story[tps_id] = {
                    "departs": _hhmm(leave),
                    "expected_minutes": expected,
                    "arrives": _hhmm(leave + travel),
                }
            else:
                travel = expected * rng.uniform(0.6, 1.1)
            self._add(device, leave + travel, EventType.ESCORT_ARRIVED, tps_id, {"box_ids": boxes, "at": to})
        self.story["late_escorts"] = story

    # -- outages -------------------------------------------------------------------------------------
    def _silent_posts(self) -> dict[str, float]:
        """A few posts fall silent (phones flat, no signal): nothing more from them after a time."""
        rng = self.rng
        free = sorted(t for t in self.tps if t not in self.busy)
        count = min(len(free), max(1, round(len(self.tps) * 0.004)))
        silent = {t: rng.uniform(10 * 60, 14 * 60) for t in rng.sample(free, count)}
        self.events = [
            (d, e) for d, e in self.events if not (e.event["tps_id"] in silent and e.at >= silent[e.event["tps_id"]])
        ]
        self.story["silent_posts"] = {t: _hhmm(at) for t, at in sorted(silent.items())}
        return silent

    def _outages(self, silent: dict[str, float], *, any_offline: bool = True) -> list[Send]:
        """Some devices go offline for 20-60 minutes and flush their backlog in one batch."""
        rng = self.rng
        first, last = (8 * 60, 16 * 60) if self.vote else (self.day.duty[0] + 30, self.day.duty[1] - 90)
        used = sorted({d for d, _ in self.events})
        remote_first = sorted(
            used,
            key=lambda d: (
                not any("remote" in self.tps[t].row.rawan for t in self.devices[d].tps_ids if t in self.tps),
                rng.random(),
            ),
        )
        count = min(len(used), max(1, round(len(used) * 0.03))) if any_offline and last > first else 0
        windows: dict[int, tuple[float, float]] = {}
        for d in remote_first[:count]:
            start = rng.uniform(first, last)
            windows[d] = (start, start + rng.uniform(20, 60))
            own = [self.tps[t] for t in self.devices[d].tps_ids if t in self.tps and t not in silent]
            if own:
                # Something happened while the phone had no signal: report and resolution arrive together.
                tps = own[0]
                spec = self.texts.scenarios["backlog"]
                context = self._context(tps)
                at = start + rng.uniform(3, 8)
                _, report = self._incident(
                    tps, at, None, self.texts.message(rng.choice(spec["reports"]), rng, context), device=d
                )
                resolution = self.texts.message(rng.choice(spec["resolutions"]), rng, context)
                self._follow_up(tps, d, report, at + rng.uniform(2, 8), EventType.INCIDENT_RESOLVED, resolution)
        self.story["offline_devices"] = [
            {"device": d, "from": _hhmm(a), "to": _hhmm(b)} for d, (a, b) in sorted(windows.items())
        ]
        sends: list[Send] = []
        backlog: dict[int, list[PlannedEvent]] = defaultdict(list)
        for device, event in sorted(self.events, key=lambda de: de[1].at):
            window = windows.get(device)
            if window and window[0] <= event.at < window[1]:
                backlog[device].append(event)
            else:
                sends.append(Send(event.at, device, [event]))
        for device, events in backlog.items():
            sends.append(Send(windows[device][1], device, events, batch=True))
        return sends


def seeded_uuid(rng: random.Random) -> str:
    """A random (version 4) UUID drawn from a seeded generator: repeatable event ids."""
    n = rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth); fine for the small means used here."""
    limit = math.exp(-mean)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _hhmm(minutes: float) -> str:
    m = int(minutes)
    return f"{m // 60:02d}:{m % 60:02d}"
