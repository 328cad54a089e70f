"""Wiring of the payments service: resources are opened here, never at import."""

import re
from contextlib import AsyncExitStack
from datetime import timedelta

from gofund.payments.v1 import payments_service_pb2, payments_service_pb2_grpc
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.common.auth import AuthPolicy, RemoteAuthenticator
from services.common.clients import open_channels
from services.common.config import Settings, StartupError
from services.common.metrics import ReconciliationGauges, WebhookBacklog, every
from services.common.server import Service, run
from services.payments.janitor import Janitor
from services.payments.outcomes import Outcomes
from services.payments.paystack import Paystack
from services.payments.peers import Peers
from services.payments.processor import Processor
from services.payments.reconcile import Schedule
from services.payments.servicer import ERRORS, PaymentsInternalServicer, PaymentsServicer
from services.payments.store import PaymentsStore, ensure_indexes, now
from services.payments.use_cases import Payments

MONGO_TIMEOUT_MS = 5000
# How often the webhook backlog gauges are recounted (Prometheus scrapes every 15 s or so).
BACKLOG_REFRESH_S = 5.0


# Methods a caller may use without logging in: Paystack signs its webhooks instead; the bank list is public.
ANONYMOUS = ["PaymentsService/HandlePaystackWebhook", "PaymentsService/ListBanks"]


async def build(settings: Settings, stack: AsyncExitStack) -> Service:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        settings.mongodb_url, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, tz_aware=True
    )
    stack.push_async_callback(client.close)
    database = client[settings.mongodb_database]
    try:
        await ensure_indexes(database)
    except PyMongoError as exc:
        where = re.sub(r"//[^/@]*@", "//***@", settings.mongodb_url)  # never print credentials
        raise StartupError(f"payments: cannot use MongoDB at {where}: {exc}") from None
    paystack = Paystack(
        settings.paystack_url, settings.paystack_secret_key, timeout_s=settings.paystack_timeout_ms / 1000
    )
    stack.push_async_callback(paystack.close)
    channels = open_channels(settings, stack)
    # Caches Authenticate answers; identity's revocation stream (followed in
    # the background) evicts them the moment a session or role is revoked.
    authenticator = RemoteAuthenticator(
        channels, settings.target("identity"), cache_ttl_s=settings.auth_cache_ms / 1000
    )
    records = PaymentsStore(database)
    payments = Payments(
        records,
        paystack,
        Peers(channels, settings),
        Outcomes(records),
        secret_key=settings.paystack_secret_key,
        default_callback_url=settings.paystack_callback_url,
        paystack_timeout_s=settings.paystack_timeout_ms / 1000,
        first_check_after=timedelta(milliseconds=settings.janitor_first_check_ms),
    )
    janitor = Janitor(
        payments,
        interval=timedelta(milliseconds=settings.janitor_interval_ms),
        first_check=timedelta(milliseconds=settings.janitor_first_check_ms),
        max_backoff=timedelta(milliseconds=settings.janitor_max_backoff_ms),
        abandon_after=timedelta(milliseconds=settings.abandon_after_ms),
    )
    processor = Processor(
        payments,
        max_attempts=settings.webhook_max_attempts,
        retry_base_ms=settings.webhook_retry_base_ms,
        workers=settings.webhook_workers,
    )
    payments.wake_processor = processor.wake
    backlog = WebhookBacklog()
    reconciliation = ReconciliationGauges()
    schedule = Schedule(payments, reconciliation, interval=timedelta(milliseconds=settings.reconcile_interval_ms))

    async def count_backlog() -> None:
        counted = await payments.records.event_backlog()
        oldest = counted.oldest_pending_received_at
        age_s = 0.0 if oldest is None else max((now() - oldest).total_seconds(), 0.0)
        backlog.set(pending=counted.pending, parked=counted.parked, oldest_pending_age_s=age_s)

    services = payments_service_pb2.DESCRIPTOR.services_by_name
    descriptors = [services["PaymentsService"], services["PaymentsInternalService"]]
    return Service(
        name="payments",
        errors=ERRORS,
        servicers=[
            (payments_service_pb2_grpc.add_PaymentsServiceServicer_to_server, PaymentsServicer(payments)),
            (
                payments_service_pb2_grpc.add_PaymentsInternalServiceServicer_to_server,
                PaymentsInternalServicer(payments),
            ),
        ],
        descriptors=descriptors,
        auth=AuthPolicy.of(descriptors, ANONYMOUS),
        authenticator=authenticator,
        background=[
            processor.run,
            janitor.run,
            schedule.run,
            every(BACKLOG_REFRESH_S, count_backlog),
            every(BACKLOG_REFRESH_S, schedule.refresh),
            authenticator.follow_revocations,
        ],
        collectors=(*backlog.collectors, *reconciliation.collectors),
    )


def main() -> None:
    run("payments", build)
