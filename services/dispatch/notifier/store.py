"""The notifier's record of deliveries (AlertDelivery), by idempotency key.

Calls run in a worker thread: the database driver is synchronous and the event loop keeps
sending other alerts meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from siaga.db import session_scope
from siaga.models import AlertDelivery

FINAL = ("sent", "failed")
ERROR_MAX = 2000


class DeliveryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def claim(self, row: AlertDelivery) -> AlertDelivery:
        """The row for row.key: the stored one if there is one, else `row` stored as pending."""
        return await asyncio.to_thread(self._claim, row)

    def _claim(self, row: AlertDelivery) -> AlertDelivery:
        with Session(self.engine, expire_on_commit=False) as session:
            found = session.get(AlertDelivery, row.key)
            if found is not None:
                return found
            session.add(row)
            try:
                session.commit()
                return row
            except IntegrityError:
                # Another notifier took the same key at the same moment (a rebalance): use its row.
                session.rollback()
                found = session.get(AlertDelivery, row.key)
                if found is None:
                    raise
                return found

    async def attempted(self, key: str, *, error: str | None, now: datetime) -> None:
        """Count one request; error None means it was sent."""
        await asyncio.to_thread(self._attempted, key, error, now)

    def _attempted(self, key: str, error: str | None, now: datetime) -> None:
        with session_scope(self.engine) as session:
            row = session.get(AlertDelivery, key)
            if row is None:
                return
            row.attempts += 1
            row.updated_at = now
            if error is None:
                row.status, row.sent_at = "sent", now
            else:
                row.last_error = error[:ERROR_MAX]

    async def finish(self, key: str, *, status: str, error: str | None, now: datetime) -> None:
        await asyncio.to_thread(self._finish, key, status, error, now)

    def _finish(self, key: str, status: str, error: str | None, now: datetime) -> None:
        with session_scope(self.engine) as session:
            row = session.get(AlertDelivery, key)
            if row is None:
                return
            row.status, row.updated_at = status, now
            if error is not None:
                row.last_error = error[:ERROR_MAX]

    async def get(self, key: str) -> AlertDelivery | None:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> AlertDelivery | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(AlertDelivery, key)

    def reopen_failed(self, keys: Sequence[str], *, now: datetime) -> int:
        """Make failed deliveries pending again, so the next copy of their intent sends them (a resend
        asked for by an operator: `siaga admin replay-dead-letter --resend-failed`). Sent ones stay sent.
        Returns how many were reopened."""
        reopened = 0
        with session_scope(self.engine) as session:
            for key in keys:
                row = session.get(AlertDelivery, key)
                if row is not None and row.status == "failed":
                    row.status, row.updated_at = "pending", now
                    reopened += 1
        return reopened
