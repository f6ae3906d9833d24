"""Logging: text for a developer, one JSON object a line in production; tokens never reach a log."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_SECRETS = [
    (re.compile(r"((?:^|[?&;\s])(?:access_)?token=)[^&;\s\"']*", re.I), r"\1[redacted]"),
    (re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\1[redacted]"),
    (re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+"), r"\1[redacted]"),
]


def redact(text: str) -> str:
    """The text with anything that looks like a token replaced."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


class RedactFilter(logging.Filter):
    """Scrubs tokens from a record's message and arguments: uvicorn prints query strings (`/ws?token=...`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Format first: an argument may be any object whose str() holds a token (httpx logs URL objects).
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw parts, redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), ()
        return True


UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error")


def install_token_redaction(loggers: Iterable[str] = UVICORN_LOGGERS) -> RedactFilter:
    """Add one RedactFilter to each named logger (idempotent), for records logged there directly."""
    shared = RedactFilter()
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactFilter) for f in logger.filters):
            logger.addFilter(shared)
    return shared


class Throttle(logging.Filter):
    """At most one record a `interval_s` per logger and message for the named libraries.

    aiokafka logs an ERROR for every reconnect attempt while the broker is down, several a second
    per client; one a few seconds says the same.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka",), interval_s: float = 10.0) -> None:
        super().__init__()
        self.prefixes, self.interval_s = prefixes, interval_s
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval_s:
            return False
        self._last[key] = now
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Configure the root and uvicorn loggers once per process."""
    handler = logging.StreamHandler()
    handler.addFilter(Throttle())  # before redaction, which formats the message
    handler.addFilter(RedactFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    install_token_redaction()
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request of every client
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
