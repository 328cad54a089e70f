"""Wiring of the identity service: resources are opened here, never at import."""

from contextlib import AsyncExitStack

from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

from services.common.config import Settings
from services.common.db import Database
from services.common.server import Service, run
from services.identity.servicer import ERRORS, IdentityInternalServicer, IdentityServicer


async def build(settings: Settings, stack: AsyncExitStack) -> Service:
    database = Database("identity", settings.database_url("identity"))
    stack.push_async_callback(database.dispose)
    await database.check_ready()
    services = identity_service_pb2.DESCRIPTOR.services_by_name
    return Service(
        name="identity",
        errors=ERRORS,
        servicers=[
            (identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, IdentityServicer()),
            (
                identity_service_pb2_grpc.add_IdentityInternalServiceServicer_to_server,
                IdentityInternalServicer(),
            ),
        ],
        descriptors=[services["IdentityService"], services["IdentityInternalService"]],
    )


def main() -> None:
    run("identity", build)
