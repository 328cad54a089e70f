"""Wiring of the goals service: resources are opened here, never at import.

`build` takes the clock every rule reads `now` from (deadlines, voting
windows, saga retries), so tests move time instead of sleeping.
"""

from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from gofund.goals.v1 import goals_service_pb2, goals_service_pb2_grpc

from services.common.auth import AuthPolicy, RemoteAuthenticator
from services.common.clients import open_channels
from services.common.config import Settings
from services.common.db import Database
from services.common.server import Service, run
from services.goals.follower import Follower
from services.goals.funding import balance_stream
from services.goals.lifecycle import Rules
from services.goals.outcomes import outcome_stream
from services.goals.peers import LedgerGateway, PaymentsGateway
from services.goals.sagas import Sagas
from services.goals.scheduler import Scheduler
from services.goals.servicer import ANONYMOUS, ERRORS, GoalsInternalServicer, GoalsServicer
from services.goals.streams import ProgressBroadcaster
from services.goals.use_cases import Goals


def utc_now() -> datetime:
    return datetime.now(UTC)


async def build(settings: Settings, stack: AsyncExitStack, *, clock: Callable[[], datetime] = utc_now) -> Service:
    database = Database("goals", settings.database_url("goals"))
    stack.push_async_callback(database.dispose)
    await database.check_ready()
    channels = open_channels(settings, stack)
    # Caches Authenticate answers; identity's revocation stream (followed in
    # the background) evicts them the moment a session or role is revoked.
    authenticator = RemoteAuthenticator(
        channels, settings.target("identity"), cache_ttl_s=settings.auth_cache_ms / 1000
    )
    ledger = LedgerGateway(channels, settings.target("ledger"))
    payments = PaymentsGateway(
        channels, settings.target("payments"), provider_timeout_s=settings.provider_call_timeout_ms / 1000
    )
    rules = Rules(
        platform_fee_bps=settings.platform_fee_bps,
        voting_window=timedelta(hours=settings.voting_window_hours),
        approval_threshold_bps=settings.approval_threshold_bps,
        quorum_bps=settings.quorum_bps,
    )
    sagas = Sagas(database, ledger, payments, clock)
    scheduler = Scheduler(
        database=database,
        ledger=ledger,
        sagas=sagas,
        rules=rules,
        clock=clock,
        interval_s=settings.scheduler_interval_ms / 1000,
    )
    broadcaster = ProgressBroadcaster(
        database,
        min_interval_s=1 / settings.stream_max_updates_per_s,
        heartbeat_s=settings.stream_heartbeat_ms / 1000,
    )
    # The two streams goals follows, each from its stored cursor: GOAL balances
    # from the ledger, payment outcomes from payments.
    balances = Follower(database, balance_stream(ledger), clock, scheduler.wake)
    outcomes = Follower(database, outcome_stream(payments), clock, scheduler.wake)
    goals = Goals(
        database,
        ledger=ledger,
        payments=payments,
        broadcaster=broadcaster,
        rules=rules,
        clock=clock,
        wake_sagas=scheduler.wake,
    )
    services = goals_service_pb2.DESCRIPTOR.services_by_name
    descriptors = [services["GoalsService"], services["GoalsInternalService"]]
    return Service(
        name="goals",
        errors=ERRORS,
        servicers=[
            (goals_service_pb2_grpc.add_GoalsServiceServicer_to_server, GoalsServicer(goals)),
            (goals_service_pb2_grpc.add_GoalsInternalServiceServicer_to_server, GoalsInternalServicer(goals)),
        ],
        descriptors=descriptors,
        auth=AuthPolicy.of(descriptors, ANONYMOUS),
        authenticator=authenticator,
        background=[broadcaster.run, balances.run, scheduler.run, authenticator.follow_revocations, outcomes.run],
    )


def main() -> None:
    run("goals", build)
