"""Registers the fixtures of tests/integration/fixtures for every integration test."""

from tests.integration.fixtures.goals import paying_platform, platform
from tests.integration.fixtures.identity import identity
from tests.integration.fixtures.ledger import ledger

__all__ = ["identity", "ledger", "paying_platform", "platform"]
