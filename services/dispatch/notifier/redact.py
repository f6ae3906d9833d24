"""Keep bot tokens, API tokens, hook URLs and webhook secrets out of the logs.

httpx logs every request URL at INFO, and a Telegram URL holds the bot token and a Slack hook
URL is itself the credential; a filter on the loggers that could see them blanks them out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
_BOT_TOKEN = re.compile(r"/bot\d+:[A-Za-z0-9_\-]+")
_LOGGERS = ("httpx", "httpcore", "siaga.notifier")


class Redactor(logging.Filter):
    """Rewrites a record's message with every known secret (and anything like a bot token) masked."""

    def __init__(self) -> None:
        super().__init__("siaga-redact")
        self._secrets: set[str] = set()

    def add(self, values: Iterable[str | None]) -> None:
        # Very short values would mask ordinary words; nothing that short is a real credential.
        self._secrets.update(v for v in values if v and len(v) >= 6)

    def redact(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(s, MASK)
        return _BOT_TOKEN.sub(f"/bot{MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


REDACTOR = Redactor()


def install(secrets: Iterable[str | None]) -> Redactor:
    """Register secrets with the process-wide redactor and attach it (once) to the loggers that matter."""
    REDACTOR.add(secrets)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)
    return REDACTOR
