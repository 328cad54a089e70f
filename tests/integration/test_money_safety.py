"""Money safety with the real payments service, ledger, goals and the Paystack simulator.

Each test is one finding of the money-safety review: a forged or unasked-for
refund, a charge.success parked before the payer paid, a lost webhook, checkouts
nobody finishes, a payout whose event never comes, an outflow the ledger cannot
cover. The janitor is driven here with its clock moved (a Janitor over the
running payments service), never waited for; the service's own janitor does
not act within a test (its first check is minutes away).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from gofund.goals.v1 import goals_pb2, goals_service_pb2
from gofund.ledger.v1 import ledger_service_pb2
from gofund.payments.v1 import payments_pb2, payments_service_pb2

from services.goals import domain as goals_domain
from services.payments import domain
from services.payments.janitor import Janitor
from services.payments.store import now
from tests.helpers import eventually, rejected
from tests.integration.fixtures.goals import Platform, User, start_platform
from tests.integration.fixtures.ledger import CREDIT, DEBIT, open_account, posting
from tests.integration.fixtures.payments import (
    SUCCEEDED,
    add_recipient,
    approve_first_proof,
    checkout,
    contribution,
    flagged,
    paid_contribution,
    pay,
    payment_doc,
    payments_db,
    sent_payout,
    settle,
    sim,
    simulator,
    status_is,
)

pytestmark = pytest.mark.asyncio

FAILED_CONTRIBUTION = goals_pb2.CONTRIBUTION_STATUS_FAILED
REFUNDED_CONTRIBUTION = goals_pb2.CONTRIBUTION_STATUS_REFUNDED


@pytest_asyncio.fixture(scope="module")
async def guarded(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    # Two failures park an event, quickly: the parked-then-real charge needs a parked event.
    running = await start_platform(
        postgres_port,
        mongodb_port,
        tmp_path_factory.mktemp("money-safety"),
        with_payments=True,
        webhook_max_attempts=2,
        webhook_retry_base_ms=50,
    )
    yield running
    await running.close()


# -- helpers ----------------------------------------------------------------------------
async def event_doc(platform: Platform, event_id: str) -> dict[str, Any] | None:
    client, db = payments_db(platform)
    try:
        return await db.webhook_events.find_one({"eventId": event_id})
    finally:
        await client.close()


def janitor_at(platform: Platform, later: timedelta) -> Janitor:
    """A janitor over the running payments service whose clock is `later` ahead."""
    runner = next(r for r in platform.runners if r.service is not None and r.service.name == "payments")
    assert runner.service is not None
    payments = runner.service.background[1].__self__._payments  # type: ignore[attr-defined]
    settings = platform.settings
    return Janitor(
        payments,
        interval=timedelta(milliseconds=settings.janitor_interval_ms),
        first_check=timedelta(milliseconds=settings.janitor_first_check_ms),
        max_backoff=timedelta(milliseconds=settings.janitor_max_backoff_ms),
        abandon_after=timedelta(milliseconds=settings.abandon_after_ms),
        clock=lambda: now() + later,
    )


async def deliver(platform: Platform, event: str, data: dict[str, Any]) -> None:
    """A webhook signed with the secret key, as an attacker holding it (or a confused Paystack) would send."""
    body = json.dumps({"event": event, "data": data}).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            platform.settings.paystack_webhook_url,
            content=body,
            headers={"x-paystack-signature": domain.sign(platform.settings.paystack_secret_key, body)},
        )
    assert response.status_code == 200, response.text


async def sim_get(platform: Platform, path: str, **query: str) -> Any:
    assert platform.simulator is not None
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{platform.simulator.base_url}{path}",
            params=query,
            headers={"authorization": f"Bearer {platform.settings.paystack_secret_key}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def payment_status(platform: Platform, payer: User, payment_id: str) -> int:
    response = await platform.payments.GetPayment(
        payments_service_pb2.GetPaymentRequest(payment_id=payment_id), metadata=payer.auth
    )
    return int(response.payment.status)


async def ledger_of_payment(platform: Platform, payment_id: str) -> list[str]:
    """Every ledger transaction about the payment (its capture, refund reservations and their resolutions)."""
    rows = await platform.sql(
        platform.ledger_url,
        "SELECT id FROM ledger_transactions WHERE metadata->>'payment_id' = %s ORDER BY id",
        payment_id,
    )
    return [row[0] for row in rows]


# -- forged and unasked-for refunds ------------------------------------------------------------
async def test_a_forged_refund_event_moves_nothing_and_isflagged(guarded: Platform) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    paid = await paid_contribution(platform, payer, goal, 5000)
    await platform.until(goal.id, lambda g: g.raised_amount == 5000)
    forged = {
        "status": "processed", "transaction_reference": paid.payment_reference, "amount": "1",
        "currency": "NGN", "refund_reference": "forged-1",
    }  # fmt: skip
    await deliver(platform, "refund.processed", forged)
    flagged = await eventually(lambda: _event_in(platform, "refund.processed:forged-1", "FLAGGED"), timeout_s=15)
    assert "Paystack holds no processed refund" in flagged["lastError"]
    assert await payment_status(platform, payer, paid.payment_id) == payments_pb2.PAYMENT_STATUS_SUCCESS
    assert (await contribution(platform, payer, paid.id)).status == SUCCEEDED
    assert await platform.balance(goal.account_id) == 5000
    assert await ledger_of_payment(platform, paid.payment_id) == [domain.capture_transaction_id(paid.payment_id)]
    assert not (await payment_doc(platform, paid.payment_id)).get("flagged")


async def _event_in(platform: Platform, event_id: str, status: str) -> dict[str, Any] | None:
    doc = await event_doc(platform, event_id)
    return doc if doc is not None and doc["status"] == status else None


async def test_a_partial_refund_from_the_dashboard_is_recorded_and_flags_the_payment(guarded: Platform) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    paid = await paid_contribution(platform, payer, goal, 8000)
    await platform.until(goal.id, lambda g: g.raised_amount == 8000)
    await sim(platform, "/_sim/refunds", {"transaction": paid.payment_reference, "amount": 2000})
    await settle(platform, "refunds", paid.payment_reference, "success")  # its refund.processed is delivered
    doc = await eventually(lambda: flagged(platform, paid.payment_id), timeout_s=15)
    assert [(r["amount"], r["status"]) for r in doc["foreignRefunds"]] == [(2000, "processed")]
    assert "did not ask for" in doc["flagReason"]
    # Recorded for what it is: never matched to the whole payment, no money moved in the ledger.
    assert doc["status"] == "SUCCESS"
    assert await platform.balance(goal.account_id) == 8000
    assert (await contribution(platform, payer, paid.id)).status == SUCCEEDED
    # A flagged payment is an operator's: no refund of it reaches Paystack on its own.
    refusal = await rejected(
        platform.payments_internal.RefundPayment(
            payments_service_pb2.RefundPaymentRequest(payment_id=paid.payment_id, refund_id=uuid.uuid4().hex)
        )
    )
    assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION


# -- webhooks that come too early, or never --------------------------------------------------
async def test_a_charge_success_parked_before_the_payer_paid_is_revived_by_the_real_delivery(
    guarded: Platform,
) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    started = await checkout(platform, payer, goal, 6000)
    reference = started.payment_reference
    event_id = f"charge.success:{reference}"
    # Signed, but Paystack's verify says the checkout is not paid: retried, then parked.
    await deliver(platform, "charge.success", {"reference": reference, "status": "success", "amount": 6000})
    await eventually(lambda: _event_in(platform, event_id, "PARKED"), timeout_s=15)
    await pay(started)  # the real charge.success, under the same derived event id
    revived = await eventually(lambda: _event_in(platform, event_id, "PROCESSED"), timeout_s=15)
    assert (revived["deliveries"], "revivedAt" in revived) == (2, True)
    await eventually(lambda: status_is(platform, payer, started.contribution.id, SUCCEEDED), timeout_s=15)
    assert await ledger_of_payment(platform, started.contribution.payment_id) == [
        domain.capture_transaction_id(started.contribution.payment_id)
    ]
    assert await platform.balance(goal.account_id) == 6000


async def test_a_paid_charge_whose_webhook_is_lost_is_credited_by_the_janitor(guarded: Platform) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    started = await checkout(platform, payer, goal, 7000)
    await sim(platform, "/_sim/webhooks/drop", {"reference": started.payment_reference})
    await pay(started)
    events = await sim_get(platform, "/_sim/events", reference=started.payment_reference)
    assert [e["status"] for e in events["data"]] == ["dropped"]
    assert await payment_status(platform, payer, started.contribution.payment_id) == payments_pb2.PAYMENT_STATUS_PENDING
    # Not yet due: a payment is first looked at some minutes after its creation.
    assert await janitor_at(platform, timedelta(seconds=1)).sweep() == 0
    await janitor_at(platform, timedelta(minutes=6)).sweep()
    await eventually(lambda: status_is(platform, payer, started.contribution.id, SUCCEEDED), timeout_s=15)
    await platform.until(goal.id, lambda g: g.raised_amount == 7000 and g.contributor_count == 1)
    assert await ledger_of_payment(platform, started.contribution.payment_id) == [
        domain.capture_transaction_id(started.contribution.payment_id)
    ]


async def test_a_lost_webhook_on_a_goal_that_closed_meanwhile_is_refunded_once(guarded: Platform) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    started = await checkout(platform, payer, goal, 4500)
    await sim(platform, "/_sim/webhooks/drop", {"reference": started.payment_reference})
    await pay(started)
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Closing"), metadata=owner.auth
    )
    await janitor_at(platform, timedelta(minutes=6)).sweep()
    # Captured, then refunded because it paid a closed goal: reserved, asked of Paystack once.
    await eventually(
        lambda: platform.goals_sql(
            "SELECT 1 FROM refunds WHERE contribution_id = %s AND state = 'REQUESTED'", started.contribution.id
        ),
        timeout_s=15,
    )
    await settle(platform, "refunds", started.payment_reference, "success")
    await eventually(lambda: status_is(platform, payer, started.contribution.id, REFUNDED_CONTRIBUTION), 15)
    refunds = await sim_get(platform, "/refund", transaction=started.payment_reference)
    assert [r["amount"] for r in refunds["data"]] == [4500]
    assert await platform.balance(goal.account_id) == 0
    assert (await platform.get(goal.id)).raised_amount == 0


async def test_declined_and_abandoned_checkouts_are_closed_with_no_client_call(guarded: Platform) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    declined = await checkout(platform, payer, goal, 3000)
    response = await simulator(f"{declined.authorization_url}/pay", {"outcome": "failed"})
    assert response.status_code == 200, response.text  # Paystack sends no webhook for a declined card
    left = await checkout(platform, payer, goal, 3100)  # the payer closed the tab
    await janitor_at(platform, timedelta(minutes=6)).sweep()
    await eventually(lambda: status_is(platform, payer, declined.contribution.id, FAILED_CONTRIBUTION), 15)
    payment_id = left.contribution.payment_id
    # Within the idempotency window an abandoned checkout can still be paid: once its
    # check is done, it stays open.
    await eventually(lambda: _event_in(platform, f"{domain.CHECK_PAYMENT}:{payment_id}", "PROCESSED"), 15)
    assert await payment_status(platform, payer, payment_id) == payments_pb2.PAYMENT_STATUS_PENDING
    await janitor_at(platform, timedelta(hours=25)).sweep()
    await eventually(lambda: status_is(platform, payer, left.contribution.id, FAILED_CONTRIBUTION), 15)
    assert await payment_status(platform, payer, payment_id) == payments_pb2.PAYMENT_STATUS_ABANDONED
    closed = await contribution(platform, payer, left.contribution.id)
    assert "abandoned" in (await platform.goals_sql(
        "SELECT failure_reason FROM contributions WHERE id = %s", closed.id
    ))[0][0]  # fmt: skip


async def test_a_payout_whose_event_never_comes_settles_by_polling(guarded: Platform) -> None:
    platform = guarded
    owner = await platform.fresh_user()
    (backer,) = (await platform.users(2))[1:]
    await add_recipient(platform, owner)
    goal = await platform.goal(owner, target=4000)
    await paid_contribution(platform, backer, goal, 4000)
    await platform.status(goal.id, goals_pb2.GOAL_STATUS_FUNDED, timeout_s=15)
    await approve_first_proof(platform, owner, backer, goal)
    payout_id = goals_domain.payout_id(goal.id, 1)
    payout = await eventually(lambda: sent_payout(platform, payout_id), timeout_s=15)
    await sim(platform, "/_sim/webhooks/drop", {"reference": domain.payout_reference(payout_id)})
    await settle(platform, "transfers", payout.transfer_code, "success")
    assert (await platform.get(goal.id)).status == goals_pb2.GOAL_STATUS_RELEASED
    await janitor_at(platform, timedelta(minutes=6)).sweep()
    await platform.status(goal.id, goals_pb2.GOAL_STATUS_WITHDRAWN, timeout_s=15)
    settled = await platform.payments_internal.GetPayout(payments_service_pb2.GetPayoutRequest(payout_id=payout_id))
    assert settled.payout.status == payments_pb2.PAYOUT_STATUS_SUCCESS
    transfer = await platform.ledger.GetTransaction(
        ledger_service_pb2.GetTransactionRequest(transaction_id=domain.payout_transaction_id(payout_id))
    )
    assert transfer.transaction.pending_transaction_id == domain.payout_reserve_id(payout_id)
    owner_account = await open_account(platform.ledger, "USER", "NGN", owner.id)
    assert await platform.balance(owner_account) == 0


# -- the ledger is asked first ------------------------------------------------------------------
async def test_an_outflow_the_ledger_cannot_cover_is_refused_before_paystack_is_asked(guarded: Platform) -> None:
    platform = guarded
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    paid = await paid_contribution(platform, payer, goal, 5000)
    await platform.until(goal.id, lambda g: g.raised_amount == 5000)
    # The goal's money goes elsewhere first (as a release would move it).
    owner_account = await open_account(platform.ledger, "USER", "NGN", owner.id)
    await platform.ledger.PostTransaction(
        ledger_service_pb2.PostTransactionRequest(
            transaction_id=f"test:{uuid.uuid4()}",
            postings=[posting(goal.account_id, DEBIT, 5000), posting(owner_account, CREDIT, 5000)],
            description="the money went elsewhere",
        )
    )
    refusal = await rejected(
        platform.payments_internal.RefundPayment(
            payments_service_pb2.RefundPaymentRequest(payment_id=paid.payment_id, refund_id=uuid.uuid4().hex)
        )
    )
    assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "INSUFFICIENT_FUNDS" in str(refusal.trailing_metadata())
    assert await payment_status(platform, payer, paid.payment_id) == payments_pb2.PAYMENT_STATUS_SUCCESS
    refunds = await sim_get(platform, "/refund", transaction=paid.payment_reference)
    assert refunds["data"] == []  # Paystack was never asked
    # A payout of more than the owner's account holds fails the same way, with no transfer.
    payout_id = str(uuid.uuid4())
    await add_recipient(platform, owner)
    answer = await platform.payments_internal.CreatePayout(
        payments_service_pb2.CreatePayoutRequest(
            payout_id=payout_id, goal_id=goal.id, user_id=owner.id, amount=9000, currency="NGN", reason="too much"
        )
    )
    assert answer.payout.status == payments_pb2.PAYOUT_STATUS_FAILED
    assert not answer.payout.transfer_code
    assert await platform.balance(owner_account) == 5000
