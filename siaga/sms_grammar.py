"""The text grammar of SMS and WhatsApp messages from the field (SPEC section 11), and its replies.

Pure: a message's text in, what it asks for out; no I/O. Keywords are Indonesian and forgiving:
any case, extra spaces, and common misspellings (`lpr`, `slsai`, `hadr`), by a table of known
abbreviations and then a close match (difflib: six keywords need no fuzzy-matching library).

    LAPOR [no TPS] <isi>        a report (free text with no keyword is one too)
    SELESAI <kode> <cara>       resolve the incident with that short code
    BANTUAN <kode> <alasan>     request backup for it
    HADIR [sehat|sakit|libur]   check in (sehat when left out)
    OK <kode>                   acknowledge it
    STATUS <tahap>              the TPS's phase
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from siaga.events import Phase
from siaga.short_codes import is_code

MAX_REPLY = 160  # one SMS
REPLIES = Path(__file__).with_name("sms_replies.yaml")
CUTOFF = 0.75  # difflib ratio for a misspelt keyword: "lpr"/"lapor" is 0.75, "banjir"/"bantuan" 0.46


class Keyword(StrEnum):
    LAPOR = "lapor"
    SELESAI = "selesai"
    BANTUAN = "bantuan"
    HADIR = "hadir"
    OK = "ok"
    STATUS = "status"


# Abbreviations too short or too far from the word for a close match to find.
ALIASES: dict[str, Keyword] = {
    "lpr": Keyword.LAPOR,
    "lap": Keyword.LAPOR,
    "lapr": Keyword.LAPOR,
    "laporan": Keyword.LAPOR,
    "report": Keyword.LAPOR,
    "sls": Keyword.SELESAI,
    "slsai": Keyword.SELESAI,
    "slesai": Keyword.SELESAI,
    "done": Keyword.SELESAI,
    "bntn": Keyword.BANTUAN,
    "btn": Keyword.BANTUAN,
    "bantu": Keyword.BANTUAN,
    "tolong": Keyword.BANTUAN,
    "hdr": Keyword.HADIR,
    "hadr": Keyword.HADIR,
    "absen": Keyword.HADIR,
    "oke": Keyword.OK,
    "okay": Keyword.OK,
    "siap": Keyword.OK,
    "sts": Keyword.STATUS,
    "stat": Keyword.STATUS,
    "tahap": Keyword.STATUS,
}
CHECKIN_WORDS = {"sehat": "on_duty", "sakit": "unwell", "libur": "off_duty"}
CHECKIN_ALIASES = {"skt": "sakit", "shat": "sehat", "sht": "sehat", "lbr": "libur", "pulang": "libur", "ok": "sehat"}
PHASE_WORDS: dict[str, Phase] = {
    "persiapan": Phase.PREPARATION,
    "siap": Phase.PREPARATION,
    "buka": Phase.OPENING,
    "pembukaan": Phase.OPENING,
    "coblos": Phase.VOTING,
    "pencoblosan": Phase.VOTING,
    "pemungutan": Phase.VOTING,
    "hitung": Phase.COUNTING,
    "penghitungan": Phase.COUNTING,
    "perhitungan": Phase.COUNTING,
    "kirim": Phase.TRANSPORT,
    "pengiriman": Phase.TRANSPORT,
    "tutup": Phase.CLOSED,
    "selesai": Phase.CLOSED,
    **{p.value: p for p in Phase},
}
_TPS_NUMBER = re.compile(r"(?:tps)?[\s.:#-]*0*(\d{1,4})", re.IGNORECASE)


@dataclass(frozen=True)
class Report:
    """LAPOR, or free text. `tps_number` is a leading number that may name the TPS; whether it
    does (or belongs to the text, "3 orang pingsan") depends on the sender's TPS: `rest` is the
    text without it, `text` the whole."""

    text: str
    tps_number: int | None = None
    rest: str = ""


@dataclass(frozen=True)
class OnIncident:
    """SELESAI, BANTUAN or OK with the incident's short code and the words after it."""

    keyword: Keyword
    code: str
    text: str = ""


@dataclass(frozen=True)
class Checkin:
    status: str  # on_duty | unwell | off_duty (the check-in event's)
    word: str  # sehat | sakit | libur, as the reply names it


