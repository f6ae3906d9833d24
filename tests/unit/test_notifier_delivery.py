"""The delivery machinery without I/O: token buckets, backoff, the breaker, response classification."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from services.dispatch.notifier.channels import (
    DeliveryFailure,
    check_response,
    parse_callback_data,
    retry_after_seconds,
    signature,
    verify_signature,
)
from services.dispatch.notifier.delivery import BreakerState, CircuitBreaker, TokenBucket, backoff
from services.dispatch.notifier.redact import Redactor
from services.dispatch.notifier.routing import BreakerSettings, RateLimit, RetrySettings

T0 = datetime(2024, 11, 27, 7, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_token_bucket_spaces_concurrent_reservations_at_the_rate() -> None:
    bucket = TokenBucket(RateLimit(rate_per_s=1.0, burst=1), T0)
    # Ten callers asking at the same instant are told to go one second apart, in order.
    assert [bucket.reserve(T0) for _ in range(10)] == pytest.approx([float(i) for i in range(10)])


def test_token_bucket_burst_then_rate_and_refill() -> None:
    bucket = TokenBucket(RateLimit(rate_per_s=30.0, burst=30), T0)
    waits = [bucket.reserve(T0) for _ in range(60)]
    assert waits[:30] == [0.0] * 30
    assert waits[30] == pytest.approx(1 / 30) and waits[59] == pytest.approx(1.0)
    later = TokenBucket(RateLimit(rate_per_s=2.0, burst=2), T0)
    assert [later.reserve(T0), later.reserve(T0), later.reserve(T0)] == pytest.approx([0, 0, 0.5])
    assert later.reserve(at(10)) == 0.0  # refilled, never above the burst
    assert later.reserve(at(10)) == 0.0
    assert later.reserve(at(10)) == pytest.approx(0.5)


def test_full_jitter_backoff_grows_and_is_capped() -> None:
    retry = RetrySettings(base_delay_s=1, max_delay_s=30, max_attempts=10)
    assert [backoff(retry, n, lambda: 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(retry, 5, lambda: 0.0) == 0
    assert backoff(retry, 3, lambda: 0.5) == 2


def test_breaker_opens_half_opens_and_closes() -> None:
    breaker = CircuitBreaker(BreakerSettings(failures=3, cooldown_s=30))
    for _ in range(2):
        assert breaker.permit(T0) == 0
        breaker.failure(T0)
    assert breaker.state is BreakerState.CLOSED
    breaker.failure(T0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.permit(at(10)) == pytest.approx(20)
    assert breaker.permit(at(30)) == 0  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.permit(at(30)) > 0  # only one probe at a time
    breaker.failure(at(31))
    assert breaker.state is BreakerState.OPEN and breaker.permit(at(40)) == pytest.approx(21)
    assert breaker.permit(at(61)) == 0
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.permit(at(61)) == 0
    assert breaker.transitions == ["open", "half_open", "open", "half_open", "closed"]


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(BreakerSettings(failures=2, cooldown_s=1))
    breaker.failure(T0)
    breaker.success()
    breaker.failure(T0)
    assert breaker.state is BreakerState.CLOSED


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds("7", T0) == 7
    assert retry_after_seconds(format_datetime(at(42), usegmt=True), T0) == 42
    assert retry_after_seconds(format_datetime(at(-5), usegmt=True), T0) == 0
    assert retry_after_seconds("soon", T0) is None
    assert retry_after_seconds(None, T0) is None


def failure(status: int, headers: dict[str, str] | None = None) -> DeliveryFailure:
    with pytest.raises(DeliveryFailure) as info:
        check_response(httpx.Response(status, headers=headers, text="nope"), T0)
    return info.value


def test_classification_of_answers() -> None:
    check_response(httpx.Response(204), T0)
    limited = failure(429, {"Retry-After": "3"})
    assert limited.retryable and limited.retry_after == 3 and not limited.destination_fault
    down = failure(503)
    assert down.retryable and down.destination_fault
    for status in (400, 401, 403, 404, 410, 422):
        permanent = failure(status)
        assert not permanent.retryable, status


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    # RFC 4231, test case 2.
    raw = b"what do ya want for nothing?"
    sig = signature("Jefe", raw)
    assert sig == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert verify_signature("Jefe", raw, sig)
    assert not verify_signature("other", raw, sig)
    assert not verify_signature("Jefe", raw + b" ", sig)
    assert not verify_signature("Jefe", raw, None)


def test_callback_data_round_trip() -> None:
    assert parse_callback_data("ack:INC-1") == ("acknowledge", "INC-1")
    assert parse_callback_data("resolve:INC-1") == ("resolve", "INC-1")
    assert parse_callback_data("delete:INC-1") is None
    assert parse_callback_data("ack:") is None


def test_redactor_masks_tokens_and_registered_secrets() -> None:
    redactor = Redactor()
    redactor.add(["https://hooks.slack.com/services/T/B/verysecret", None, "abc"])
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: POST %s "%s"',
        (
            "https://api.telegram.org/bot123456:AAH-xyz_987/sendMessage",
            "https://hooks.slack.com/services/T/B/verysecret",
        ),
        None,
    )
    assert redactor.filter(record)
    text = record.getMessage()
    assert "AAH-xyz_987" not in text and "verysecret" not in text
    assert "/bot***/sendMessage" in text
    assert "abc" not in redactor.redact("x") and redactor.redact("abc") == "abc"  # too short to be a secret
