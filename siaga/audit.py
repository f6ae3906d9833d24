"""The tamper-evident record: every incident's timeline is a hash chain; `verify` proves it intact.

Each entry stores the hash of the previous entry of its incident and its own hash over that and
its content, so a changed, removed or inserted entry breaks the chain from that point on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
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


def verify(engine: Engine) -> AuditResult:
    """Walk every chain; name the first broken link."""
    n = 0
    incidents = 0
    with Session(engine) as s:
        rows = s.exec(select(TimelineEntry).order_by(col(TimelineEntry.incident_id), col(TimelineEntry.seq)))
        current, prev, expected_seq = None, "", 1
        for e in rows:
            if e.incident_id != current:
                current, prev, expected_seq = e.incident_id, "", 1
                incidents += 1
            n += 1
            problem = None
            if e.seq != expected_seq:
                problem = f"entry {expected_seq} is missing (found {e.seq})"
            elif e.prev_hash != prev:
                problem = "its link to the previous entry does not match"
            elif chain_hash(prev, entry_content(e)) != e.hash:
                problem = "its content does not match its hash (the entry was changed)"
            if problem:
                return AuditResult(
                    False,
                    n,
                    incidents,
                    f"BROKEN: incident {e.incident_id}, timeline entry "
                    f"{e.seq} ({e.action} by {e.actor} at {iso(e.at)}): {problem}",
                )
            prev, expected_seq = e.hash, expected_seq + 1
    return AuditResult(True, n, incidents, f"intact: {n} timeline entries of {incidents} incidents verified")
