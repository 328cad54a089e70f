"""The webhook processor: the outbox over `webhook_events`.

A received event is stored PENDING and acknowledged; this loop then applies it
(`Webhooks.process`) and marks it PROCESSED. It runs in every payments process
and picks up whatever is due, so events left by a crash are resumed at start-up
and events stored by another replica are processed too. Intake hands the id of
what it stored to this process's workers, which claim it by that id; the due
set is asked whenever nothing is handed over. A handed id is only a shortcut:
the store is the record of what is due, so a hand-over lost (its queue full, a
worker stopped) delays an event until the next look, and never drops it. Each event is taken
under a lease (one conditional update), so two processes never work on the
same event at once; a process that dies mid-event leaves a lease that runs out.

The lease is short and renewed while the event is worked on, so an event held
by a process that was killed waits at most one lease before another process
(or the restarted one) takes it; at start-up every pending event is made due
at once, so a restart resumes work without waiting out earlier backoffs.

Failures are retried with exponential backoff from `webhook_retry_base_ms`. A
dependency being down (ledger, identity, Paystack, the store) is not the
event's fault: it is retried for as long as it takes, at least every 10 s so
the event follows soon after the dependency returns. Any other failure counts
towards `webhook_max_attempts` (backoff capped at a minute), after which the
event is PARKED with its error, for an operator (ListWebhookEvents,
RetryWebhookEvent), so one poison event cannot block or starve the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import grpc

from services.common import context, outage
from services.payments.domain import PaystackUnavailable
from services.payments.store import now
from services.payments.use_cases import Payments

log = logging.getLogger("gofund.payments.processor")

MAX_BACKOFF_S = 60.0
MAX_TRANSIENT_BACKOFF_S = 10.0
IDLE_POLL_S = 1.0
# A worker renews its event's lease while it works on it, so the lease's length is
# only how long the event of a worker that died waits for another: short. A worker
# paused past it (a stalled process) may find its event taken over; every step is
# idempotent and the lease token decides whose outcome is stored.
EVENT_LEASE = timedelta(seconds=6)
LEASE_RENEWAL_S = 2.0


def transient(exc: BaseException) -> bool:
    """A failure of a dependency, not of the event: retried without counting towards parking.
    Which errors those are is the process-wide judgement (`outage.dependency_down`: a peer's
    transient gRPC codes, the store's lost connections), plus Paystack being away."""
    # NotYetConfirmed is not among them: a verify that never agrees with a
    # signed charge.success must end up parked, in front of an operator.
    return isinstance(exc, PaystackUnavailable) or outage.dependency_down(exc)


def dependency_of(exc: BaseException) -> str:
    """Which dependency a transient failure is, for its outage's log lines."""
    if isinstance(exc, PaystackUnavailable):
        return "Paystack"
    if isinstance(exc, grpc.aio.AioRpcError):
        # The status does not say which peer answered; every one is reached the same way.
        return "a peer service (identity or ledger)"
    return "payments database"


def report_transient(resource: object, exc: BaseException) -> None:
    """A transient failure, logged once per outage of its dependency (see services.common.outage)."""
    outage.tracker(resource, dependency_of(exc)).failed(exc)


def report_recovered(resource: object) -> None:
    """Every dependency reached through `resource` answered (a whole event or sweep went through)."""
    for dependency in ("Paystack", "a peer service (identity or ledger)", "payments database"):
        outage.tracker(resource, dependency).recovered()


def raise_if_cancelling() -> None:
    """pymongo may turn a cancellation into an error of its own; a loop that
    swallowed it would never stop (the server waits for it on shutdown)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# Event ids handed to the workers by intake; beyond this many, an event waits for a
# worker's look at the due set (every worker looks whenever no event is handed to it,
# and at least every IDLE_POLL_S).
HANDED_MAX = 10_000


class Processor:
    def __init__(self, payments: Payments, *, max_attempts: int, retry_base_ms: int, workers: int = 1) -> None:
        self._payments = payments
        self._workers = workers
        self._max_attempts = max_attempts
        self._base_s = retry_base_ms / 1000
        # What intake stored, by id (None: something is due, look at the due set): a
        # worker claims a handed event by its unique id, where the due set's query costs
        # the store time in proportion to the whole backlog (see claim_due_event), so a
        # burst of webhooks would make every claim slower the more of them wait.
        self._handed: asyncio.Queue[str | None] = asyncio.Queue(maxsize=HANDED_MAX)

    def wake(self, event_id: str | None = None) -> None:
        """An event is stored (`event_id`, or any pending work if None): an idle worker
        takes it now rather than at the next poll."""
        with contextlib.suppress(asyncio.QueueFull):  # the workers' look at the due set will find it
            self._handed.put_nowait(event_id)

    async def run(self) -> None:
        """Process due events until cancelled (the server cancels it on shutdown)."""
        try:
            resumed = await self._payments.records.make_pending_events_due()
        except Exception:
            raise_if_cancelling()
            resumed = 0  # the loop below copes with a store that is away
        if resumed:
            log.info("resuming pending webhook events", extra={"count": resumed})
        async with asyncio.TaskGroup() as group:
            for _ in range(self._workers):
                group.create_task(self._work())

    async def _work(self) -> None:
        """One worker: events are claimed one at a time, so workers never share one."""
        handed: str | None = None
        while True:
            if handed is None:
                with contextlib.suppress(asyncio.QueueEmpty):
                    handed = self._handed.get_nowait()
            try:
                worked = await self.process_one(handed)
            except Exception as exc:
                raise_if_cancelling()
                # The store itself failed (claiming an event); wait and look again.
                if transient(exc):
                    report_transient(self._payments, exc)
                else:
                    log.exception("webhook processor could not claim an event")
                worked = False
            if handed is not None:
                # Taken, or someone else had it: the next handed event, else the due set.
                handed = None
            elif not worked:
                handed = await self._idle()

    async def _idle(self) -> str | None:
        """Wait for an event handed over (returned) or the next one due by the store."""
        delay = IDLE_POLL_S
        try:
            due = await self._payments.records.next_event_due()
        except Exception:
            raise_if_cancelling()
            due = None
        if due is not None:
            delay = min(delay, max((due - now()).total_seconds(), 0.0))
        try:
            return await asyncio.wait_for(self._handed.get(), timeout=delay)
        except TimeoutError:
            return None

    async def process_one(self, event_id: str | None = None) -> bool:
        """Claim and apply the event `event_id` if it is due (else the oldest due event);
        False if none was due."""
        records = self._payments.records
        if event_id is None:
            claimed = await records.claim_due_event(EVENT_LEASE)
        else:
            claimed = await records.claim_event(event_id, EVENT_LEASE)
        if claimed is None:
            return False
        event_id, token = claimed.event_id, claimed.token
        attempt = claimed.attempts + 1
        context.request_id.set(f"webhook:{event_id}")
        renewal = asyncio.create_task(self._keep_lease(event_id, token))
        try:
            outcome = await self._payments.webhooks.process(claimed.event, claimed.data)
        except Exception as exc:
            raise_if_cancelling()
            failure_count = claimed.failures + (0 if transient(exc) else 1)
            parked = failure_count >= self._max_attempts
            cap_s = MAX_TRANSIENT_BACKOFF_S if transient(exc) else MAX_BACKOFF_S
            retry_at = None if parked else now() + timedelta(seconds=outage.backoff_s(attempt, self._base_s, cap_s))
            error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            if isinstance(exc, grpc.aio.AioRpcError):
                error = f"{exc.code().name}: {exc.details()}"
            fields = {"event_id": event_id, "attempt": attempt, "error": error[:500]}
            if transient(exc):
                # Not the event's fault: its dependency's outage is logged once, and
                # each event waiting for it is a detail.
                report_transient(self._payments, exc)
                log.info("webhook event waits for a dependency; will retry", extra=fields)
            else:
                (log.error if parked else log.warning)(
                    "webhook event failed" + ("; parked" if parked else "; will retry"), extra=fields, exc_info=True
                )
            await self._payments.records.event_failed(
                event_id, token, error, retry_at, count_failure=not transient(exc)
            )
            return True
        finally:
            renewal.cancel()
        await self._payments.records.event_done(event_id, token, outcome.status, outcome.note)
        report_recovered(self._payments)
        log.info("webhook event processed", extra={"event_id": event_id, "status": str(outcome.status)})
        return True

    async def _keep_lease(self, event_id: str, token: str) -> None:
        """Renew the event's lease while it is being worked on."""
        while True:
            await asyncio.sleep(LEASE_RENEWAL_S)
            try:
                await self._payments.records.renew_event_lease(event_id, token, EVENT_LEASE)
            except Exception:
                raise_if_cancelling()
