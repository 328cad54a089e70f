"""The one settings object: read once from the environment at start-up.

Every external address and secret comes from a `GOFUND_*` or `PAYSTACK_*`
variable. In development each has an embedded default (the servers `gofund up`
starts on this machine). With `GOFUND_ENV=production` nothing falls back: every
address and secret in `REQUIRED_IN_PRODUCTION` must be set, and a missing one
stops the process with one message naming all of them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

POSTGRES_DATABASES = ("identity", "goals", "ledger")
# Vite's dev server and its `preview` of a build: where the web app runs in development.
WEB_DEV_SERVER_PORTS = (5173, 4173)


def development_web_origins(envoy_port: int) -> tuple[str, ...]:
    """The web app's dev servers and the edge itself (which serves the built app), by
    both names a browser may use for this machine."""
    ports = (*WEB_DEV_SERVER_PORTS, envoy_port)
    return tuple(f"http://{host}:{port}" for port in ports for host in ("localhost", "127.0.0.1"))


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ConfigError(Exception):
    """The environment does not describe a runnable service; the message says why."""


def _env(name: str, **kwargs: Any) -> Any:
    """A field read from the environment variable `name`."""
    return Field(validation_alias=name, **kwargs)


class Settings(BaseSettings):
    # An empty variable counts as unset (docker-compose's `${VAR}` yields "" for
    # a missing VAR): production then refuses it instead of using a default.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    env: Environment = _env("GOFUND_ENV", default=Environment.DEVELOPMENT)
    data_dir: Path = _env("GOFUND_DATA_DIR", default=Path(".gofund"))
    log_level: str = _env("GOFUND_LOG_LEVEL", default="INFO")
    # Address the gRPC servers bind to; loopback unless a deployment says otherwise.
    bind_host: str = _env("GOFUND_BIND_HOST", default="127.0.0.1")

    identity_port: int = _env("GOFUND_IDENTITY_PORT", default=50051)
    goals_port: int = _env("GOFUND_GOALS_PORT", default=50052)
    ledger_port: int = _env("GOFUND_LEDGER_PORT", default=50053)
    payments_port: int = _env("GOFUND_PAYMENTS_PORT", default=50054)
    # Where a service serves Prometheus metrics (GET /metrics). 0: a service
    # process (`gofund serve`) takes its gRPC port + 1000 (identity 51051 ...
    # payments 51054), a service started inside the tests any free port. Set it
    # only where one service runs per address (a container).
    metrics_port: int = _env("GOFUND_METRICS_PORT", default=0, ge=0, le=65535)
    # Where the other services reach each service ("host:port"); derived from
    # the ports on loopback in development.
    identity_target: str = _env("GOFUND_IDENTITY_TARGET", default="")
    goals_target: str = _env("GOFUND_GOALS_TARGET", default="")
    ledger_target: str = _env("GOFUND_LEDGER_TARGET", default="")
    payments_target: str = _env("GOFUND_PAYMENTS_TARGET", default="")

    # Embedded servers (development only).
    postgres_port: int = _env("GOFUND_POSTGRES_PORT", default=54329)
    mongodb_port: int = _env("GOFUND_MONGODB_PORT", default=27019)
    envoy_port: int = _env("GOFUND_ENVOY_PORT", default=8080)
    envoy_admin_port: int = _env("GOFUND_ENVOY_ADMIN_PORT", default=9901)
    paystack_simulator_port: int = _env("GOFUND_PAYSTACK_SIM_PORT", default=8090)
    smtp_port: int = _env("GOFUND_SMTP_PORT", default=1025)
    # Login and registration requests per minute that Envoy lets through.
    auth_rate_per_minute: int = _env("GOFUND_AUTH_RATE_PER_MINUTE", default=60, gt=0)
    # Paystack webhook deliveries per minute that Envoy lets through (Paystack retries a 429).
    webhook_rate_per_minute: int = _env("GOFUND_WEBHOOK_RATE_PER_MINUTE", default=1200, gt=0)
    # The deadline of every unary route at the edge; the service sees it as grpc-timeout.
    edge_timeout_ms: int = _env("GOFUND_EDGE_TIMEOUT_MS", default=15_000, gt=0, le=99_999_999)
    # The origins CORS lets call the API from a browser, comma-separated. Unset:
    # the web app's dev server (Vite's `dev` and `preview`) and the edge itself,
    # on localhost and 127.0.0.1 (see `cors_origins`).
    web_origins: str = _env("GOFUND_WEB_ORIGINS", default="")

    identity_database_url: str = _env("GOFUND_IDENTITY_DATABASE_URL", default="")
    goals_database_url: str = _env("GOFUND_GOALS_DATABASE_URL", default="")
    ledger_database_url: str = _env("GOFUND_LEDGER_DATABASE_URL", default="")
    mongodb_uri: str = _env("GOFUND_MONGODB_URI", default="")
    mongodb_database: str = _env("GOFUND_MONGODB_DATABASE", default="payments")

    # Shared secret other services present on internal services.
    service_token: str = _env("GOFUND_SERVICE_TOKEN", default="dev-service-token-not-for-production")
    paystack_base_url: str = _env("PAYSTACK_BASE_URL", default="")
    paystack_secret_key: str = _env("PAYSTACK_SECRET_KEY", default="sk_test_gofund_dev")
    webhook_url: str = _env("GOFUND_WEBHOOK_URL", default="")
    smtp_host: str = _env("GOFUND_SMTP_HOST", default="127.0.0.1")

    # How long a resolved session token is trusted without asking identity again
    # (so how long a revoked token can live on): at most 5 s.
    auth_cache_ms: int = _env("GOFUND_AUTH_CACHE_MS", default=5000, ge=0, le=5000)
    # Key for hashing verification codes (HMAC-SHA256), so a leaked table does not reveal codes.
    identity_secret: str = _env("GOFUND_IDENTITY_SECRET", default="dev-identity-secret-not-for-production")
    session_ttl_hours: int = _env("GOFUND_SESSION_TTL_HOURS", default=24 * 30, gt=0)
    # Identity's abuse limits, counted in its database so every replica shares
    # them (windows: 15 minutes for logins, an hour for the rest). Failed logins
    # per client address (the one Envoy saw) and per account; registrations per
    # client address; verification codes sent per account and channel and per
    # client address; code guesses per account and channel across all its codes.
    login_failures_per_client: int = _env("GOFUND_LOGIN_FAILURES_PER_CLIENT", default=30, gt=0)
    login_failures_per_account: int = _env("GOFUND_LOGIN_FAILURES_PER_ACCOUNT", default=10, gt=0)
    registrations_per_client: int = _env("GOFUND_REGISTRATIONS_PER_CLIENT", default=20, gt=0)
    code_requests_per_account: int = _env("GOFUND_CODE_REQUESTS_PER_ACCOUNT", default=5, gt=0)
    code_requests_per_client: int = _env("GOFUND_CODE_REQUESTS_PER_CLIENT", default=20, gt=0)
    code_guesses_per_account: int = _env("GOFUND_CODE_GUESSES_PER_ACCOUNT", default=10, gt=0)

    # Payments: Paystack calls, and the webhook processor (outbox) retrying a
    # failed event with exponential backoff from `webhook_retry_base_ms` (capped
    # at a minute) until `webhook_max_attempts`, after which it is parked.
    paystack_timeout_ms: int = _env("GOFUND_PAYSTACK_TIMEOUT_MS", default=10_000, gt=0)
    paystack_callback_url: str = _env("GOFUND_PAYSTACK_CALLBACK_URL", default="")
    webhook_max_attempts: int = _env("GOFUND_WEBHOOK_MAX_ATTEMPTS", default=8, gt=0)
    webhook_retry_base_ms: int = _env("GOFUND_WEBHOOK_RETRY_BASE_MS", default=500, gt=0)
    # Events one payments process works on at once (each mostly waits on Paystack and the ledger).
    webhook_workers: int = _env("GOFUND_WEBHOOK_WORKERS", default=4, gt=0, le=64)
    # The janitor: how often each payments process looks for open payments, refunds
    # and payouts nobody settled; when it first checks one (after its creation), and
    # the longest wait between checks of one Paystack has not decided (doubling).
    janitor_interval_ms: int = _env("GOFUND_JANITOR_INTERVAL_MS", default=30_000, gt=0)
    janitor_first_check_ms: int = _env("GOFUND_JANITOR_FIRST_CHECK_MS", default=300_000, ge=0)
    janitor_max_backoff_ms: int = _env("GOFUND_JANITOR_MAX_BACKOFF_MS", default=3_600_000, gt=0)
    # A checkout still unpaid this long after it was created is given up (ABANDONED):
    # the idempotency window, in which a retried contribution finds the same payment.
    abandon_after_ms: int = _env("GOFUND_ABANDON_AFTER_MS", default=86_400_000, gt=0)
    # How often the platform reconciles goals, payments, the ledger and Paystack
    # (one payments replica at a time); drift counts once two runs in a row find it.
    reconcile_interval_ms: int = _env("GOFUND_RECONCILE_INTERVAL_MS", default=300_000, gt=0)
    # Budget goals gives payments for a call that reaches Paystack (checkout, refund,
    # payout); above the Paystack timeout, so payments' own call ends first.
    provider_call_timeout_ms: int = _env("GOFUND_PROVIDER_CALL_TIMEOUT_MS", default=12_000, gt=0)

    # Goals: the platform fee and the vote rules, in basis points (1/100 of a
    # percent) of the goal's raised amount, and how often the scheduler looks
    # for goals past their deadline and proofs past their voting window.
    platform_fee_bps: int = _env("GOFUND_PLATFORM_FEE_BPS", default=500, ge=0, le=10_000)
    voting_window_hours: float = _env("GOFUND_VOTING_WINDOW_HOURS", default=24 * 7, gt=0)
    approval_threshold_bps: int = _env("GOFUND_APPROVAL_THRESHOLD_BPS", default=5000, ge=0, lt=10_000)
    quorum_bps: int = _env("GOFUND_QUORUM_BPS", default=2000, ge=0, le=10_000)
    scheduler_interval_ms: int = _env("GOFUND_SCHEDULER_INTERVAL_MS", default=1000, gt=0)

    # Paystack simulator (development only): Paystack retries a webhook every
    # 3 minutes 4 times, then hourly; the simulator compresses 3 minutes to
    # `retry_base_ms` (an hour is 20 of them). Refunds and transfers settle on
    # their own after `settle_ms` (0: only through the /_sim settle routes).
    paystack_sim_retry_base_ms: int = _env("GOFUND_PAYSTACK_SIM_RETRY_BASE_MS", default=1000, gt=0)
    paystack_sim_settle_ms: int = _env("GOFUND_PAYSTACK_SIM_SETTLE_MS", default=3000, ge=0)

    # The public streams (WatchGoal, WatchBalance) repeat their latest message,
    # marked as a heartbeat, after this long without one, so proxies and
    # browsers never cut a quiet stream as idle.
    stream_heartbeat_ms: int = _env("GOFUND_STREAM_HEARTBEAT_MS", default=15_000, gt=0)
    # The public streams send a watcher at most this many messages per second:
    # a page needs the latest state, not every one in between, so changes that
    # come faster are coalesced to the newest, and the last always arrives.
    stream_max_updates_per_s: float = _env("GOFUND_STREAM_MAX_UPDATES_PER_S", default=10.0, gt=0)

    # Budget of an outgoing unary call when the incoming call leaves more.
    call_timeout_ms: int = _env("GOFUND_CALL_TIMEOUT_MS", default=5000, gt=0)
    # Kept back from the incoming deadline so our answer still arrives in time.
    deadline_margin_ms: int = _env("GOFUND_DEADLINE_MARGIN_MS", default=20, ge=0)
    # On SIGTERM: NOT_SERVING for this long (so health checks see it), then
    # in-flight calls get `shutdown_grace_ms` to finish.
    shutdown_drain_ms: int = _env("GOFUND_SHUTDOWN_DRAIN_MS", default=0, ge=0)
    shutdown_grace_ms: int = _env("GOFUND_SHUTDOWN_GRACE_MS", default=5000, ge=0)

    @model_validator(mode="after")
    def _budgets_agree(self) -> Self:
        # Payments ends its Paystack call 0.5 s before the deadline it was given
        # (services.payments.leases): with no nearer deadline, goals' budget must
        # leave it the whole Paystack timeout.
        if self.provider_call_timeout_ms < self.paystack_timeout_ms + 1000:
            raise ValueError(
                "GOFUND_PROVIDER_CALL_TIMEOUT_MS must be at least GOFUND_PAYSTACK_TIMEOUT_MS + 1000, "
                "so payments' call to Paystack ends before goals' call to payments"
            )
        return self

    @model_validator(mode="after")
    def _production_sets_everything(self) -> Self:
        if self.env is Environment.PRODUCTION:
            missing = [name for name in REQUIRED_IN_PRODUCTION if name not in self.model_fields_set]
            if missing:
                variables = ", ".join(_variable(name) for name in missing)
                raise ValueError(f"GOFUND_ENV=production requires {variables} to be set")
        return self

    # Embedded defaults, filled in only when the variable is unset.
    def target(self, service: str) -> str:
        explicit: str = getattr(self, f"{service}_target")
        return explicit or f"127.0.0.1:{getattr(self, f'{service}_port')}"

    def database_url(self, service: str) -> str:
        explicit: str = getattr(self, f"{service}_database_url")
        return explicit or f"postgresql+psycopg://postgres@127.0.0.1:{self.postgres_port}/{service}"

    @property
    def mongodb_url(self) -> str:
        return self.mongodb_uri or f"mongodb://127.0.0.1:{self.mongodb_port}/?directConnection=true"

    @property
    def paystack_url(self) -> str:
        return self.paystack_base_url or f"http://127.0.0.1:{self.paystack_simulator_port}"

    @property
    def paystack_webhook_url(self) -> str:
        return self.webhook_url or f"http://127.0.0.1:{self.envoy_port}/v1/webhooks/paystack"

    @property
    def cors_origins(self) -> tuple[str, ...]:
        listed = tuple(origin.strip() for origin in self.web_origins.split(",") if origin.strip())
        return listed or development_web_origins(self.envoy_port)


REQUIRED_IN_PRODUCTION = (
    "identity_target",
    "goals_target",
    "ledger_target",
    "payments_target",
    "identity_database_url",
    "goals_database_url",
    "ledger_database_url",
    "mongodb_uri",
    "service_token",
    "identity_secret",
    "paystack_base_url",
    "paystack_secret_key",
    "smtp_host",
)


def _variable(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return str(alias)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; raise ConfigError with every problem in one message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}" if location else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


class StartupError(Exception):
    """A service cannot start (port in use, store unreachable); the message says which."""
