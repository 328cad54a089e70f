"""Fixtures for integration tests: services running in this process on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.db import psycopg_dsn
from services.common.server import ServiceRunner
from services.ledger.main import build
from tests.conftest import migrated_database, service_channel, settings_with


class LedgerUnderTest:
    def __init__(self, runner: ServiceRunner, port: int, url: str) -> None:
        self.runner = runner
        self.port = port
        self.url = url
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.service_channel = service_channel(f"127.0.0.1:{port}")
        self.internal = ledger_service_pb2_grpc.LedgerInternalServiceStub(self.service_channel)
        self.public = ledger_service_pb2_grpc.LedgerServiceStub(self.channel)

    def sql(self, statement: str, *params: Any) -> list[Any]:
        with psycopg.connect(psycopg_dsn(self.url), autocommit=True) as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    async def balance(self, account_id: str) -> ledger_pb2.Balance:
        response = await self.internal.BatchGetBalances(
            ledger_service_pb2.BatchGetBalancesRequest(account_ids=[account_id])
        )
        return response.balances[0]


@pytest_asyncio.fixture(scope="module")
async def ledger(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LedgerUnderTest]:
    url = migrated_database(postgres_port, "ledger")
    settings = settings_with(postgres_port, mongodb_port, tmp_path_factory.mktemp("ledger"), ledger_database_url=url)
    runner = ServiceRunner(build, settings, port=0)
    port = await runner.start()
    under_test = LedgerUnderTest(runner, port, url)
    yield under_test
    await under_test.channel.close()
    await under_test.service_channel.close()
    await runner.stop()
