"""Settings, read once at the edge into one frozen object that is passed down.

Every field is settable as an environment variable with the ``BELLHOOK_`` prefix
(``BELLHOOK_DATABASE_URL``, ``BELLHOOK_PORT`` …) and most as CLI flags of
``bellhook serve``. Nothing here runs at import time: call ``Settings()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BELLHOOK_", frozen=True, extra="ignore")

    database_url: str = Field(
        default="sqlite:///./bellhook.db",
        description="sqlite:///path/to.db or postgresql://user@host:5432/db",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    dev_mode: bool = Field(
        default=False,
        description="allow http:// and loopback/private targets (never in production)",
    )
    allowed_networks: str = Field(
        default="", description="comma-separated CIDRs of private networks webhooks may target"
    )
    # PostgreSQL connections, per process (docs/deployment.md: sizing). SQLite ignores them.
    db_pool_size: int = Field(
        default=5, ge=1, le=1000, description="connections each process keeps open"
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=1000, description="further connections a process opens under load"
    )
    db_pool_timeout: float = Field(
        default=10.0, gt=0, description="seconds a request waits for a free connection"
    )
    db_connect_timeout: float = Field(
        default=5.0, gt=0, description="seconds to open a connection before giving up"
    )
    db_statement_timeout: float = Field(
        default=30.0,
        ge=0,
        description="seconds any one statement may run before PostgreSQL cancels it; 0: none",
    )
    listen_database_url: str | None = Field(
        default=None,
        description="a direct PostgreSQL URL for the wake-up listener, when the database "
        "URL goes through a transaction-pooling PgBouncer; unset: the database URL",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Observability (docs/operations.md)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`worker` and `consume` serve /metrics, /healthz and /readyz on this "
        "port (on BELLHOOK_HOST); unset: not served. `serve` has them on its own port",
    )
    metrics_refresh: float = Field(
        default=5.0,
        ge=0,
        description="seconds a scrape reuses the database's gauges (backlog, webhooks) for",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="when set, /metrics requires `Authorization: Bearer <token>`"
    )
    log_format: Literal["console", "json"] = "console"

    # Delivery
    worker: bool = Field(default=True, description="run the dispatcher inside `serve`")
    worker_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="delivery processes of `bellhook worker`; the concurrency limits are "
        "split between them",
    )
    delivery_timeout: float = Field(default=15.0, gt=0, le=300)
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    max_concurrency: int = Field(default=512, ge=1)
    per_webhook_concurrency: int = Field(default=16, ge=1)
    claim_batch: int = Field(default=256, ge=1)
    poll_interval: float = Field(default=0.5, gt=0, description="idle poll of the queue (s)")
    shutdown_grace: float = Field(default=10.0, ge=0)
    auto_disable_after: float = Field(
        default=5 * 24 * 3600.0, gt=0, description="seconds of only failures before disabling"
    )
    retention_days: float = Field(default=30.0, gt=0)

    # Limits
    max_webhooks_per_owner: int = Field(default=100, ge=1)
    rate_limit: int = Field(
        default=600, ge=0, description="API calls a minute per non-admin key (per process); 0: off"
    )
    admin_rate_limit: int | None = Field(
        default=None, ge=1, description="API calls a minute per admin key; unset: not limited"
    )

    # Secrets at rest
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated: the first encrypts webhook secrets, "
        "all decrypt (key rotation); unset: secrets are stored as they are",
    )

    # Kafka ingestion (bellhook[kafka]; docs/kafka.md). Off while no servers are set.
    kafka_bootstrap_servers: str = Field(
        default="", description="host:port,... of the Kafka cluster; empty: no consumer"
    )
    kafka_group: str = Field(default="bellhook", min_length=1, max_length=255)
    kafka_topics: str = Field(
        default="bellamy.events", min_length=1, description="comma-separated topics to consume"
    )
    kafka_dlq_topic: str | None = Field(
        default=None, description="also produce refused messages to this topic"
    )
    kafka_max_backlog: int = Field(
        default=1_000_000,
        ge=1,
        description="pending deliveries past which consumption pauses until they drain",
    )
    kafka_batch_size: int = Field(default=1000, ge=1, le=10_000)
    kafka_security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = "plaintext"
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_options: str = Field(
        default="",
        description="further client properties, comma-separated name=value "
        "(e.g. session.timeout.ms=10000)",
    )

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                value = tuple(float(p) for p in parts)
            except ValueError as exc:
                raise ValueError(
                    "BELLHOOK_RETRY_SCHEDULE must be comma-separated seconds, e.g. 5,300,1800"
                ) from exc
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(step < 0 for step in value):
            raise ValueError("retry delays must not be negative")
        return value

    def sqlite_path(self) -> Path | None:
        """The file of an SQLite URL, None for other databases."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            return Path(self.database_url[len(prefix) :].split("?", 1)[0])
        return None
