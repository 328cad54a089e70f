"""The whole stack, started once for the e2e tests (as `gofund up` runs it), on free ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.stack.stack import Stack, free_port_environment

BIN = Path(sys.executable).parent


def stack_environment(data_dir: Path) -> dict[str, str]:
    """Free ports for every server, a private data directory, and the suite's settings."""
    overrides = free_port_environment(data_dir)
    # Enough for the suite's logins and registrations; the rate-limit test drains the rest.
    overrides["GOFUND_AUTH_RATE_PER_MINUTE"] = "40"
    # The suite registers every user from 127.0.0.1; failed logins per address
    # stay as in production (test_identity_limits floods from addresses of its own).
    overrides["GOFUND_REGISTRATIONS_PER_CLIENT"] = "1000000"
    overrides["GOFUND_CODE_REQUESTS_PER_CLIENT"] = "1000000"
    # Paystack's webhook retries and settlements, compressed for tests.
    overrides["GOFUND_PAYSTACK_SIM_RETRY_BASE_MS"] = "200"
    overrides["GOFUND_PAYSTACK_SIM_SETTLE_MS"] = "0"
    overrides["GOFUND_WEBHOOK_RETRY_BASE_MS"] = "100"
    # Quiet streams beat every 2 s, so the edge's heartbeat framing is seen in a test
    # (and every stream reader in the suite has to skip heartbeats, as clients must).
    overrides["GOFUND_STREAM_HEARTBEAT_MS"] = "2000"
    return overrides


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack. Once every test on it has run, reconciliation across goals,
    payments, the ledger and Paystack must be clean: whatever the tests did, not a
    kobo was lost or counted twice (a failure here is an error at teardown)."""
    from tests.e2e.money import reconciled_clean

    platform = Stack(stack_environment(tmp_path_factory.mktemp("stack")), durable=False)
    platform.start()
    try:
        yield platform
        reconciled_clean(platform)
    finally:
        platform.stop()


def edge(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.settings.envoy_port}"
