"""The webhook processor: the outbox over `webhook_events`.

A received event is stored PENDING and acknowledged; this loop then applies it
(`Payments.process`) and marks it PROCESSED. It runs in every payments process
and picks up whatever is due, so events left by a crash are resumed at start-up
and events stored by another replica are processed too. Each event is taken
under a lease (one atomic find-and-modify), so two processes never work on the
same event at once; a process that dies mid-event leaves a lease that runs out.

Failures are retried with exponential backoff (from `webhook_retry_base_ms`,
capped at a minute). A dependency being down (ledger, goals, identity, Paystack,
the store) is not the event's fault: it is retried for as long as it takes. Any
other failure counts towards `webhook_max_attempts`, after which the event is
PARKED with its error, for an operator (ListWebhookEvents, RetryWebhookEvent),
so one poison event cannot block or starve the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

import grpc
import pymongo.errors

from services.common import context
from services.common.interceptors import store_unavailable
from services.payments.domain import PaystackUnavailable
from services.payments.service import NotYetConfirmed, Payments
from services.payments.store import now

log = logging.getLogger("gofund.payments.processor")

MAX_BACKOFF_S = 60.0
IDLE_POLL_S = 1.0
# Long enough for any one event's calls (each has its own deadline).
EVENT_LEASE = timedelta(seconds=120)
_TRANSIENT_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


def transient(exc: BaseException) -> bool:
    """A failure of a dependency, not of the event: retried without counting towards parking."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_CODES
    return isinstance(exc, PaystackUnavailable | NotYetConfirmed | pymongo.errors.ConnectionFailure) or (
        isinstance(exc, Exception) and store_unavailable(exc)
    )


def backoff_s(attempt: int, base_s: float) -> float:
    """Exponential with full jitter, so replicas retrying one dependency do not stampede."""
    ceiling = min(MAX_BACKOFF_S, base_s * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


class Processor:
    def __init__(self, payments: Payments, *, max_attempts: int, retry_base_ms: int) -> None:
        self._payments = payments
        self._max_attempts = max_attempts
        self._base_s = retry_base_ms / 1000
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A new event is stored: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Process due events until cancelled (the server cancels it on shutdown)."""
        while True:
            try:
                worked = await self.process_one()
            except Exception:
                # The store itself failed (claiming an event); wait and look again.
                log.exception("webhook processor could not claim an event")
                worked = False
            if not worked:
                await self._idle()

    async def _idle(self) -> None:
        self._wake.clear()
        delay = IDLE_POLL_S
        with contextlib.suppress(Exception):
            due = await self._payments.records.next_event_due()
            if due is not None:
                delay = min(delay, max((due - now()).total_seconds(), 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def process_one(self) -> bool:
        """Claim and apply one due event; False if none was due."""
        doc = await self._payments.records.claim_due_event(EVENT_LEASE)
        if doc is None:
            return False
        event_id, token = doc["eventId"], doc["lease"]["token"]
        attempt = doc.get("attempts", 0) + 1
        context.request_id.set(f"webhook:{event_id}")
        try:
            outcome = await self._payments.process(doc["event"], doc.get("data") or {})
        except Exception as exc:
            failure_count = doc.get("failures", 0) + (0 if transient(exc) else 1)
            parked = failure_count >= self._max_attempts
            retry_at = None if parked else now() + timedelta(seconds=backoff_s(attempt, self._base_s))
            error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            if isinstance(exc, grpc.aio.AioRpcError):
                error = f"{exc.code().name}: {exc.details()}"
            (log.error if parked else log.warning)(
                "webhook event failed" + ("; parked" if parked else "; will retry"),
                extra={"event_id": event_id, "attempt": attempt, "error": error[:500]},
                exc_info=not transient(exc),
            )
            await self._payments.records.event_failed(
                event_id, token, error, retry_at, count_failure=not transient(exc)
            )
            return True
        await self._payments.records.event_done(event_id, token, outcome.status, outcome.note)
        log.info("webhook event processed", extra={"event_id": event_id, "status": str(outcome.status)})
        return True
