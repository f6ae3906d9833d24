"""Getting one message through: retries with backoff, rate limits, a circuit breaker per destination.

Time comes from the injected clock and every wait goes through the injected `sleep`, so the
tests run an hour of retries in no real time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.dispatch.notifier.channels import Channel, Delivery, DeliveryFailure
from services.dispatch.notifier.routing import AlertRouting, BreakerSettings, RateLimit, RetrySettings
from siaga.clock import Clock, as_utc

log = logging.getLogger("siaga.notifier")

Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]
HALF_OPEN_POLL_S = 1.0  # how often a delivery looks again while another one probes a half-open breaker


def _seconds(later: datetime, earlier: datetime) -> float:
    return (as_utc(later) - as_utc(earlier)).total_seconds()


class TokenBucket:
    """A token bucket that hands out reservations: a caller takes a token now and is told how long to wait.

    Taking the token before waiting (the balance may go below zero) keeps concurrent callers
    spaced at the rate in the order they asked, with no lock and no thundering herd.
    """

    def __init__(self, limit: RateLimit, now: datetime) -> None:
        self.rate, self.burst = limit.rate_per_s, float(limit.burst)
        self.tokens = self.burst
        self.at = now

    def reserve(self, now: datetime) -> float:
        """Take one token; the seconds to wait before using it (0: at once)."""
        elapsed = max(0.0, _seconds(now, self.at))
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.at = max(as_utc(now), as_utc(self.at))
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class RateLimiter:
    """Per-channel buckets: one for the whole channel and one per destination."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[RateLimit, TokenBucket]] = {}

    def _bucket(self, key: tuple[str, str], limit: RateLimit, now: datetime) -> TokenBucket:
        held = self._buckets.get(key)
        if held is None or held[0] != limit:  # a policy reload with new numbers starts a fresh bucket
            held = (limit, TokenBucket(limit, now))
            self._buckets[key] = held
        return held[1]

    def reserve(self, routing: AlertRouting, channel: str, destination: str, now: datetime) -> float:
        """Reserve a send; the seconds to wait before it."""
        settings = routing.channels.get(channel)
        wait = 0.0
        if settings.overall:
            wait = max(wait, self._bucket((channel, ""), settings.overall, now).reserve(now))
        if settings.per_destination:
            wait = max(wait, self._bucket((channel, destination), settings.per_destination, now).reserve(now))
        return wait


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `cooldown_s` lets one probe through.

    The probe's success closes it; its failure opens it for another cool-down.
    """

    settings: BreakerSettings
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    probing: bool = False
    transitions: list[BreakerState] = field(default_factory=list)

    def _to(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.transitions.append(state)

    def permit(self, now: datetime) -> float:
        """0 when a request may go now (taking the probe slot if half-open), else seconds to wait."""
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            remaining = self.settings.cooldown_s - _seconds(now, self.opened_at)
            if remaining > 0:
                return remaining
            self._to(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self.probing:
                return min(HALF_OPEN_POLL_S, self.settings.cooldown_s) or HALF_OPEN_POLL_S
            self.probing = True
        return 0.0

    def release(self) -> None:
        """A permitted request ended without saying anything about the destination."""
        self.probing = False

    def success(self) -> None:
        self.failures, self.probing = 0, False
        self._to(BreakerState.CLOSED)

    def failure(self, now: datetime) -> None:
        self.failures += 1
        self.probing = False
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.settings.failures:
            self.opened_at = now
            self._to(BreakerState.OPEN)


class Breakers:
    """One circuit breaker per destination."""

    def __init__(self) -> None:
        self._by_destination: dict[str, CircuitBreaker] = {}

    def get(self, destination: str, settings: BreakerSettings) -> CircuitBreaker:
        breaker = self._by_destination.get(destination)
        if breaker is None:
            breaker = self._by_destination[destination] = CircuitBreaker(settings)
        breaker.settings = settings  # a reloaded policy's numbers apply from now on
        return breaker

    def open_count(self) -> int:
        return sum(b.state is not BreakerState.CLOSED for b in self._by_destination.values())


def backoff(retry: RetrySettings, attempt: int, random: Random) -> float:
    """Full jitter: uniform(0, min(max_delay, base * 2^(attempt-1))) after the attempt-th failure."""
    ceiling = min(retry.max_delay_s, retry.base_delay_s * 2.0 ** max(0, attempt - 1))
    return random() * ceiling


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended: sent, or failed for good (with the reason)."""

    sent: bool
    attempts: int
    reason: str = ""


Attempted = Callable[[int, str | None], Awaitable[None]]


class Deliverer:
    """Sends a Delivery through its channel until it is sent, refused for good, or out of time/attempts."""

    def __init__(self, channels: dict[str, Channel], *, clock: Clock, sleep: Sleep, random: Random) -> None:
        self.channels, self.clock, self.sleep, self.random = channels, clock, sleep, random
        self.limiter = RateLimiter()
        self.breakers = Breakers()

    async def deliver(self, delivery: Delivery, routing: AlertRouting, *, on_attempt: Attempted) -> Outcome:
        """Try until final; `on_attempt(n, error)` is awaited after each request (error None: sent)."""
        recipient = delivery.recipient
        channel = self.channels[recipient.channel]
        problem = channel.misconfigured(recipient)
        if problem:
            return Outcome(sent=False, attempts=0, reason=problem)
        retry, settings = routing.retry, routing.channels.get(recipient.channel)
        breaker = self.breakers.get(recipient.destination, routing.breaker)
        started = self.clock.now()
        attempt, reason = 0, ""

        async def wait(seconds: float) -> bool:
            """Sleep if the time budget allows it; False when it does not."""
            if _seconds(self.clock.now(), started) + seconds > retry.max_elapsed_s:
                return False
            if seconds > 0:
                await self.sleep(seconds)
            return True

        while True:
            # While the breaker is open the delivery waits (sending nothing) for the cool-down,
            # within its own time budget; it does not spend attempts on a destination known to be down.
            hold = breaker.permit(self.clock.now())
            if hold > 0:
                if not await wait(hold):
                    return Outcome(False, attempt, reason or "circuit open: destination failing")
                continue
            try:
                pause = self.limiter.reserve(routing, recipient.channel, recipient.destination, self.clock.now())
                if not await wait(pause):
                    breaker.release()
                    return Outcome(False, attempt, reason or "rate limit: no slot within the retry window")
                attempt += 1
                await channel.send(delivery, timeout_s=settings.timeout_s, now=self.clock.now())
            except DeliveryFailure as exc:
                if exc.destination_fault:
                    breaker.failure(self.clock.now())
                else:
                    breaker.release()
                reason = exc.reason
                await on_attempt(attempt, reason)
                if not exc.retryable:
                    return Outcome(False, attempt, f"refused: {reason}")
                if attempt >= retry.max_attempts:
                    return Outcome(False, attempt, f"gave up after {attempt} attempts: {reason}")
                delay = backoff(retry, attempt, self.random)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                log.info(
                    "alert %s to %s: attempt %d failed (%s); next in %.2fs",
                    delivery.key,
                    recipient.name,
                    attempt,
                    reason,
                    delay,
                )
                if not await wait(delay):
                    return Outcome(
                        False,
                        attempt,
                        f"gave up after {attempt} attempts (retry window of {retry.max_elapsed_s:g}s): {reason}",
                    )
                continue
            except BaseException:
                breaker.release()
                raise
            breaker.success()
            await on_attempt(attempt, None)
            return Outcome(True, attempt)
