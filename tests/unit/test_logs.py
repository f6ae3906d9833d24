"""Tokens are redacted from log records: query strings, bearer headers, bot URLs."""

from __future__ import annotations

import logging

import pytest

from siaga.logs import RedactFilter as RedactTokens
from siaga.logs import install_token_redaction, redact


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("/ws?token=abc.DEF-123&since=5", "/ws?token=[redacted]&since=5"),
        ("/ws?since=5&token=abc", "/ws?since=5&token=[redacted]"),
        ("/?TOKEN=abc", "/?TOKEN=[redacted]"),
        ("/ws?access_token=abc", "/ws?access_token=[redacted]"),
        ("/ws?since=5", "/ws?since=5"),
        ("/ws?notatoken=abc", "/ws?notatoken=abc"),
    ],
)
def test_redact(line: str, want: str) -> None:
    assert redact(line) == want


def test_filter_rewrites_args_of_an_access_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/?token=sekret", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    assert "sekret" not in record.getMessage() and "token=[redacted]" in record.getMessage()


def test_install_is_idempotent() -> None:
    install_token_redaction(["siaga.test.redact"])
    install_token_redaction(["siaga.test.redact"])
    assert sum(isinstance(f, RedactTokens) for f in logging.getLogger("siaga.test.redact").filters) == 1


@pytest.mark.parametrize("line", ["Authorization: Bearer abc.def-123", "POST /bot123456:AAE-xyz_9/sendMessage"])
def test_redact_headers_and_bot_urls(line: str) -> None:
    assert "abc.def-123" not in redact(line) and "AAE-xyz_9" not in redact(line)


def test_throttle_lets_one_repeat_through_per_interval() -> None:
    from siaga.logs import Throttle

    t = Throttle(interval_s=60)

    def rec(name: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, "Unable connect to %s", ("node",), None)

    assert [t.filter(rec("aiokafka.conn")) for _ in range(3)] == [True, False, False]
    assert t.filter(rec("siaga.ingest")) and t.filter(rec("siaga.ingest")), "our own logs are never throttled"
