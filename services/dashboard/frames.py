"""What the dashboard sends: frames encoded once, and each client's bounded queue of them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson


class Frame:
    """One message to clients, encoded to JSON text once however many clients get it."""

    __slots__ = ("_text", "message")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self._text: str | None = None

    @property
    def seq(self) -> int:
        return int(self.message["seq"])

    @property
    def type(self) -> str:
        return str(self.message["type"])

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = orjson.dumps(self.message).decode()
        return self._text


def batch_text(frames: list[Frame]) -> str:
    """Several frames as one `{"type":"batch","messages":[...]}` text, reusing their encodings."""
    return '{"type":"batch","messages":[' + ",".join(f.text for f in frames) + "]}"


class Source(Protocol):
    """What a client reads: a hub's detail view or a summary stream."""

    def snapshot(self) -> Frame: ...

    def attach(self, client: ClientQueue, since: int | None = None) -> None: ...

    def detach(self, client: ClientQueue) -> None: ...


class ClientQueue:
    """One client's pending deltas, bounded: overflow drops them all for a fresh snapshot.

    `deliver` is called by the hub for every delta and never blocks; `take` hands the sender what
    to send next. A client that falls behind costs the others nothing.
    """

    def __init__(self, limit: int, wake: Callable[[], None] | None = None) -> None:
        self.limit = max(1, limit)
        self._wake = wake or (lambda: None)
        self._pending: deque[Frame] = deque()
        self.resync = False
        self.resyncs = 0  # snapshots forced by overflow, not counting the first

    def __len__(self) -> int:
        return len(self._pending)

    def deliver(self, frame: Frame) -> None:
        """Queue one delta (the hub calls this synchronously)."""
        if self.resync:
            return  # the coming snapshot will include it
        if len(self._pending) >= self.limit:
            self.overflow()
            return
        self._pending.append(frame)
        self._wake()

    def overflow(self) -> None:
        """Drop what is queued; the client gets a fresh snapshot instead."""
        self._pending.clear()
        self.resync = True
        self.resyncs += 1
        self._wake()

    def request_snapshot(self) -> None:
        """Owe the client a snapshot (on attach, when no replay is possible)."""
        self._pending.clear()
        self.resync = True
        self._wake()

    def preload(self, frames: Iterable[Frame]) -> None:
        """Queue a replay (on attach) ahead of the live deltas."""
        self._pending.extend(frames)
        self._wake()

    def take(self, source: Source) -> list[Frame]:
        """Everything to send now, in order: a snapshot (when owed) or the queued deltas."""
        if self.resync:
            self.resync = False
            self._pending.clear()
            return [source.snapshot()]
        out = list(self._pending)
        self._pending.clear()
        return out
