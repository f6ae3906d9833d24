"""All configuration, from `SIAGA_*` environment variables (documented in docs/configuration.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One place for every setting. Unset values give the embedded one-machine defaults."""

    model_config = SettingsConfigDict(env_prefix="SIAGA_", env_file=None, extra="ignore")

    # -- bus
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers (host:port,...). Unset: the in-process bus."
    )
    kafka_port: int = Field(default=9092, description="Port of the local broker started by infra/kafka/broker.sh.")
    kafka_publish_timeout_s: float = Field(
        default=5.0, description="How long a publish may wait for the broker's ack before ingest answers 503."
    )
    kafka_client_id: str = Field(default="siaga", description="Client id the services show the broker.")
    kafka_replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic the services create (3 on a three-broker cluster; the brokers' "
        "min.insync.replicas says how many must have a message before it is acked).",
    )
    topic_prefix: str = Field(
        default="", description="Prefix of every topic and consumer group: several deployments on one broker."
    )
    field_events_partitions: int = Field(default=12, description="Partitions of siaga.field-events.")
    updates_partitions: int = Field(default=6, description="Partitions of siaga.incident-updates.")
    alerts_partitions: int = Field(default=6, description="Partitions of siaga.alerts.")

    # -- storage
    database_url: str = Field(
        default="sqlite:///siaga.db",
        description="SQLAlchemy URL. Unset: a SQLite file siaga.db in the working directory.",
    )

    # -- security
    admin_token: str | None = Field(
        default=None, description="The first admin token (compared in constant time, never stored or logged)."
    )

    # -- ingest
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest request body ingest reads (413 above).")
    max_batch: int = Field(default=500, description="Most events in one batch (413 above).")
    device_rate_per_s: float = Field(default=10.0, description="Sustained events a second per device.")
    device_burst: int = Field(default=100, description="Burst of events a device may send at once.")
    future_skew_s: int = Field(default=600, description="How far ahead of the server clock occurred_at may be.")
    max_age_s: int = Field(default=48 * 3600, description="How old occurred_at may be.")
    seen_prune_interval_s: float = Field(
        default=600.0,
        description="How often ingest deletes seen event ids too old to matter (received more than max_age_s "
        "+ future_skew_s ago: a retry of such an event is refused as too old).",
    )

    malloc_arena_max: int = Field(
        default=0,
        ge=0,
        description="How many malloc arenas glibc may make for the process's threads (mallopt M_ARENA_MAX; 0: "
        "glibc's default of eight a core). Each thread that allocates may get an arena of its own. A cap of 2 "
        "made no difference in the soak (docs/reliability.md), so it is off by default.",
    )
    malloc_trim_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="How often a service gives freed heap pages back to the system (glibc's malloc_trim; "
        "0: never). Without it the RSS of a long-running dispatch creeps (docs/reliability.md).",
    )

    # -- dispatch
    policy_file: Path | None = Field(
        default=None, description="Escalation policy YAML. Unset: the packaged default policy."
    )
    tick_interval_s: float = Field(default=1.0, description="How often dispatch checks deadlines.")
    command_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long an operator action waits for the partition owner to apply it (then 503).",
    )
    dispatch_batch: int = Field(
        default=4000,
        ge=1,
        le=50_000,
        description="Most field events and commands dispatch applies in one transaction. A backlog drains "
        "faster in big batches (each changed TPS is written once a batch); a caught-up consumer gets small ones.",
    )
    notifier_in_dispatch: bool = Field(default=True, description="Run the alert notifier inside the dispatch process.")
    public_url: str = Field(
        default="http://localhost:8000", description="Where the dashboard is reached; used in alert links."
    )
    language: str = Field(default="id", description="Alert and page language: id (Indonesian) or en.")
    default_kabupaten: str = Field(
        default="Kabupaten Serang",
        max_length=100,
        description="The kabupaten/kota of imported TPS whose row has no kabupaten column (SPEC section 10).",
    )
    default_provinsi: str = Field(
        default="Banten", max_length=100, description="The provinsi of imported TPS whose row has no provinsi column."
    )

    # -- alerts (zero-config channels; richer routing lives in the policy file)
    webhook_url: str | None = Field(default=None, description="Zero-config: send every alert to this generic webhook.")
    webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key of X-Siaga-Signature.")
    telegram_bot_token: str | None = Field(default=None, description="Zero-config Telegram: the bot's token.")
    telegram_chat_id: str | None = Field(default=None, description="Zero-config Telegram: the chat told of everything.")
    telegram_api_base: str = Field(default="https://api.telegram.org", description="Telegram Bot API base URL.")
    telegram_webhook_secret: str | None = Field(
        default=None, description="Secret Telegram sends with button callbacks (X-Telegram-Bot-Api-Secret-Token)."
    )
    whatsapp_api_base: str = Field(default="https://graph.facebook.com/v21.0", description="WhatsApp Cloud API base.")
    whatsapp_token: str | None = Field(default=None, description="WhatsApp Cloud API access token.")
    whatsapp_phone_number_id: str | None = Field(default=None, description="WhatsApp sender phone number id.")
    whatsapp_app_secret: str | None = Field(
        default=None,
        description="WhatsApp intake: the Meta app secret that signs the webhook (X-Hub-Signature-256). Unset: "
        "POST /v1/gateway/whatsapp is refused (403).",
    )
    whatsapp_verify_token: str | None = Field(
        default=None, description="WhatsApp intake: the verify token of the webhook's subscription handshake."
    )
    slack_webhook_url: str | None = Field(default=None, description="Zero-config Slack incoming webhook.")
    sms_api_base: str | None = Field(
        default=None, description="HTTP SMS gateway: alerts to `sms` recipients are POSTed to {base}/messages."
    )
    sms_api_token: str | None = Field(default=None, description="Bearer token of the HTTP SMS gateway.")

    # -- dashboard
    dispatch_url: str = Field(
        default="", description="Base URL of dispatch's operator API as the browser reaches it ('' = same origin)."
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the API from a browser (the dashboard's, "
        "when it is served from another origin than dispatch).",
    )
    ws_replay_buffer: int = Field(default=20000, description="Deltas each dashboard keeps for resume.")
    ws_client_queue: int = Field(default=2000, description="Deltas queued per client before it gets a snapshot.")
    ws_detail_max_tps: int = Field(
        default=50000,
        ge=0,
        description="Above this many TPS the page opens on the regional summary, not on every TPS.",
    )
    ws_view_idle_s: float = Field(
        default=600.0,
        gt=0,
        description="A scoped or drill-down view nobody has read for this long is dropped (rebuilt on demand).",
    )

    # -- logging
    log_format: str = Field(default="text", description="text or json (one JSON object a line).")
    access_log: bool = Field(default=True, description="Log every HTTP request (tokens redacted).")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
