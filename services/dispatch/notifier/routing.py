"""Who gets which alert: the `alerts:` section of the policy file, plus the zero-config channels.

The section lists recipients (a Telegram chat, a WhatsApp number, a Slack hook, a webhook) with
the police ladder levels and stakeholder alerts each one gets, and holds the delivery numbers
(retries, rate limits, circuit breaker) so that an administrator tunes them without a restart.
"""

from __future__ import annotations

from datetime import time
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from siaga.contracts import STAKEHOLDERS, AlertIntent, Audience, Stakeholder
from siaga.events import SEVERITY_ORDER, Severity
from siaga.settings import Settings

ChannelName = Literal["telegram", "whatsapp", "slack", "webhook", "sms"]
Language = Literal["id", "en"]

LEVELS: tuple[int, ...] = (1, 2, 3)
DEFAULT_SITREP_TIMES = ("10:00", "13:00", "17:00", "21:00")  # SPEC section 10, local time (WIB)
ENV_WEBHOOK = "env-webhook"
ENV_TELEGRAM = "env-telegram"
ENV_SLACK = "env-slack"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipient(_Strict):
    """One chat, number, hook or webhook and what it gets."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Unique; part of the idempotency key, so keep it stable.",
    )
    channel: ChannelName
    # A Slack hook URL is itself a credential: keep it out of reprs and logs.
    target: str = Field(min_length=1, repr=False, description="Chat id, phone number or hook URL.")
    levels: list[Literal[1, 2, 3]] = Field(default_factory=list, description="Police ladder levels it gets.")
    stakeholders: list[Stakeholder] = Field(default_factory=list, description="Stakeholder alerts it gets.")
    kecamatan: list[str] = Field(default_factory=list, description="Only these kecamatan; empty: all.")
    min_severity: Severity = Severity.LOW
    language: Language | None = Field(default=None, description="id or en; unset: SIAGA_LANGUAGE.")
    secret: str | None = Field(default=None, repr=False, description="Webhook HMAC secret.")
    template: str | None = Field(default=None, description="WhatsApp message template name.")
    can_act: bool = Field(default=False, description="Telegram: members may acknowledge/resolve.")
    sitrep: bool = Field(default=False, description="Gets the scheduled situation reports (sitrep_times).")

    @model_validator(mode="after")
    def _fits_channel(self) -> Recipient:
        if not self.levels and not self.stakeholders and not self.sitrep:
            raise ValueError(f"recipient {self.name} gets nothing: give it levels, stakeholders and/or sitrep")
        if self.channel in ("slack", "webhook"):
            parts = urlsplit(self.target)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"recipient {self.name}: target must be an http(s) URL for {self.channel}")
        if self.channel in ("whatsapp", "sms") and not self.target.lstrip("+").isdigit():
            raise ValueError(f"recipient {self.name}: target must be a phone number in international form")
        if self.secret is not None and self.channel != "webhook":
            raise ValueError(f"recipient {self.name}: secret is only for webhook recipients")
        if self.template is not None and self.channel != "whatsapp":
            raise ValueError(f"recipient {self.name}: template is only for whatsapp recipients")
        if self.can_act and self.channel != "telegram":
            raise ValueError(f"recipient {self.name}: can_act is only for telegram chats")
        return self

    @property
    def destination(self) -> str:
        """Where messages go, for rate limits and the breaker (channel plus target)."""
        return f"{self.channel}:{self.target}"


class RateLimit(_Strict):
    """A token bucket: `rate_per_s` sustained, `burst` at once."""

    rate_per_s: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class ChannelSettings(_Strict):
    per_destination: RateLimit | None = None
    overall: RateLimit | None = None
    timeout_s: float = Field(default=10.0, gt=0, description="One HTTP request, connect to last byte.")


class TelegramSettings(ChannelSettings):
    # Bot API limits: about one message a second per chat, thirty a second per bot.
    per_destination: RateLimit | None = RateLimit(rate_per_s=1.0, burst=1)
    overall: RateLimit | None = RateLimit(rate_per_s=30.0, burst=30)


class WhatsAppSettings(ChannelSettings):
    # Cloud API: 80 messages a second per number; about one every 6 s to the same user, short bursts.
    per_destination: RateLimit | None = RateLimit(rate_per_s=0.17, burst=5)
    overall: RateLimit | None = RateLimit(rate_per_s=80.0, burst=80)


class SlackSettings(ChannelSettings):
    # Incoming webhooks: one message a second per hook.
    per_destination: RateLimit | None = RateLimit(rate_per_s=1.0, burst=1)


class WebhookSettings(ChannelSettings):
    per_destination: RateLimit | None = RateLimit(rate_per_s=10.0, burst=20)


class SmsSettings(ChannelSettings):
    # One phone: an SMS every 5 s at most (a burst of 3), so a storm of alerts is not a wall of texts.
    per_destination: RateLimit | None = RateLimit(rate_per_s=0.2, burst=3)
    overall: RateLimit | None = RateLimit(rate_per_s=10.0, burst=10)


class Channels(_Strict):
    telegram: TelegramSettings = TelegramSettings()
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    slack: SlackSettings = SlackSettings()
    webhook: WebhookSettings = WebhookSettings()
    sms: SmsSettings = SmsSettings()

    def get(self, channel: str) -> ChannelSettings:
        value: ChannelSettings = getattr(self, channel)
        return value


class RetrySettings(_Strict):
    """Exponential backoff with full jitter: wait uniform(0, min(max_delay, base * 2^(n-1))) after failure n.

    The window is short on purpose: an intent is committed only when all its recipients are done,
    so a long window would hold back the alerts behind it; the ladder's reminders follow anyway.
    """

    max_attempts: int = Field(default=8, ge=1)
    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=15.0, ge=0)
    max_elapsed_s: float = Field(default=90.0, gt=0, description="Give up (dead-letter) after this long.")


class BreakerSettings(_Strict):
    failures: int = Field(default=5, ge=1, description="Consecutive failures that open the breaker.")
    cooldown_s: float = Field(default=30.0, ge=0, description="Open this long before one probe is let through.")


class AlertRouting(_Strict):
    """The `alerts:` section of the policy file."""

    recipients: list[Recipient] = Field(default_factory=list)
    sitrep_times: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SITREP_TIMES),
        description="Local times (WIB, HH:MM) at which the sitrep recipients get a short situation report.",
    )
    channels: Channels = Channels()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()

    @field_validator("recipients")
    @classmethod
    def _unique_names(cls, v: list[Recipient]) -> list[Recipient]:
        seen: set[str] = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"two recipients are named {r.name}; names must be unique")
            seen.add(r.name)
        return v

    @field_validator("sitrep_times")
    @classmethod
    def _clock_times(cls, v: list[str]) -> list[str]:
        for t in v:
            try:
                ok = len(t) == 5 and time.fromisoformat(t).strftime("%H:%M") == t
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"sitrep time {t!r} is not a time of day HH:MM (00:00 to 23:59)")
        return sorted(set(v))

    def recipient(self, name: str) -> Recipient | None:
        return next((r for r in self.recipients if r.name == name), None)

    def sitrep_recipients(self) -> list[Recipient]:
        return [r for r in self.recipients if r.sitrep]

    def telegram_chat(self, chat_id: str) -> Recipient | None:
        """The telegram recipient for a chat id, preferring one that may act."""
        chats = [r for r in self.recipients if r.channel == "telegram" and r.target == chat_id]
        return next((r for r in chats if r.can_act), chats[0] if chats else None)


def routing_from_settings(settings: Settings, section: dict[str, Any] | None) -> AlertRouting:
    """The policy's `alerts:` section (if any) plus the zero-config channels of the environment.

    SIAGA_WEBHOOK_URL (with SIAGA_WEBHOOK_SECRET) adds a webhook for every level and stakeholder;
    SIAGA_TELEGRAM_BOT_TOKEN with SIAGA_TELEGRAM_CHAT_ID adds one chat for everything, whose
    members may acknowledge and resolve; SIAGA_SLACK_WEBHOOK_URL adds one Slack hook for everything.
    One the policy already lists is not added twice.
    """
    routing = AlertRouting.model_validate(section or {})
    extra: list[Recipient] = []
    everything: dict[str, Any] = {"levels": list(LEVELS), "stakeholders": list(STAKEHOLDERS)}
    if settings.webhook_url and not _listed(routing, "webhook", settings.webhook_url):
        extra.append(
            Recipient(
                name=ENV_WEBHOOK,
                channel="webhook",
                target=settings.webhook_url,
                secret=settings.webhook_secret,
                **everything,
            )
        )
    if (
        settings.telegram_bot_token
        and settings.telegram_chat_id
        and not _listed(routing, "telegram", settings.telegram_chat_id)
    ):
        extra.append(
            Recipient(
                name=ENV_TELEGRAM, channel="telegram", target=settings.telegram_chat_id, can_act=True, **everything
            )
        )
    if settings.slack_webhook_url and not _listed(routing, "slack", settings.slack_webhook_url):
        extra.append(Recipient(name=ENV_SLACK, channel="slack", target=settings.slack_webhook_url, **everything))
    if not extra:
        return routing
    return routing.model_copy(update={"recipients": [*routing.recipients, *extra]})


def _listed(routing: AlertRouting, channel: str, target: str) -> bool:
    return any(r.channel == channel and r.target == target for r in routing.recipients)


def select(routing: AlertRouting, intent: AlertIntent) -> list[Recipient]:
    """The recipients of one alert intent, in the order the routing lists them."""
    severity = intent.incident.severity
    kecamatan = intent.incident.kecamatan.casefold()
    out = []
    for r in routing.recipients:
        wanted = (
            intent.level in r.levels if intent.audience is Audience.POLICE else intent.stakeholder in r.stakeholders
        )
        if not wanted or SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index(r.min_severity):
            continue
        if r.kecamatan and kecamatan not in {k.casefold() for k in r.kecamatan}:
            continue
        out.append(r)
    return out
