"""What officers write: templates from data/incidents.yaml, filled and typed out WhatsApp style."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

TEXTS_FILE = Path(__file__).resolve().parent / "data" / "incidents.yaml"
_SLOT = re.compile(r"\{([a-z_]+)(?::(\d+)-(\d+))?\}")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class CategoryTexts:
    """How one category of everyday incident happens and is written about."""

    name: str
    weight: float
    windows: tuple[tuple[float, float, float], ...]
    send_category: float
    facts: dict[str, tuple[int, int]]
    reports: tuple[str, ...]
    updates: tuple[str, ...]
    resolutions: tuple[str, ...]
    resolve_minutes: tuple[float, float]
    unresolved: float
    on_site: float = 0.0
    on_site_minutes: tuple[float, float] = (0.0, 0.0)


SCENARIOS = frozenset({"serangan_fajar", "floods", "clash", "critical", "escorts", "silent_posts", "outages"})
VOTE_DAY = 2


@dataclass(frozen=True)
class DutyDay:
    """One day of the five-day duty: hours, TPS phases, how busy, which scripted situations, illness."""

    number: int
    name: str
    duty: tuple[float, float]  # minutes since midnight WIB
    phases: tuple[tuple[str, float, float], ...]  # (phase, from minute, to minute); the vote day: ()
    tps_share: float
    incident_rate: float
    weights: dict[str, float]
    scenarios: frozenset[str]
    unwell: float
    sick: float


def _duty_day(number: int, d: dict[str, Any], categories: set[str]) -> DutyDay:
    where = f"{TEXTS_FILE.name}: duty_days.{number}"
    start, end = (h * 60 for h in _pair(d["duty"]))
    phases = tuple((str(ph), a * 60, b * 60) for ph, a, b in d.get("phases", ()))
    weights = {str(k): float(v) for k, v in d.get("weights", {}).items()}
    scenarios = frozenset(d.get("scenarios", ()))
    if not 0 <= start < end <= 24 * 60:
        raise ValueError(f"{where}: duty must be 0 <= FROM < TO <= 24 hours")
    if number == VOTE_DAY and phases:
        raise ValueError(f"{where}: the vote day's phases are the day's own; give none")
    if number != VOTE_DAY and not phases:
        raise ValueError(f"{where}: phases are missing")
    if any(not start <= a <= b <= end for _, a, b in phases) or [a for _, a, _ in phases] != sorted(
        a for _, a, _ in phases
    ):
        raise ValueError(f"{where}: each phase window must lie inside the duty hours, in order")
    if unknown := (set(weights) - categories) | (scenarios - SCENARIOS):
        raise ValueError(f"{where}: unknown categories or scenarios {sorted(unknown)}")
    return DutyDay(
        number=number,
        name=str(d["name"]),
        duty=(start, end),
        phases=phases,
        tps_share=float(d["tps_share"]),
        incident_rate=float(d["incident_rate"]),
        weights=weights,
        scenarios=scenarios,
        unwell=float(d["unwell"]),
        sick=float(d["sick"]),
    )


def _pair(value: Any) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


class Texts:
    """The loaded, validated text file, and the writer that uses it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.style: dict[str, Any] = doc["style"]
        self.words: dict[str, list[str]] = doc["words"]
        self.numbers: dict[int, str] = {int(k): v for k, v in doc["numbers"].items()}
        self.number_word_rate = float(doc["number_word_rate"])
        self.phase_notes: dict[str, list[str]] = doc["phase_notes"]
        self.rate_per_tps = float(doc["rate_per_tps"])
        self.rawan_boost = float(doc["rawan_boost"])
        self.scenarios: dict[str, dict[str, Any]] = doc["scenarios"]
        self.categories = [
            CategoryTexts(
                name=name,
                weight=float(c["weight"]),
                windows=tuple((float(a), float(b), float(w)) for a, b, w in c["windows"]),
                send_category=float(c["send_category"]),
                facts={k: (int(v[0]), int(v[1])) for k, v in c.get("facts", {}).items()},
                reports=tuple(c["reports"]),
                updates=tuple(c.get("updates", ())),
                resolutions=tuple(c["resolutions"]),
                resolve_minutes=(float(c["resolve_minutes"][0]), float(c["resolve_minutes"][1])),
                unresolved=float(c["unresolved"]),
                on_site=float(c.get("on_site", 0.0)),
                on_site_minutes=_pair(c.get("on_site_minutes", (0.0, 0.0))),
            )
            for name, c in doc["categories"].items()
        ]
        names = {c.name for c in self.categories}
        self.days = {int(n): _duty_day(int(n), d, names) for n, d in doc["duty_days"].items()}
        if sorted(self.days) != [1, 2, 3, 4, 5]:
            raise ValueError(f"{TEXTS_FILE.name}: duty_days must be days 1 to 5")
        self._check()

    def _check(self) -> None:
        """Fail at load, not mid-run, on a template slot nobody can fill."""
        known = set(self.words) | {"tps", "desa", "kecamatan", "paslon", "injuries", "crowd", "n"}
        templates: list[str] = []
        for c in self.categories:
            templates += [*c.reports, *c.updates, *c.resolutions]
        for s in self.scenarios.values():
            for key in ("reports", "updates", "resolutions", "backup_reasons", "arrived"):
                templates += s.get(key, [])
        for c in self.categories:
            low, high = c.on_site_minutes
            if not 0 <= c.on_site <= 1 or (c.on_site and not 0 < low <= high):
                raise ValueError(f"{TEXTS_FILE.name}: {c.name}: on_site must be 0..1, on_site_minutes 0 < MIN <= MAX")
        for template in templates:
            for slot in _SLOT.finditer(template):
                if slot.group(1) not in known:
                    raise ValueError(f"{TEXTS_FILE.name}: unknown slot {{{slot.group(1)}}} in {template!r}")

    def fill(self, template: str, rng: random.Random, context: dict[str, Any]) -> str:
        """The template with every slot filled: context values, picks from `words`, numbers."""

        def one(m: re.Match[str]) -> str:
            key = m.group(1)
            if m.group(2) is not None:
                return str(rng.randint(int(m.group(2)), int(m.group(3))))
            if key in context:
                value = context[key]
                if isinstance(value, int) and not isinstance(value, bool):
                    return self.number(value, rng)
                return str(value)
            return rng.choice(self.words[key])

        return _SLOT.sub(one, template)

    def number(self, value: int, rng: random.Random) -> str:
        """A count as digits, or sometimes as words ("dua orang luka")."""
        if value in self.numbers and rng.random() < self.number_word_rate:
            return self.numbers[value]
        return str(value)

    def message(self, template: str, rng: random.Random, context: dict[str, Any]) -> str:
        """A filled template typed out as a WhatsApp message from the field."""
        return self.whatsapp(self.fill(template, rng, context), rng)

    def whatsapp(self, text: str, rng: random.Random) -> str:
        """Opener and closer, slang, the odd typo, lower case, no full stop: as typed on a phone."""
        style = self.style
        slang: dict[str, list[str]] = style["slang"]
        for phrase in (p for p in slang if " " in p):
            if phrase in text and rng.random() < style["slang_rate"]:
                text = text.replace(phrase, rng.choice(slang[phrase]))

        def word(m: re.Match[str]) -> str:
            w = m.group(0)
            if w.lower() in slang and rng.random() < style["slang_rate"]:
                return str(rng.choice(slang[w.lower()]))
            if len(w) >= 4 and not w.isupper() and rng.random() < style["typo_rate"]:
                return _typo(w, rng)
            return w

        text = _WORD.sub(word, text)
        opener = rng.choice(style["openers"])
        closer = rng.choice(style["closers"])
        out = f"{opener} {text}" if opener else text
        if closer:
            # Words follow a comma; an emoji just trails the message.
            out += f", {closer}" if closer[0].isalpha() else f" {closer}"
        if rng.random() < style["lowercase_rate"]:
            out = out.lower()
        if rng.random() >= style["no_period_rate"] and not out.endswith((".", "🙏", "👍")):
            out += "."
        if rng.random() < style["emoji_rate"]:
            out += " 🙏"
        return out


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # two neighbouring letters swapped
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # a letter doubled
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1 :]  # a letter dropped


@lru_cache(maxsize=1)
def load_texts(path: Path = TEXTS_FILE) -> Texts:
    """The simulator's texts, read and checked once."""
    return Texts(yaml.safe_load(path.read_text(encoding="utf-8")))
