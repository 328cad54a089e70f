"""Wiring of the ledger service: resources are opened here, never at import."""

from contextlib import AsyncExitStack

from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc

from services.common.auth import AuthPolicy, RemoteAuthenticator
from services.common.clients import open_channels
from services.common.config import Settings
from services.common.db import Database
from services.common.metrics import PostingBatches
from services.common.server import Service, run
from services.ledger.servicer import ERRORS, LedgerInternalServicer, LedgerServicer
from services.ledger.streams import Broadcaster
from services.ledger.use_cases import Ledger


async def build(settings: Settings, stack: AsyncExitStack) -> Service:
    # Posting holds a few row locks per transaction; the pool bounds how many
    # postings run at once (the rest queue in the pool, not in PostgreSQL).
    database = Database("ledger", settings.database_url("ledger"), pool_size=20)
    stack.push_async_callback(database.dispose)
    await database.check_ready()
    channels = open_channels(settings, stack)
    # Caches Authenticate answers; identity's revocation stream (followed in
    # the background) evicts them the moment a session or role is revoked.
    authenticator = RemoteAuthenticator(
        channels, settings.target("identity"), cache_ttl_s=settings.auth_cache_ms / 1000
    )
    broadcaster = Broadcaster(
        database,
        min_interval_s=1 / settings.stream_max_updates_per_s,
        heartbeat_s=settings.stream_heartbeat_ms / 1000,
    )
    batches = PostingBatches()
    ledger = Ledger(database, broadcaster, on_batch=batches.observe)
    services = ledger_service_pb2.DESCRIPTOR.services_by_name
    descriptors = [services["LedgerService"], services["LedgerInternalService"]]
    return Service(
        name="ledger",
        errors=ERRORS,
        servicers=[
            (
                ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server,
                LedgerServicer(ledger),
            ),
            (
                ledger_service_pb2_grpc.add_LedgerInternalServiceServicer_to_server,
                LedgerInternalServicer(ledger),
            ),
        ],
        descriptors=descriptors,
        # Every public read is open: visibility (GOAL public, USER to its user,
        # platform accounts with ledger:read_any) is decided per account.
        auth=AuthPolicy.of(descriptors, [f"LedgerService/{m.name}" for m in services["LedgerService"].methods]),
        authenticator=authenticator,
        background=[broadcaster.run, authenticator.follow_revocations],
        collectors=batches.collectors,
    )


def main() -> None:
    run("ledger", build)
