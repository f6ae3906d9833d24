"""The notifier against fake providers that are real HTTP servers on 127.0.0.1.

Time is a ManualClock and every wait of the notifier moves it (ClockSleep), so retries,
backoff, Retry-After, rate limits and breaker cool-downs take no real time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlmodel import Session

from services.dispatch.notifier import AlertIntent, AlertRouting, Notifier, delivery_key, telegram_router
from services.dispatch.notifier.delivery import BreakerState
from services.dispatch.notifier.messages import load_templates
from siaga import topics
from siaga.bus.memory import MemoryBus
from siaga.clock import ManualClock
from siaga.models import AlertDelivery
from siaga.runtime import Context, make_context
from siaga.settings import Settings
from tests.fakes import BlockingSleep, ClockSleep, RecordingActions, RecordingRecorder, alert_intent, intent_bytes
from tests.fakes.providers import FakeProvider, FakeSlack, FakeTelegram, FakeWebhook, FakeWhatsApp, Reply

SECRET = "webhook-shared-secret"
TG_SECRET = "tg-webhook-secret-123"
INCIDENT = "INC-20241127-0001"
FAST_RETRY = {"max_attempts": 5, "base_delay_s": 1.0, "max_delay_s": 8.0, "max_elapsed_s": 600.0}
FAST_CHANNELS = {name: {"timeout_s": 0.3} for name in ("telegram", "whatsapp", "slack", "webhook")}


class SettingsWithSecret(Settings):
    # Until Settings has it (see the report): the secret Telegram sends with every update.
    telegram_webhook_secret: str | None = None


# -- fakes: one server each for the module, reset for every test ---------------------------------
@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProvider]]:
    fakes: dict[str, FakeProvider] = {
        "telegram": FakeTelegram(),
        "whatsapp": FakeWhatsApp(),
        "slack": FakeSlack(),
        "webhook": FakeWebhook(secret=SECRET),
    }
    for fake in fakes.values():
        fake.start()
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleep(clock: ManualClock) -> ClockSleep:
    return ClockSleep(clock)


def _fresh(fake: FakeProvider, clock: ManualClock, *, dedupe: bool = False) -> Any:
    fake.reset()
    fake.clock, fake.dedupe = clock.now, dedupe
    return fake


@pytest.fixture
def telegram(servers: dict[str, FakeProvider], clock: ManualClock) -> FakeTelegram:
    fake: FakeTelegram = _fresh(servers["telegram"], clock)
    return fake


@pytest.fixture
def whatsapp(servers: dict[str, FakeProvider], clock: ManualClock) -> FakeWhatsApp:
    fake: FakeWhatsApp = _fresh(servers["whatsapp"], clock)
    return fake


@pytest.fixture
def slack(servers: dict[str, FakeProvider], clock: ManualClock) -> FakeSlack:
    fake: FakeSlack = _fresh(servers["slack"], clock)
    return fake


@pytest.fixture
def webhook(servers: dict[str, FakeProvider], clock: ManualClock) -> FakeWebhook:
    fake: FakeWebhook = _fresh(servers["webhook"], clock, dedupe=True)
    return fake


@pytest.fixture
def ctx(tmp_path: Path, clock: ManualClock, servers: dict[str, Any]) -> Context:
    telegram, whatsapp = servers["telegram"], servers["whatsapp"]
    settings = SettingsWithSecret(
        database_url=f"sqlite:///{tmp_path / 'siaga.db'}",
        public_url="https://siaga.example",
        telegram_bot_token=telegram.token,
        telegram_api_base=telegram.url,
        telegram_chat_id=None,
        whatsapp_api_base=whatsapp.url,
        whatsapp_token=whatsapp.token,
        whatsapp_phone_number_id=whatsapp.phone_number_id,
        webhook_url=None,
        webhook_secret=None,
        slack_webhook_url=None,
        telegram_webhook_secret=TG_SECRET,
        language="id",
    )
    return make_context(settings, bus=MemoryBus(), clock=clock)


def routing(*recipients: dict[str, Any], **extra: Any) -> AlertRouting:
    doc: dict[str, Any] = {"recipients": list(recipients), "retry": FAST_RETRY, "channels": FAST_CHANNELS}
    doc.update(extra)
    return AlertRouting.model_validate(doc)


def hook(url: str, name: str = "ops-hook", **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "channel": "webhook",
        "target": url,
        "levels": [1, 2, 3],
        "stakeholders": ["bpbd", "kpu", "bawaslu", "health"],
        "secret": SECRET,
        **kw,
    }


def chat(target: str = "-100200", name: str = "polres-ops", **kw: Any) -> dict[str, Any]:
    return {"name": name, "channel": "telegram", "target": target, "levels": [1, 2, 3], **kw}


def notifier(
    ctx: Context, route: AlertRouting, recorder: RecordingRecorder, sleep: Callable[..., Any], **kw: Any
) -> Notifier:
    return Notifier(ctx, routing=lambda: route, recorder=recorder, sleep=sleep, random=lambda: 1.0, **kw)


def intent(**kw: Any) -> AlertIntent:
    return AlertIntent.model_validate(alert_intent(**kw))


def row(ctx: Context, key: str) -> AlertDelivery | None:
    with Session(ctx.engine) as session:
        return session.get(AlertDelivery, key)


def status(ctx: Context, key: str) -> str | None:
    found = row(ctx, key)
    return found.status if found else None


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def dead_letters(ctx: Context) -> AsyncIterator[Callable[[], Any]]:
    """Reads siaga.dead-letter on the test's bus."""
    source = ctx.bus.consumer([topics.DEAD_LETTER], None, broadcast=True)
    await source.start()
    seen: list[dict[str, Any]] = []

    async def read() -> list[dict[str, Any]]:
        seen.extend(orjson.loads(r.value) for r in await source.fetch(100, 0.05))
        return seen

    yield read
    await source.stop()


