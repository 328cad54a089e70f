import os

import pytest

from services.common.config import REQUIRED_IN_PRODUCTION, ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("GOFUND_", "PAYSTACK_")):
            monkeypatch.delenv(name)


def production_environment() -> dict[str, str]:
    return {
        "GOFUND_ENV": "production",
        "GOFUND_IDENTITY_TARGET": "identity:50051",
        "GOFUND_GOALS_TARGET": "goals:50052",
        "GOFUND_LEDGER_TARGET": "ledger:50053",
        "GOFUND_PAYMENTS_TARGET": "payments:50054",
        "GOFUND_IDENTITY_DATABASE_URL": "postgresql+psycopg://gofund:pw@db/identity",
        "GOFUND_GOALS_DATABASE_URL": "postgresql+psycopg://gofund:pw@db/goals",
        "GOFUND_LEDGER_DATABASE_URL": "postgresql+psycopg://gofund:pw@db/ledger",
        "GOFUND_MONGODB_URI": "mongodb://mongo:27017/?replicaSet=rs0",
        "GOFUND_SERVICE_TOKEN": "s3cret-service-token",
        "GOFUND_IDENTITY_SECRET": "s3cret-identity-key",
        "PAYSTACK_BASE_URL": "https://paystack.example",
        "PAYSTACK_SECRET_KEY": "sk_live_x",
        "GOFUND_SMTP_HOST": "smtp",
    }


def test_development_defaults_point_at_the_embedded_servers() -> None:
    settings = load_settings()
    assert settings.database_url("ledger") == "postgresql+psycopg://postgres@127.0.0.1:54329/ledger"
    assert settings.target("goals") == "127.0.0.1:50052"
    assert settings.mongodb_url == "mongodb://127.0.0.1:27019/?directConnection=true"
    assert settings.paystack_url == "http://127.0.0.1:8090"
    assert settings.paystack_webhook_url == "http://127.0.0.1:8080/v1/webhooks/paystack"


def test_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOFUND_LEDGER_PORT", "6000")
    monkeypatch.setenv("GOFUND_POSTGRES_PORT", "6001")
    settings = load_settings()
    assert settings.target("ledger") == "127.0.0.1:6000"
    assert settings.database_url("goals").endswith("127.0.0.1:6001/goals")


def test_production_names_every_missing_variable_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOFUND_ENV", "production")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    for field in REQUIRED_IN_PRODUCTION:
        assert str(Settings.model_fields[field].validation_alias) in message
    assert "\n" not in message


def test_production_with_everything_set_uses_exactly_what_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in production_environment().items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database_url("ledger") == "postgresql+psycopg://gofund:pw@db/ledger"
    assert settings.target("payments") == "payments:50054"
    assert settings.paystack_url == "https://paystack.example"


def test_production_missing_one_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in production_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PAYSTACK_SECRET_KEY")
    with pytest.raises(ConfigError, match="PAYSTACK_SECRET_KEY"):
        load_settings()


def test_a_malformed_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOFUND_LEDGER_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="GOFUND_LEDGER_PORT"):
        load_settings()


def test_production_treats_an_empty_variable_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in production_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GOFUND_LEDGER_DATABASE_URL", "")  # what compose's ${VAR} gives for an unset VAR
    with pytest.raises(ConfigError, match="GOFUND_LEDGER_DATABASE_URL"):
        load_settings()
