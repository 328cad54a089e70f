"""Wiring of the identity service: resources are opened here, never at import."""

from contextlib import AsyncExitStack
from datetime import timedelta

from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

from services.common.auth import AuthPolicy
from services.common.config import Settings
from services.common.db import Database
from services.common.server import Service, run
from services.identity.domain import Limits
from services.identity.notify import LoggingSmsSender, SmtpEmailSender
from services.identity.revocations import RevocationFeed
from services.identity.servicer import (
    ANONYMOUS,
    ERRORS,
    IdentityInternalServicer,
    IdentityServicer,
    LocalAuthenticator,
)
from services.identity.use_cases import Identity


def use_cases(settings: Settings, database: Database, revocations: RevocationFeed | None = None) -> Identity:
    """Identity's use cases as the service runs them; `gofund admin create` uses them
    too (without a revocation feed of its own), so the command cannot drift from the
    service's wiring."""
    return Identity(
        database,
        code_secret=settings.identity_secret,
        session_ttl=timedelta(hours=settings.session_ttl_hours),
        email=SmtpEmailSender(settings.smtp_host, settings.smtp_port),
        sms=LoggingSmsSender(),
        token_cache_ttl=timedelta(milliseconds=settings.auth_cache_ms),
        revocations=revocations,
        limits=Limits.of(
            login_failures_per_client=settings.login_failures_per_client,
            login_failures_per_account=settings.login_failures_per_account,
            registrations_per_client=settings.registrations_per_client,
            code_requests_per_account=settings.code_requests_per_account,
            code_requests_per_client=settings.code_requests_per_client,
            code_guesses_per_account=settings.code_guesses_per_account,
        ),
    )


async def build(settings: Settings, stack: AsyncExitStack) -> Service:
    database = Database("identity", settings.database_url("identity"))
    stack.push_async_callback(database.dispose)
    await database.check_ready()
    # One LISTEN connection per process: it evicts identity's own token cache
    # and feeds the WatchRevocations streams of the other services' caches.
    revocations = RevocationFeed(database)
    identity = use_cases(settings, database, revocations)
    services = identity_service_pb2.DESCRIPTOR.services_by_name
    descriptors = [services["IdentityService"], services["IdentityInternalService"]]
    return Service(
        name="identity",
        errors=ERRORS,
        servicers=[
            (identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(identity)),
            (
                identity_service_pb2_grpc.add_IdentityInternalServiceServicer_to_server,
                IdentityInternalServicer(identity, revocations),
            ),
        ],
        descriptors=descriptors,
        auth=AuthPolicy.of(descriptors, ANONYMOUS),
        # Identity caches in resolve(), where its revocation feed evicts.
        authenticator=LocalAuthenticator(identity),
        background=[revocations.run],
    )


def main() -> None:
    run("identity", build)