async def committed(ctx: Context) -> bool:
    """True when the notifier group has nothing left to read on siaga.alerts."""
    probe = ctx.bus.consumer([topics.ALERTS], "siaga-notifier")
    await probe.start()
    try:
        return await probe.fetch(10, 0.05) == []
    finally:
        await probe.stop()


# -- the channels speak their APIs -----------------------------------------------------------------
async def test_each_channel_speaks_its_providers_api(
    ctx: Context,
    sleep: ClockSleep,
    telegram: FakeTelegram,
    whatsapp: FakeWhatsApp,
    slack: FakeSlack,
    webhook: FakeWebhook,
) -> None:
    route = routing(
        chat(can_act=True),
        {
            "name": "polda-wa",
            "channel": "whatsapp",
            "target": "+6281234567",
            "levels": [2],
            "template": "siaga_alert_v2",
        },
        {"name": "ops-slack", "channel": "slack", "target": slack.hook_url, "levels": [2]},
        hook(webhook.hook_url),
    )
    recorder = RecordingRecorder()
    n = notifier(ctx, route, recorder, sleep)
    await n.start()
    try:
        await n.notify(intent())
    finally:
        await n.stop()

    [tg] = telegram.delivered
    assert tg.path == f"/bot{telegram.token}/sendMessage"
    body = tg.json()
    assert body["chat_id"] == "-100200" and body["parse_mode"] == "HTML"
    assert "TPS 001 Cikande" in body["text"] and "Polres" in body["text"]
    buttons = body["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == [f"ack:{INCIDENT}", f"resolve:{INCIDENT}"]

    [wa] = whatsapp.delivered
    assert wa.path == f"/{whatsapp.phone_number_id}/messages"
    assert wa.headers["authorization"] == f"Bearer {whatsapp.token}"
    doc = wa.json()
    assert doc["messaging_product"] == "whatsapp" and doc["to"] == "6281234567" and doc["type"] == "template"
    assert doc["template"]["name"] == "siaga_alert_v2" and doc["template"]["language"] == {"code": "id"}
    params = doc["template"]["components"][0]["parameters"]
    assert params[0] == {"type": "text", "text": "TPS 001 Cikande (SRG-CKD-001)"}

    [sl] = slack.delivered
    assert "Kekerasan" in sl.json()["text"] and sl.json()["blocks"][0]["type"] == "header"

    [wh] = webhook.delivered  # the fake answers 401 to a bad signature, so this one verified
    key = delivery_key(intent(), "ops-hook")
    assert wh.headers["idempotency-key"] == key
    payload = wh.json()
    assert set(payload) == {"idempotency_key", "sent_at", "level", "recipient", "text", "incident"}
    assert payload["idempotency_key"] == key and payload["level"] == 2 and payload["recipient"] == "ops-hook"
    assert payload["incident"]["id"] == INCIDENT and "timeline" not in payload["incident"]
    assert f"https://siaga.example/#incident/{INCIDENT}" in payload["text"]

    assert sorted(o for _, o in recorder.outcomes()) == ["sent"] * 4
    stored = row(ctx, key)
    assert stored is not None and stored.status == "sent" and stored.attempts == 1


async def test_webhook_signature_verifies_against_the_raw_body(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook
) -> None:
    n = notifier(ctx, routing(hook(webhook.hook_url)), RecordingRecorder(), sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    [request] = webhook.requests
    assert request.headers["x-siaga-signature"].startswith("sha256=")
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-siaga-signature"] == f"sha256={expected}"
    assert webhook.signature_ok(request.body, request.headers["x-siaga-signature"])
    assert not webhook.signature_ok(request.body + b" ", request.headers["x-siaga-signature"])


async def test_a_wrong_webhook_secret_is_a_permanent_failure(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook, dead_letters: Callable[[], Any]
) -> None:
    recorder = RecordingRecorder()
    n = notifier(ctx, routing(hook(webhook.hook_url, secret="not-the-shared-one")), recorder, sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert [r.status for r in webhook.requests] == [401]
    assert recorder.outcomes()[0][1] == "failed" and "HTTP 401" in recorder.calls[0]["detail"]


async def test_stakeholder_webhook_carries_the_incidents_level(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook
) -> None:
    n = notifier(ctx, routing(hook(webhook.hook_url)), RecordingRecorder(), sleep)
    await n.start()
    await n.notify(intent(level=1, audience="stakeholder", stakeholder="bpbd"))
    await n.stop()
    [request] = webhook.delivered
    assert request.json()["level"] == 2  # public_incident() stands at level 2
    assert request.idempotency_key == f"{INCIDENT}:1:bpbd/ops-hook:0"


# -- retries ------------------------------------------------------------------------------------------
async def test_retries_then_exactly_one_delivery_per_key(ctx: Context, sleep: ClockSleep, webhook: FakeWebhook) -> None:
    # 500, then a timeout (the receiver got it, our client did not hear back), then the retry:
    # the receiver dedupes by Idempotency-Key and takes the alert in once.
    webhook.script(500, "timeout", 503)
    recorder = RecordingRecorder()
    n = notifier(ctx, routing(hook(webhook.hook_url)), recorder, sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    key = delivery_key(intent(), "ops-hook")
    assert len(webhook.requests) == 3
    assert {r.idempotency_key for r in webhook.requests} == {key}
    assert len(webhook.delivered) == 1
    assert sleep.delays == [1.0, 2.0]  # exponential backoff (jitter pinned at its top)
    stored = row(ctx, key)
    assert stored is not None and stored.status == "sent" and stored.attempts == 3
    assert recorder.outcomes() == [(key, "sent")]


async def test_server_errors_are_retried_with_growing_backoff(
    ctx: Context, sleep: ClockSleep, slack: FakeSlack
) -> None:
    slack.script(500, 502, 503, 200)
    route = routing({"name": "ops-slack", "channel": "slack", "target": slack.hook_url, "levels": [2]})
    n = notifier(ctx, route, RecordingRecorder(), sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert [r.status for r in slack.requests] == [500, 502, 503, 200]
    assert sleep.delays == [1.0, 2.0, 4.0]


async def test_no_retry_on_400_and_the_failure_is_dead_lettered(
    ctx: Context, sleep: ClockSleep, telegram: FakeTelegram, dead_letters: Callable[[], Any]
) -> None:
    telegram.script(400)
    recorder = RecordingRecorder()
    n = notifier(ctx, routing(chat()), recorder, sleep)
    await n.start()
    await ctx.bus.publish(topics.ALERTS, INCIDENT, intent_bytes())
    await until(lambda: bool(recorder.calls))
    key = delivery_key(intent(), "polres-ops")
    [letter] = await dead_letters()
    await until(lambda: status(ctx, key) == "failed")
    assert await committed(ctx)
    await n.stop()
    assert len(telegram.requests) == 1 and sleep.delays == []
    assert letter["idempotency_key"] == key and letter["recipient"] == "polres-ops"
    assert letter["channel"] == "telegram" and letter["topic"] == topics.ALERTS and letter["key"] == INCIDENT
    assert "HTTP 400" in letter["reason"] and "chat not found" in letter["reason"]
    assert orjson.loads(letter["value"])["incident_id"] == INCIDENT
    assert recorder.calls[0]["outcome"] == "failed" and "HTTP 400" in recorder.calls[0]["detail"]


async def test_exhausted_retries_are_dead_lettered(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook, dead_letters: Callable[[], Any]
) -> None:
    webhook.script(*[500] * 10)
    recorder = RecordingRecorder()
    route = routing(hook(webhook.hook_url), retry={**FAST_RETRY, "max_attempts": 3}, breaker={"failures": 100})
    n = notifier(ctx, route, recorder, sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert len(webhook.requests) == 3
    [letter] = await dead_letters()
    assert "gave up after 3 attempts" in letter["reason"]
    stored = row(ctx, letter["idempotency_key"])
    assert stored is not None and stored.status == "failed" and stored.attempts == 3


async def test_retry_window_caps_the_time_spent(ctx: Context, sleep: ClockSleep, webhook: FakeWebhook) -> None:
    webhook.script(*[503] * 20)
    route = routing(
        hook(webhook.hook_url),
        retry={"max_attempts": 100, "base_delay_s": 10, "max_delay_s": 10, "max_elapsed_s": 35},
        breaker={"failures": 100},
    )
    recorder = RecordingRecorder()
    n = notifier(ctx, route, recorder, sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert len(webhook.requests) == 4  # at 0, 10, 20, 30 s; the next would be past 35 s
    assert "retry window" in recorder.calls[0]["detail"]


@pytest.mark.parametrize("kind", ["seconds", "http-date"])
async def test_retry_after_is_honoured(
    ctx: Context, clock: ManualClock, sleep: ClockSleep, slack: FakeSlack, kind: str
) -> None:
    after = "17" if kind == "seconds" else format_datetime(clock.now() + timedelta(seconds=17), usegmt=True)
    slack.script(Reply(429, retry_after=after), 200)
    route = routing({"name": "ops-slack", "channel": "slack", "target": slack.hook_url, "levels": [2]})
    n = Notifier(ctx, routing=lambda: route, recorder=RecordingRecorder(), sleep=sleep, random=lambda: 0.0)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert [r.status for r in slack.requests] == [429, 200]
    assert sleep.delays == [pytest.approx(17.0, abs=1)]
    gap = slack.requests[1].at - slack.requests[0].at
    assert gap >= timedelta(seconds=16)


async def test_telegram_retry_after_in_the_body_is_honoured(
    ctx: Context, sleep: ClockSleep, telegram: FakeTelegram
) -> None:
    telegram.script(Reply(429, retry_after="9"))
    n = Notifier(ctx, routing=lambda: routing(chat()), recorder=RecordingRecorder(), sleep=sleep, random=lambda: 0.0)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert [r.status for r in telegram.requests] == [429, 200]
    assert sleep.delays == [9.0]


async def test_whatsapp_rate_limit_error_code_is_retried(
    ctx: Context, sleep: ClockSleep, whatsapp: FakeWhatsApp
) -> None:
    whatsapp.script(Reply(400, {"error": {"message": "pair rate limit", "code": 131056}}))
    route = routing({"name": "wa", "channel": "whatsapp", "target": "628111", "levels": [2]})
    n = notifier(ctx, route, RecordingRecorder(), sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert [r.status for r in whatsapp.requests] == [400, 200]


async def test_unconfigured_channel_fails_without_a_request(
    tmp_path: Path, clock: ManualClock, sleep: ClockSleep, whatsapp: FakeWhatsApp
) -> None:
    settings = SettingsWithSecret(
        database_url=f"sqlite:///{tmp_path / 'x.db'}", whatsapp_token=None, whatsapp_api_base=whatsapp.url
    )
    context = make_context(settings, bus=MemoryBus(), clock=clock)
    recorder = RecordingRecorder()
    n = notifier(
        context, routing({"name": "wa", "channel": "whatsapp", "target": "628111", "levels": [2]}), recorder, sleep
    )
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert whatsapp.requests == []
    assert "SIAGA_WHATSAPP_TOKEN" in recorder.calls[0]["detail"]


# -- rate limits and the breaker ------------------------------------------------------------------
async def test_telegram_rate_limit_per_chat(ctx: Context, sleep: ClockSleep, telegram: FakeTelegram) -> None:
    n = notifier(ctx, routing(chat(), chat("-100300", "polda-ops")), RecordingRecorder(), sleep)
    await n.start()
    for i in range(6):
        await n.notify(intent(id=f"INC-{i}"))
    await n.stop()
    assert len(telegram.delivered) == 12
    for chat_id in ("-100200", "-100300"):
        times = [r.at for r in telegram.delivered if r.json()["chat_id"] == chat_id]
        assert len(times) == 6
        for t in times:  # at most one message a second to one chat
            assert sum(t <= u < t + timedelta(seconds=1) for u in times) == 1
    assert telegram.delivered[-1].at - telegram.delivered[0].at >= timedelta(seconds=5)


async def test_slack_rate_limit_is_configurable(ctx: Context, sleep: ClockSleep, slack: FakeSlack) -> None:
    route = routing(
        {"name": "ops-slack", "channel": "slack", "target": slack.hook_url, "levels": [2]},
        channels={"slack": {"per_destination": {"rate_per_s": 0.5, "burst": 2}}},
    )
    n = notifier(ctx, route, RecordingRecorder(), sleep)
    await n.start()
    for i in range(6):
        await n.notify(intent(id=f"INC-{i}"))
    await n.stop()
    times = [r.at for r in slack.delivered]
    assert len(times) == 6
    window = timedelta(seconds=4)  # 2 a burst, then one every 2 s: never more than 3 in 4 s
    assert max(sum(t <= u < t + window for u in times) for t in times) <= 3
    assert times[-1] - times[0] >= timedelta(seconds=8)


async def test_breaker_opens_waits_the_cooldown_and_closes(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook
) -> None:
    webhook.script(500, 500)
    route = routing(
        hook(webhook.hook_url), retry={**FAST_RETRY, "max_attempts": 2}, breaker={"failures": 2, "cooldown_s": 60}
    )
    recorder = RecordingRecorder()
    n = notifier(ctx, route, recorder, sleep)
    await n.start()
    await n.notify(intent(id="INC-A"))  # two failures: dead-lettered, breaker open
    breaker = n.deliverer.breakers.get(route.recipients[0].destination, route.breaker)
    assert breaker.state is BreakerState.OPEN
    await n.notify(intent(id="INC-B"))  # waits out the cool-down without sending, then the probe goes
    await n.stop()
    assert [r.status for r in webhook.requests] == [500, 500, 200]
    assert webhook.requests[2].at - webhook.requests[1].at >= timedelta(seconds=60)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.transitions == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    assert [o for _, o in recorder.outcomes()] == ["failed", "sent"]


async def test_one_failing_destination_does_not_hold_back_the_others(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook, telegram: FakeTelegram
) -> None:
    webhook.script(400)
    recorder = RecordingRecorder()
    n = notifier(ctx, routing(hook(webhook.hook_url), chat()), recorder, sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert len(telegram.delivered) == 1
    assert sorted(o for _, o in recorder.outcomes()) == ["failed", "sent"]


# -- at least once, never twice ------------------------------------------------------------------
async def test_a_redelivered_intent_is_not_sent_twice(ctx: Context, sleep: ClockSleep, telegram: FakeTelegram) -> None:
    recorder = RecordingRecorder()
    n = notifier(ctx, routing(chat()), recorder, sleep)
    await n.start()
    await ctx.bus.publish(topics.ALERTS, INCIDENT, intent_bytes())
    await until(lambda: len(recorder.calls) == 1)
    await ctx.bus.publish(topics.ALERTS, INCIDENT, intent_bytes())  # the same intent again
    await until(lambda: n.handled == 2)
    await n.stop()
    assert len(telegram.requests) == 1 and len(recorder.calls) == 1
    # A reminder is a new alert with its own key: it is sent.
    n = notifier(ctx, routing(chat()), recorder, sleep)
    await n.start()
    await n.notify(intent(reminder=1))
    await n.stop()
    assert len(telegram.requests) == 2


@pytest.mark.parametrize("first_answer", [500, "timeout"])
async def test_kill_and_restart_mid_retry_delivers_exactly_once(
    ctx: Context, sleep: ClockSleep, webhook: FakeWebhook, first_answer: int | str
) -> None:
    webhook.script(first_answer)
    route = routing(hook(webhook.hook_url))
    blocked = BlockingSleep()
    first = notifier(ctx, route, RecordingRecorder(), blocked)
    await first.start()
    await ctx.bus.publish(topics.ALERTS, INCIDENT, intent_bytes())
    await asyncio.wait_for(blocked.entered.wait(), 10)  # the first attempt failed; waiting to retry
    await first.stop()  # killed mid-retry: nothing committed
    assert len(webhook.requests) == 1

    recorder = RecordingRecorder()
    second = notifier(ctx, route, recorder, sleep)  # same bus group, same database
    await second.start()
    await until(lambda: len(recorder.calls) == 1)
    await until(lambda: second.handled == 1)
    assert await committed(ctx)
    await second.stop()
    key = delivery_key(intent(), "ops-hook")
    assert len(webhook.requests) == 2
    assert [r.idempotency_key for r in webhook.delivered] == [key]  # the receiver saw it exactly once
    stored = row(ctx, key)
    assert stored is not None and stored.status == "sent" and stored.attempts == 2
    assert recorder.outcomes() == [(key, "sent")]


async def test_a_malformed_intent_is_dead_lettered_and_committed(
    ctx: Context, sleep: ClockSleep, dead_letters: Callable[[], Any]
) -> None:
    n = notifier(ctx, routing(chat()), RecordingRecorder(), sleep)
    await n.start()
    await ctx.bus.publish(topics.ALERTS, INCIDENT, b'{"incident_id": "INC-1"}')
    letters: list[dict[str, Any]] = []

    async def arrived() -> None:
        while not letters:
            letters.extend(await dead_letters())

    await asyncio.wait_for(arrived(), 10)
    await until(lambda: n.handled == 1)
    assert await committed(ctx)
    await n.stop()
    assert letters[0]["reason"].startswith("invalid alert intent")


async def test_bot_token_and_hook_secrets_never_reach_the_logs(
    ctx: Context, sleep: ClockSleep, telegram: FakeTelegram, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # siaga.logs quiets httpx to WARNING once any service in this process has configured logging:
    # let it log every request here, so that the assertions below are about what it would write.
    caplog.set_level(logging.DEBUG, logger="httpx")
    telegram.script(500, 400)
    slack.script(500)
    route = routing(chat(), {"name": "ops-slack", "channel": "slack", "target": slack.hook_url, "levels": [2]})
    n = notifier(ctx, route, RecordingRecorder(), sleep)
    await n.start()
    await n.notify(intent())
    await n.stop()
    assert "HTTP Request" in caplog.text  # httpx did log the requests...
    assert telegram.token not in caplog.text  # ...without the token
    assert FakeSlack.HOOK_PATH not in caplog.text


# -- answerable alerts ------------------------------------------------------------------------------
def update(chat_id: int, data: str, username: str | None = "kabagops") -> dict[str, Any]:
    user: dict[str, Any] = {"id": 777, "is_bot": False, "first_name": "Budi"}
    if username:
        user["username"] = username
    return {
        "update_id": 1,
        "callback_query": {
            "id": "cbq-1",
            "from": user,
            "chat_instance": "x",
            "data": data,
            "message": {"message_id": 5, "date": 0, "chat": {"id": chat_id, "type": "group"}},
        },
    }


@pytest.fixture
def actions() -> RecordingActions:
    return RecordingActions(known={INCIDENT})


def client_for(ctx: Context, route: AlertRouting, actions: RecordingActions) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(telegram_router(ctx, routing=lambda: route, actions=actions))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://siaga")


ROUTE = routing(chat("-100200", "polres-ops", can_act=True), chat("-100300", "watchers"))
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}


async def test_telegram_buttons_acknowledge_and_resolve(
    ctx: Context, telegram: FakeTelegram, actions: RecordingActions
) -> None:
    async with client_for(ctx, ROUTE, actions) as client:
        ack = await client.post("/v1/telegram/webhook", json=update(-100200, f"ack:{INCIDENT}"), headers=HEADERS)
        res = await client.post(
            "/v1/telegram/webhook", json=update(-100200, f"resolve:{INCIDENT}", None), headers=HEADERS
        )
    assert ack.status_code == 200 and res.status_code == 200, (ack.text, res.text)
    resolution = load_templates("id").actions.resolution.format(actor="telegram:777")
    assert actions.calls == [
        ("acknowledge", INCIDENT, "telegram:kabagops", None),
        ("resolve", INCIDENT, "telegram:777", resolution),
    ]
    answered = telegram.answered_callbacks()
    assert [a["callback_query_id"] for a in answered] == ["cbq-1", "cbq-1"]
    assert "telegram:kabagops" in answered[0]["text"]


async def test_telegram_buttons_refused_for_a_chat_that_may_not_act(
    ctx: Context, telegram: FakeTelegram, actions: RecordingActions
) -> None:
    async with client_for(ctx, ROUTE, actions) as client:
        listed = await client.post("/v1/telegram/webhook", json=update(-100300, f"ack:{INCIDENT}"), headers=HEADERS)
        stranger = await client.post("/v1/telegram/webhook", json=update(-999, f"ack:{INCIDENT}"), headers=HEADERS)
    assert listed.status_code == 403 and "can_act" in listed.json()["detail"]
    assert stranger.status_code == 403
    assert actions.calls == []
    assert [a["text"] for a in telegram.answered_callbacks()] == [load_templates("id").actions.refused] * 2


@pytest.mark.parametrize("headers", [{}, {"X-Telegram-Bot-Api-Secret-Token": "guess"}])
async def test_telegram_webhook_needs_the_secret_token(
    ctx: Context, telegram: FakeTelegram, actions: RecordingActions, headers: dict[str, str]
) -> None:
    async with client_for(ctx, ROUTE, actions) as client:
        response = await client.post("/v1/telegram/webhook", json=update(-100200, f"ack:{INCIDENT}"), headers=headers)
    assert response.status_code == 403 and "Secret-Token" in response.json()["detail"]
    assert actions.calls == [] and telegram.requests == []


async def test_telegram_webhook_is_off_without_a_configured_secret(
    tmp_path: Path, clock: ManualClock, actions: RecordingActions
) -> None:
    context = make_context(Settings(database_url=f"sqlite:///{tmp_path / 'y.db'}"), bus=MemoryBus(), clock=clock)
    async with client_for(context, ROUTE, actions) as client:
        response = await client.post("/v1/telegram/webhook", json=update(-100200, f"ack:{INCIDENT}"), headers=HEADERS)
    assert response.status_code == 403 and "SIAGA_TELEGRAM_WEBHOOK_SECRET" in response.json()["detail"]
    assert actions.calls == []


async def test_telegram_webhook_unknown_incident_twice_resolved_and_other_updates(
    ctx: Context, telegram: FakeTelegram, actions: RecordingActions
) -> None:
    async with client_for(ctx, ROUTE, actions) as client:
        missing = await client.post("/v1/telegram/webhook", json=update(-100200, "ack:INC-NOPE"), headers=HEADERS)
        message = await client.post(
            "/v1/telegram/webhook", json={"update_id": 2, "message": {"text": "hi"}}, headers=HEADERS
        )
        junk = await client.post("/v1/telegram/webhook", content=b"not json", headers=HEADERS)
        first = await client.post("/v1/telegram/webhook", json=update(-100200, f"resolve:{INCIDENT}"), headers=HEADERS)
        again = await client.post("/v1/telegram/webhook", json=update(-100200, f"resolve:{INCIDENT}"), headers=HEADERS)
    assert first.status_code == 200
    assert again.status_code == 409 and "resolved" in again.json()["detail"]
    assert missing.status_code == 404
    assert message.status_code == 200 and message.json()["ignored"]
    assert junk.status_code == 422
    assert [c[0] for c in actions.calls] == ["resolve"]
