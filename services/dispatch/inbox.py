"""Writing the device inbox (SPEC section 9): one row per field order, in the writer's transaction.

Ingest serves `GET /v1/device/inbox` from these rows (SPEC section 3: "the inbox reads what
dispatch writes"). A row goes in with the outbox row that puts the same order on siaga.field-orders,
so the two agree. The cursor is the row's `seq`: for a reader that resumes after seq n to miss
nothing, rows must become visible in seq order. SQLite has one writer at a time; on PostgreSQL every
inbox writer first takes one transaction-scoped advisory lock, held until its commit, so seq values
are handed out and committed in the same order. Only transactions that write inbox rows take it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, text
from sqlmodel import Session

from siaga.contracts import Assignment, Broadcast, HelpOnTheWay
from siaga.models import InboxItem

INBOX: Table = InboxItem.__table__  # type: ignore[attr-defined]
INBOX_LOCK = 0x51A6A_0007  # pg_advisory_xact_lock key of inbox writers


def inbox_row(order: Assignment | HelpOnTheWay | Broadcast, *, kecamatan: str | None, at: datetime) -> dict[str, Any]:
    """The inbox row of a field order (its body is the order's bus JSON)."""
    return {
        "item_id": order.order_id,
        "attempt": order.attempt if isinstance(order, Assignment) else 1,
        "target_key": order.target.key,
        "kind": order.kind.value,
        "incident_id": getattr(order, "incident_id", None),
        "kecamatan": kecamatan,
        "body": order.model_dump_json(),
        "created_at": at,
    }


def insert_inbox(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert inbox rows in the caller's transaction, in seq order with every other writer's."""
    if not rows:
        return
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INBOX_LOCK})
    s.execute(insert(INBOX), list(rows))
