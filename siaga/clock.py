"""Injectable time. The domain never calls datetime.now() itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock the tests move by hand: an hour of policy runs in a millisecond."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 11, 27, 7, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **kw: float) -> datetime:
        self._now += timedelta(**kw)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def as_utc(when: datetime) -> datetime:
    """Aware UTC datetime (naive values are taken as UTC, as SQLite hands them back)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def iso(when: datetime | None) -> str | None:
    """RFC 3339 with a Z, or None."""
    if when is None:
        return None
    return as_utc(when).isoformat().replace("+00:00", "Z")
