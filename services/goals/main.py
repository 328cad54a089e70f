"""Wiring of the goals service: resources are opened here, never at import."""

from contextlib import AsyncExitStack

from gofund.goals.v1 import goals_service_pb2, goals_service_pb2_grpc

from services.common.auth import AuthPolicy, RemoteAuthenticator
from services.common.clients import open_channels
from services.common.config import Settings
from services.common.db import Database
from services.common.server import Service, run
from services.goals.servicer import ERRORS, GoalsInternalServicer, GoalsServicer

# Methods a caller may use without logging in.
ANONYMOUS = [
    "GoalsService/GetGoal",
    "GoalsService/ListGoals",
    "GoalsService/WatchGoal",
    "GoalsService/ListProofs",
    "GoalsService/GetProof",
]


async def build(settings: Settings, stack: AsyncExitStack) -> Service:
    database = Database("goals", settings.database_url("goals"))
    stack.push_async_callback(database.dispose)
    await database.check_ready()
    services = goals_service_pb2.DESCRIPTOR.services_by_name
    descriptors = [services["GoalsService"], services["GoalsInternalService"]]
    channels = open_channels(settings, stack)
    return Service(
        name="goals",
        errors=ERRORS,
        servicers=[
            (goals_service_pb2_grpc.add_GoalsServiceServicer_to_server, GoalsServicer()),
            (goals_service_pb2_grpc.add_GoalsInternalServiceServicer_to_server, GoalsInternalServicer()),
        ],
        descriptors=descriptors,
        auth=AuthPolicy.of(descriptors, ANONYMOUS),
        authenticator=RemoteAuthenticator(channels, settings.target("identity")),
    )


def main() -> None:
    run("goals", build)
