"""The outbound SMS channel (SPEC section 11) against a loopback SMS gateway."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.dispatch.notifier import AlertIntent
from services.dispatch.notifier.channels import Delivery, DeliveryFailure, SmsChannel
from services.dispatch.notifier.messages import SMS_MAX, render
from services.dispatch.notifier.routing import Recipient
from siaga.settings import Settings
from tests.fakes import alert_intent
from tests.fakes.providers import FakeSmsGateway

NOW = datetime(2024, 11, 27, 8, 10, tzinfo=UTC)


@pytest.fixture
def gateway() -> Iterator[FakeSmsGateway]:
    with FakeSmsGateway(token="t0ken") as fake:
        yield fake


def delivery(code: str | None = "K7Q2M", **kw: Any) -> Delivery:
    doc = alert_intent(**kw)
    doc["incident"]["code"] = code
    intent = AlertIntent.model_validate(doc)
    recipient = Recipient(name="kapolsek", channel="sms", target="+6281234567890", levels=[1, 2])
    message = render(intent, language="id", public_url="https://siaga.example/", now=NOW)
    return Delivery(
        key=f"{intent.incident_id}:2:police/kapolsek:0", intent=intent, recipient=recipient, message=message
    )


async def test_an_alert_is_one_sms_naming_the_code(gateway: FakeSmsGateway) -> None:
    settings = Settings(sms_api_base=gateway.url, sms_api_token="t0ken")
    d = delivery()
    async with httpx.AsyncClient() as client:
        await SmsChannel(client, settings).send(d, timeout_s=5, now=NOW)
    [sent] = gateway.delivered
    body = sent.json()
    assert body["to"] == "+6281234567890" and body["idempotency_key"] == d.key
    assert "K7Q2M" in body["text"] and "OK K7Q2M" in body["text"] and len(body["text"]) <= SMS_MAX
    assert sent.idempotency_key == d.key


async def test_a_wrong_token_is_a_final_failure_and_unconfigured_is_said(gateway: FakeSmsGateway) -> None:
    async with httpx.AsyncClient() as client:
        channel = SmsChannel(client, Settings(sms_api_base=gateway.url, sms_api_token="wrong"))
        with pytest.raises(DeliveryFailure) as failed:
            await channel.send(delivery(), timeout_s=5, now=NOW)
        assert not failed.value.retryable
        unset = SmsChannel(client, Settings(sms_api_base=None, sms_api_token=None))
        assert "SIAGA_SMS_API_BASE" in (unset.misconfigured(delivery().recipient) or "")


def test_an_sms_recipient_needs_a_phone_number() -> None:
    with pytest.raises(ValueError, match="phone number"):
        Recipient(name="x", channel="sms", target="kapolsek", levels=[1])