@dataclass(frozen=True)
class SetPhase:
    phase: Phase


@dataclass(frozen=True)
class NotUnderstood:
    """What could not be read, as a reply key of sms_replies.yaml and its values."""

    reply: str
    values: tuple[tuple[str, str], ...] = ()


Parsed = Report | OnIncident | Checkin | SetPhase | NotUnderstood


def keyword_of(word: str) -> Keyword | None:
    """The keyword a word means (exactly, by a known abbreviation, or by a close spelling)."""
    w = word.lower().strip(".,:;!?")
    if w in Keyword.__members__.values():
        return Keyword(w)
    if w in ALIASES:
        return ALIASES[w]
    if len(w) < 4:
        return None  # short words are too easily something else ("ada", "api")
    match = difflib.get_close_matches(w, [k.value for k in Keyword if len(k.value) > 2], n=1, cutoff=CUTOFF)
    return Keyword(match[0]) if match else None


def _closest(word: str, choices: list[str], cutoff: float = CUTOFF) -> str | None:
    w = word.lower().strip(".,:;!?")
    if w in choices:
        return w
    match = difflib.get_close_matches(w, choices, n=1, cutoff=cutoff)
    return match[0] if match else None


def parse(text: str) -> Parsed:
    """What a message asks for."""
    words = (text or "").split()
    if not words:
        return NotUnderstood("help")
    keyword = keyword_of(words[0])
    rest = words[1:]
    if keyword is None:
        return _report(words)
    if keyword is Keyword.LAPOR:
        return _report(rest) if rest else NotUnderstood("needs_text")
    if keyword in (Keyword.SELESAI, Keyword.BANTUAN, Keyword.OK):
        example = {Keyword.SELESAI: "SELESAI K7Q2M sudah aman", Keyword.BANTUAN: "BANTUAN K7Q2M massa bertambah"}
        if not rest or not is_code(rest[0]):
            return NotUnderstood("needs_code", (("example", example.get(keyword, "OK K7Q2M")),))
        return OnIncident(keyword, rest[0].upper(), " ".join(rest[1:]))
    if keyword is Keyword.HADIR:
        if not rest:
            return Checkin("on_duty", "sehat")
        word = rest[0].lower()
        word = CHECKIN_ALIASES.get(word, word)
        found = _closest(word, list(CHECKIN_WORDS), cutoff=0.6)
        if found is None:
            return NotUnderstood("help")
        return Checkin(CHECKIN_WORDS[found], found)
    # STATUS
    if not rest:
        return NotUnderstood("needs_phase")
    found = _closest(rest[0], list(PHASE_WORDS))
    return SetPhase(PHASE_WORDS[found]) if found else NotUnderstood("needs_phase")


def _report(words: list[str]) -> Report:
    text = " ".join(words)
    m = _TPS_NUMBER.fullmatch(words[0]) if words else None
    if m is not None and len(words) > 1:
        return Report(text=text, tps_number=int(m.group(1)), rest=" ".join(words[1:]))
    if len(words) > 2 and words[0].lower() == "tps" and words[1].isdigit():
        return Report(text=text, tps_number=int(words[1]), rest=" ".join(words[2:]))
    return Report(text=text, rest=text)


@functools.cache
def _replies() -> dict[str, Any]:
    doc = yaml.safe_load(REPLIES.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict):
        raise ValueError(f"{REPLIES}: expected reply texts and their `labels`")
    return doc


def label(word: str) -> str:
    """The Indonesian words for a check-in word or a phase."""
    labels: dict[str, str] = _replies()["labels"]
    return labels.get(word, word)


def reply(key: str, **values: str) -> str:
    """A reply text, filled in and cut to one SMS. `text` is shortened first, to keep the rest."""
    template: str = _replies()[key]
    if "text" in values:
        room = MAX_REPLY - len(template.format(**{**values, "text": ""}))
        text = " ".join(values["text"].split())
        values["text"] = text if len(text) <= room else text[: max(room - 1, 0)] + "…"
    out = template.format(**values)
    return out if len(out) <= MAX_REPLY else out[: MAX_REPLY - 1] + "…"
