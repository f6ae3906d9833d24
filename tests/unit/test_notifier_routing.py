"""Alert routing: the policy's alerts section, the zero-config channels, who gets which intent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.dispatch.notifier import AlertIntent, AlertRouting, delivery_key, routing_from_settings, select
from services.dispatch.notifier.routing import ENV_SLACK, ENV_TELEGRAM, ENV_WEBHOOK
from siaga.settings import Settings
from tests.fakes import alert_intent

SECTION: dict[str, Any] = {
    "recipients": [
        {
            "name": "polsek-cikande",
            "channel": "telegram",
            "target": "-1001",
            "levels": [1],
            "kecamatan": ["Cikande"],
            "can_act": True,
        },
        {"name": "polres-ops", "channel": "telegram", "target": "-1002", "levels": [2, 3]},
        {
            "name": "polda",
            "channel": "whatsapp",
            "target": "+628111",
            "levels": [3],
            "min_severity": "high",
            "template": "siaga_alert",
            "language": "en",
        },
        {
            "name": "bpbd",
            "channel": "slack",
            "target": "https://hooks.slack.com/services/T/B/x",
            "stakeholders": ["bpbd"],
        },
        {
            "name": "bawaslu",
            "channel": "webhook",
            "target": "https://bawaslu.example/hook",
            "stakeholders": ["bawaslu"],
            "secret": "s3cret-value",
        },
    ],
    "channels": {"telegram": {"timeout_s": 5}},
    "retry": {"max_attempts": 3},
}


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "webhook_url": None,
        "webhook_secret": None,
        "telegram_bot_token": None,
        "telegram_chat_id": None,
        "slack_webhook_url": None,
    }
    return Settings(**{**base, **kw})


def names(routing: AlertRouting, **intent: Any) -> list[str]:
    return [r.name for r in select(routing, AlertIntent.model_validate(alert_intent(**intent)))]


def test_policy_section_routes_by_level_kecamatan_severity_and_stakeholder() -> None:
    routing = routing_from_settings(settings(), SECTION)
    assert names(routing, level=1) == ["polsek-cikande"]
    assert names(routing, level=1, kecamatan="Kragilan") == []
    assert names(routing, level=1, kecamatan="cikande") == ["polsek-cikande"]  # case does not matter
    assert names(routing, level=3, severity="high") == ["polres-ops", "polda"]
    assert names(routing, level=3, severity="medium") == ["polres-ops"]
    assert names(routing, audience="stakeholder", stakeholder="bpbd") == ["bpbd"]
    assert names(routing, audience="stakeholder", stakeholder="health") == []


def test_partial_channel_settings_keep_the_channel_defaults() -> None:
    routing = AlertRouting.model_validate(SECTION)
    assert routing.channels.telegram.timeout_s == 5
    assert routing.channels.telegram.per_destination is not None
    assert routing.channels.telegram.per_destination.rate_per_s == 1.0
    assert routing.channels.telegram.overall is not None and routing.channels.telegram.overall.rate_per_s == 30
    assert routing.retry.max_attempts == 3 and routing.retry.max_elapsed_s == 90


def test_zero_config_webhook_and_telegram_get_everything() -> None:
    routing = routing_from_settings(
        settings(
            webhook_url="https://ops.example/siaga",
            webhook_secret="shh-secret",
            telegram_bot_token="1:abc",
            telegram_chat_id="-42",
        ),
        None,
    )
    by_name = {r.name: r for r in routing.recipients}
    assert set(by_name) == {ENV_WEBHOOK, ENV_TELEGRAM}
    assert by_name[ENV_WEBHOOK].secret == "shh-secret"
    assert by_name[ENV_TELEGRAM].can_act and by_name[ENV_TELEGRAM].target == "-42"
    for level in (1, 2, 3):
        assert names(routing, level=level) == [ENV_WEBHOOK, ENV_TELEGRAM]
    for who in ("bpbd", "kpu", "bawaslu", "health"):
        assert names(routing, audience="stakeholder", stakeholder=who, severity="low") == [ENV_WEBHOOK, ENV_TELEGRAM]


def test_zero_config_adds_to_the_policy_but_not_twice() -> None:
    routing = routing_from_settings(settings(telegram_bot_token="1:abc", telegram_chat_id="-1002"), SECTION)
    assert [r.name for r in routing.recipients if r.target == "-1002"] == ["polres-ops"]
    routing = routing_from_settings(settings(telegram_bot_token="1:abc", telegram_chat_id="-77"), SECTION)
    assert routing.recipients[-1].name == ENV_TELEGRAM


def test_zero_config_slack_hook() -> None:
    routing = routing_from_settings(settings(slack_webhook_url="https://hooks.slack.com/services/T/B/z"), None)
    assert names(routing, level=3) == [ENV_SLACK]


def test_no_token_no_telegram_recipient() -> None:
    assert routing_from_settings(settings(telegram_chat_id="-42"), None).recipients == []


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ({"name": "a", "channel": "slack", "target": "not-a-url", "levels": [1]}, r"http\(s\) URL"),
        ({"name": "a", "channel": "telegram", "target": "1", "levels": []}, "gets nothing"),
        ({"name": "a", "channel": "slack", "target": "https://x.example", "levels": [1], "can_act": True}, "can_act"),
        ({"name": "a", "channel": "telegram", "target": "1", "levels": [1], "secret": "xxxxxx"}, "secret"),
        ({"name": "a", "channel": "whatsapp", "target": "phone", "levels": [1]}, "phone number"),
        ({"name": "a", "channel": "telegram", "target": "1", "levels": [4]}, "1, 2 or 3"),
        ({"name": "a", "channel": "pager", "target": "1", "levels": [1]}, "telegram"),
        ({"name": "a b", "channel": "telegram", "target": "1", "levels": [1]}, "pattern"),
    ],
)
def test_bad_recipients_are_refused_with_the_reason(recipient: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlertRouting.model_validate({"recipients": [recipient]})


def test_duplicate_names_are_refused() -> None:
    one = {"name": "same", "channel": "telegram", "target": "1", "levels": [1]}
    with pytest.raises(ValidationError, match="unique"):
        AlertRouting.model_validate({"recipients": [one, {**one, "target": "2"}]})


def test_secrets_stay_out_of_the_repr() -> None:
    routing = AlertRouting.model_validate(SECTION)
    text = repr(routing)
    assert "s3cret-value" not in text and "hooks.slack.com" not in text


def test_delivery_key_follows_the_architecture() -> None:
    police = AlertIntent.model_validate(alert_intent(level=2, reminder=1))
    assert delivery_key(police, "polres-ops") == "INC-20241127-0001:2:police/polres-ops:1"
    bpbd = AlertIntent.model_validate(alert_intent(level=1, audience="stakeholder", stakeholder="bpbd"))
    assert delivery_key(bpbd, "bpbd-hook") == "INC-20241127-0001:1:bpbd/bpbd-hook:0"


def test_intent_validation() -> None:
    with pytest.raises(ValidationError, match="names its stakeholder"):
        AlertIntent.model_validate(alert_intent(audience="stakeholder"))
    with pytest.raises(ValidationError):
        AlertIntent.model_validate(alert_intent(severity="apocalyptic"))
