"""The tamper-evident record: every incident's timeline is a hash chain; `verify` proves it intact.

Each entry stores the hash of the previous entry of its incident and its own hash over that and
its content, so a changed, removed or inserted entry breaks the chain from that point on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from siaga.clock import iso
from siaga.models import TimelineEntry


def chain_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """One link: the hash of the previous link and this entry's content."""
    body = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


class Entry(Protocol):
    """What the chain hashes of an entry: a `TimelineEntry` row, or the engine's plain item of one."""

    incident_id: str
    seq: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]


def entry_content(e: Entry) -> dict[str, Any]:
    return {
        "incident_id": e.incident_id,
        "seq": e.seq,
        "at": iso(e.at),
        "actor": e.actor,
        "action": e.action,
        "detail": e.detail,
    }


@dataclass(frozen=True)
class AuditResult:
    ok: bool
    entries: int
    incidents: int
    message: str


EXPORT_FIELDS = ("incident_id", "seq", "at", "actor", "action", "detail", "prev_hash", "hash")


def export_line(e: TimelineEntry) -> dict[str, Any]:
    """One entry of the audit export: its content as hashed, with its link and its hash."""
    return entry_content(e) | {"prev_hash": e.prev_hash, "hash": e.hash}


@dataclass
class _Chains:
    """Checks entries one incident at a time, each incident's in seq order; names the first broken link.

    A chain may start past entry 1 only when `partial` (an export `since` a time): its first entry is
    then taken on its own stated link, which an earlier export of the same chain can confirm.
    """

    partial: bool = False
    entries: int = 0
    incidents: int = 0
    continued: int = 0  # chains that start past entry 1 (partial exports)
    _current: str | None = None
    _prev: str = ""
    _next_seq: int = 1

    def check(self, content: dict[str, Any], prev_hash: str, hash_: str) -> str | None:
        """None when the entry extends its chain; else what is wrong with it."""
        if content["incident_id"] != self._current:
            self._current, self._prev, self._next_seq = content["incident_id"], "", 1
            self.incidents += 1
            if self.partial and content["seq"] > 1:
                self._prev, self._next_seq = prev_hash, content["seq"]
                self.continued += 1
        self.entries += 1
        if content["seq"] != self._next_seq:
            return f"entry {self._next_seq} is missing (found {content['seq']})"
        if prev_hash != self._prev:
            return "its link to the previous entry does not match"
        if chain_hash(self._prev, content) != hash_:
            return "its content does not match its hash (the entry was changed)"
        self._prev, self._next_seq = hash_, self._next_seq + 1
        return None

    def broken(self, content: dict[str, Any], problem: str) -> AuditResult:
        return AuditResult(
            False,
            self.entries,
            self.incidents,
            f"BROKEN: incident {content['incident_id']}, timeline entry "
            f"{content['seq']} ({content['action']} by {content['actor']} at {content['at']}): {problem}",
        )

    def intact(self, what: str) -> AuditResult:
        message = f"intact: {self.entries} timeline entries of {self.incidents} incidents verified"
        if self.continued:
            message += (
                f" ({self.continued} of them continue an earlier export: pass it too, with another --file, "
                "to check the join)"
            )
        return AuditResult(True, self.entries, self.incidents, message + what)


def verify(engine: Engine) -> AuditResult:
    """Walk every chain in the database; name the first broken link."""
    chains = _Chains()
    with Session(engine) as s:
        rows = s.exec(select(TimelineEntry).order_by(col(TimelineEntry.incident_id), col(TimelineEntry.seq)))
        for e in rows:
            content = entry_content(e)
            problem = chains.check(content, e.prev_hash, e.hash)
            if problem:
                return chains.broken(content, problem)
    return chains.intact("")


class ExportError(ValueError):
    """An export file that cannot be read as one (names the file and line)."""


def read_export(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The entries of one or more audit exports (JSON lines), an entry found twice taken once.

    The same entry (incident, seq) with two different contents is a conflict between the files and is
    refused: one of them was changed.
    """
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}: cannot read it ({exc})") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ExportError(f"{path}, line {n}: not JSON") from None
            missing = [f for f in EXPORT_FIELDS if not isinstance(doc, dict) or f not in doc]
            if missing:
                raise ExportError(f"{path}, line {n}: not an audit entry (missing {', '.join(missing)})")
            if not isinstance(doc["seq"], int) or not isinstance(doc["incident_id"], str):
                raise ExportError(f"{path}, line {n}: incident_id must be text and seq a whole number")
            key = (doc["incident_id"], doc["seq"])
            if key in seen and seen[key] != doc:
                raise ExportError(
                    f"{path}, line {n}: incident {key[0]} entry {key[1]} differs from the same entry "
                    "in an earlier line or file (one of them was changed)"
                )
            seen[key] = doc
    return [seen[k] for k in sorted(seen)]


def verify_export(paths: Sequence[Path], *, partial: bool = False) -> AuditResult:
    """Check audit exports without the database: every chain, from entry 1 (or, `partial`, from its
    first entry in the files: an export `since` a time holds the later part of older chains)."""
    chains = _Chains(partial=partial)
    for doc in read_export(paths):
        content = {f: doc[f] for f in EXPORT_FIELDS[:6]}
        problem = chains.check(content, str(doc["prev_hash"]), str(doc["hash"]))
        if problem:
            return chains.broken(content, problem)
    files = ", ".join(str(p) for p in paths)
    return chains.intact(f" in {files}")
