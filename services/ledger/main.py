"""Wiring of the ledger service: resources are opened here, never at import."""

from contextlib import AsyncExitStack

from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc

from services.common.config import Settings
from services.common.db import Database
from services.common.server import Service, run
from services.ledger.servicer import ERRORS, LedgerInternalServicer, LedgerServicer


async def build(settings: Settings, stack: AsyncExitStack) -> Service:
    database = Database("ledger", settings.database_url("ledger"))
    stack.push_async_callback(database.dispose)
    await database.check_ready()
    services = ledger_service_pb2.DESCRIPTOR.services_by_name
    return Service(
        name="ledger",
        errors=ERRORS,
        servicers=[
            (ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server, LedgerServicer()),
            (ledger_service_pb2_grpc.add_LedgerInternalServiceServicer_to_server, LedgerInternalServicer()),
        ],
        descriptors=[services["LedgerService"], services["LedgerInternalService"]],
    )


def main() -> None:
    run("ledger", build)
