"""Fixtures shared by every test layer.

One real PostgreSQL and one real Mongo-wire server are started per test session
(the same embedded servers `gofund up` runs), on free loopback ports, in a
temporary directory, and stopped at the end. Tests get their own databases with
unique names so they never collide.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from services.common.config import Settings
from services.common.db import ensure_database, upgrade
from services.common.headers import SERVICE_CREDENTIAL_HEADER
from services.payments.store import PaymentsStore, ensure_indexes
from services.stack import embedded


@pytest.fixture(scope="session")
def postgres_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("postgres")
    port = embedded.free_port()
    server = embedded.postgres(root / "data", port, root / "postgres.log", durable=False)
    server.start()
    yield port
    server.stop()


@pytest.fixture(scope="session")
def mongodb_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("mongodb")
    port = embedded.free_port()
    server = embedded.mongo_wire(root / "data", port, root / "mongodb.log")
    server.start()
    previous = sys.unraisablehook
    sys.unraisablehook = _ignoring_pymongo_monitor_leaks(port, previous)
    yield port
    sys.unraisablehook = previous
    server.stop()


def _ignoring_pymongo_monitor_leaks(
    port: int, report: Callable[[sys.UnraisableHookArgs], object]
) -> Callable[[sys.UnraisableHookArgs], object]:
    """pytest's unraisable hook, minus one known pymongo leak.

    pymongo's async server monitor (4.20) is cancelled by `AsyncMongoClient.close()`
    while it may be opening its connection; the half-made socket to the server is
    then closed only by the garbage collector, which warns `unclosed <socket ...>`
    in whichever test happens to be running (CI saw it once in
    test_services_start). Only a socket whose peer is this session's Mongo-wire
    server is stepped over; every other unraisable still fails its test.
    """
    peer = f"raddr=('127.0.0.1', {port})>"

    def hook(unraisable: sys.UnraisableHookArgs) -> object:
        leak = unraisable.exc_value
        if (
            isinstance(leak, ResourceWarning)
            and str(leak).startswith("unclosed <socket.socket")
            and str(leak).endswith(peer)
        ):
            return None
        return report(unraisable)

    return hook


@pytest_asyncio.fixture
async def payments_store(mongodb_port: int) -> AsyncIterator[PaymentsStore]:
    """Payments' repository over a database of its own on the Mongo-wire server, with its indexes."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{mongodb_port}/?directConnection=true", tz_aware=True
    )
    database = client[unique_name("payments")]
    await ensure_indexes(database)
    yield PaymentsStore(database)
    await client.drop_database(database.name)
    await client.close()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def migrated_database(postgres_port: int, service: str) -> str:
    """A fresh database named after the service, migrated to head; returns its URL."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres_port}/{unique_name(service)}"
    ensure_database(url)
    upgrade(service, url)
    return url


PER_CLIENT_LIMITS_OFF = {
    "registrations_per_client": 1_000_000,
    "login_failures_per_client": 1_000_000,
    "code_requests_per_client": 1_000_000,
}


def settings_with(postgres_port: int, mongodb_port: int, data_dir: Path, **overrides: object) -> Settings:
    """Settings pointing at the session's embedded servers; services bind port 0 in tests."""
    values: dict[str, object] = {
        "postgres_port": postgres_port,
        "mongodb_port": mongodb_port,
        "mongodb_database": unique_name("payments"),
        "data_dir": data_dir,
        "shutdown_grace_ms": 1000,
        # Every test client is 127.0.0.1: per-address limits would make the
        # suite's own registrations and logins trip them. Per-account limits
        # stay as in production (each test uses accounts of its own).
        **PER_CLIENT_LIMITS_OFF,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# The credential the services under test expect (the development default).
SERVICE_TOKEN: str = Settings.model_fields["service_token"].default
CREDENTIAL = ((SERVICE_CREDENTIAL_HEADER, SERVICE_TOKEN),)


def _with_credential(details: Any, aio: bool) -> Any:
    metadata = [*(details.metadata or ()), *CREDENTIAL]
    if aio:
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
    return details._replace(metadata=metadata)


# grpc.aio files each interceptor under one kind only, hence two classes.
class _AioUnaryCredential(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_credential(details, aio=True), request)


class _AioStreamCredential(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_credential(details, aio=True), request)


class _SyncCredential(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_credential(details, aio=False), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_credential(details, aio=False), request)


def service_channel(target: str) -> grpc.aio.Channel:
    """An async channel that calls as a GoFund service would (with the service credential)."""
    return grpc.aio.insecure_channel(target, interceptors=[_AioUnaryCredential(), _AioStreamCredential()])


def sync_service_channel(target: str) -> grpc.Channel:
    return grpc.intercept_channel(grpc.insecure_channel(target), _SyncCredential())
