"""Goals with the real payments service and the Paystack simulator: checkout, webhooks, refunds, payouts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from gofund.goals.v1 import goals_pb2, goals_service_pb2
from gofund.payments.v1 import payments_pb2, payments_service_pb2

from services.goals import domain
from tests.helpers import eventually
from tests.integration.fixtures.goals import Platform, User, take
from tests.integration.fixtures.ledger import open_account
from tests.integration.fixtures.payments import (
    SUCCEEDED,
    add_recipient,
    approve_first_proof,
    checkout,
    contribution,
    paid_contribution,
    pay,
    sent_payout,
    settle,
    status_is,
)

pytestmark = pytest.mark.asyncio

OPEN, FUNDED, RELEASED, WITHDRAWN = (
    goals_pb2.GOAL_STATUS_OPEN,
    goals_pb2.GOAL_STATUS_FUNDED,
    goals_pb2.GOAL_STATUS_RELEASED,
    goals_pb2.GOAL_STATUS_WITHDRAWN,
)
REFUNDED = goals_pb2.GOAL_STATUS_REFUNDED
REFUNDED_CONTRIBUTION = goals_pb2.CONTRIBUTION_STATUS_REFUNDED


async def test_a_payment_at_checkout_funds_the_goal_and_a_retry_returns_the_same_checkout(
    paying_platform: Platform,
) -> None:
    platform = paying_platform
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=5000)
    key = uuid.uuid4().hex
    started = await checkout(platform, payer, goal, 5000, key)
    again = await checkout(platform, payer, goal, 5000, key)
    assert started.contribution.status == goals_pb2.CONTRIBUTION_STATUS_PENDING
    assert started.contribution.payment_id
    assert started.payment_reference == started.contribution.payment_reference
    assert (again.contribution.id, again.authorization_url) == (started.contribution.id, started.authorization_url)
    assert started.authorization_url.startswith(platform.settings.paystack_url)

    stream = platform.goals.public.WatchGoal(goals_service_pb2.WatchGoalRequest(goal_id=goal.id))
    (first,) = await take(stream, 1)
    assert (first.status, first.raised_amount) == (OPEN, 0)
    await pay(started)
    # The capture (ledger) and the confirmation (payments -> goals) arrive separately,
    # in either order; the stream shows them as one change with every field updated.
    (funded,) = await take(stream, 1, timeout_s=15)
    stream.cancel()
    assert (funded.seq, funded.status, funded.raised_amount, funded.contributor_count) == (
        first.seq + 1, FUNDED, 5000, 1,
    )  # fmt: skip
    paid = await contribution(platform, payer, started.contribution.id)
    assert (paid.status, paid.payment_id) == (SUCCEEDED, started.contribution.payment_id)
    # A retry after the payment succeeded still names the same contribution and payment.
    late_retry = await checkout(platform, payer, goal, 5000, key)
    assert (late_retry.contribution.id, late_retry.contribution.status) == (started.contribution.id, SUCCEEDED)


async def test_the_payout_waits_for_the_owners_bank_account_then_the_goal_is_withdrawn(
    paying_platform: Platform,
) -> None:
    platform = paying_platform
    owner = await platform.fresh_user()
    (backer,) = (await platform.users(2))[1:]
    goal = await platform.goal(owner, target=4000)
    await paid_contribution(platform, backer, goal, 4000)
    await platform.status(goal.id, FUNDED, timeout_s=15)
    await approve_first_proof(platform, owner, backer, goal)
    await platform.status(goal.id, RELEASED)
    waiting = await eventually(
        lambda: platform.goals_sql(
            "SELECT last_error FROM releases WHERE goal_id = %s AND last_error LIKE %s",
            goal.id,
            "%NO_PAYOUT_RECIPIENT%",
        )
    )
    assert waiting

    await add_recipient(platform, owner)
    platform.clock.advance(minutes=30)  # the saga's next look
    payout_id = domain.payout_id(goal.id, 1)
    payout = await eventually(lambda: sent_payout(platform, payout_id))
    assert (payout.amount, payout.user_id, payout.status) == (3800, owner.id, payments_pb2.PAYOUT_STATUS_PENDING)

    await settle(platform, "transfers", payout.transfer_code, "success")
    withdrawn = await platform.status(goal.id, WITHDRAWN, timeout_s=15)
    assert withdrawn.raised_amount == 4000
    owner_account = await platform_account(platform, "USER", owner.id)
    revenue = await platform_account(platform, "REVENUE", "platform")
    assert await platform.balance(owner_account) == 0
    assert await platform.balance(goal.account_id) == 0
    assert await platform.balance(revenue) >= 200


async def _payment_is(platform: Platform, payer: User, payment_id: str, status: int) -> bool:
    response = await platform.payments.GetPayment(
        payments_service_pb2.GetPaymentRequest(payment_id=payment_id), metadata=payer.auth
    )
    return bool(response.payment.status == status)


async def platform_account(platform: Platform, kind: str, entity_id: str) -> str:
    return await open_account(platform.ledger, kind, "NGN", entity_id)


async def test_a_refund_paystack_fails_is_retried_under_a_new_refund_id(paying_platform: Platform) -> None:
    platform = paying_platform
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=10_000)
    paid = await paid_contribution(platform, payer, goal, 3000)
    await platform.until(goal.id, lambda g: g.raised_amount == 3000)
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Venue closed"), metadata=owner.auth
    )
    await eventually(
        lambda: platform.goals_sql("SELECT 1 FROM refunds WHERE contribution_id = %s AND state = 'REQUESTED'", paid.id)
    )
    await settle(platform, "refunds", paid.payment_reference, "failed")
    await eventually(lambda: _payment_is(platform, payer, paid.payment_id, payments_pb2.PAYMENT_STATUS_SUCCESS))
    # Goals hears of the failure on payments' outcome stream and asks at once under the
    # next id: its clock stands still, so no scheduled look could have found it.
    await eventually(
        lambda: platform.goals_sql(
            "SELECT 1 FROM refunds WHERE contribution_id = %s AND attempt = 2 AND state = 'REQUESTED'", paid.id
        ),
        timeout_s=15,
    )
    await settle(platform, "refunds", paid.payment_reference, "success")
    refunded = await platform.status(goal.id, REFUNDED, timeout_s=15)
    assert (refunded.raised_amount, refunded.contributor_count) == (3000, 1)
    assert (await contribution(platform, payer, paid.id)).status == REFUNDED_CONTRIBUTION
    assert await platform.balance(goal.account_id) == 0


async def test_a_payment_completed_after_the_goal_was_cancelled_goes_back_to_the_payer(
    paying_platform: Platform,
) -> None:
    platform = paying_platform
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=10_000)
    started = await checkout(platform, payer, goal, 2500)
    cancelled = (
        await platform.goals.public.CancelGoal(
            goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Changed plans"), metadata=owner.auth
        )
    ).goal
    assert cancelled.status == REFUNDED  # nothing had been paid yet
    await pay(started)  # the payer was still on the checkout page
    await eventually(
        lambda: platform.goals_sql(
            "SELECT 1 FROM refunds WHERE contribution_id = %s AND state = 'REQUESTED'", started.contribution.id
        ),
        timeout_s=15,
    )
    await settle(platform, "refunds", started.payment_reference, "success")
    await eventually(lambda: status_is(platform, payer, started.contribution.id, REFUNDED_CONTRIBUTION), 15)
    after = await platform.get(goal.id)
    assert (after.status, after.raised_amount, after.contributor_count) == (REFUNDED, 0, 0)
    assert await platform.balance(goal.account_id) == 0


async def test_a_goal_below_target_at_its_deadline_is_refunded_in_full(paying_platform: Platform) -> None:
    platform = paying_platform
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner, target=50_000, deadline=platform.deadline(hours=2))
    first = await paid_contribution(platform, alice, goal, 4000)
    second = await paid_contribution(platform, bob, goal, 6000)
    await platform.until(goal.id, lambda g: g.raised_amount == 10_000)
    platform.clock.advance(hours=3)  # past the deadline, below the target
    refunding = await platform.until(goal.id, lambda g: g.status == goals_pb2.GOAL_STATUS_REFUNDING)
    assert refunding.raised_amount == 10_000
    for paid in (first, second):
        await eventually(
            lambda paid=paid: platform.goals_sql(
                "SELECT 1 FROM refunds WHERE contribution_id = %s AND state = 'REQUESTED'", paid.id
            )
        )
        await settle(platform, "refunds", paid.payment_reference, "success")
    refunded = await platform.status(goal.id, REFUNDED, timeout_s=15)
    assert (refunded.raised_amount, refunded.contributor_count) == (10_000, 2)
    for payer, paid in ((alice, first), (bob, second)):
        assert (await contribution(platform, payer, paid.id)).status == REFUNDED_CONTRIBUTION
    assert await platform.balance(goal.account_id) == 0


async def _outcome_published(platform: Platform, contribution_id: str) -> int:
    """The seq of the contribution's `contribution_paid` outcome, once payments has published it."""
    stream = platform.payments_internal.WatchOutcomes(payments_service_pb2.WatchOutcomesRequest(after_seq=0))
    try:
        async for message in stream:
            if message.outcome.contribution_paid.contribution_id == contribution_id:
                return int(message.outcome.seq)
    finally:
        stream.cancel()
    raise AssertionError("the outcome stream ended")


async def test_goals_down_when_a_payment_lands_applies_it_once_from_its_stored_cursor_after_restart(
    paying_platform: Platform,
) -> None:
    platform = paying_platform
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=10_000)
    started = await checkout(platform, payer, goal, 2000)
    ((before,),) = await platform.goals_sql("SELECT seq FROM goals WHERE id = %s", goal.id)
    await platform.stop_goals(platform.goals)
    # Payments settles the charge without goals: it publishes, it calls no one.
    await pay(started)
    seq = await asyncio.wait_for(_outcome_published(platform, started.contribution.id), 15)
    ((cursor,),) = await platform.goals_sql("SELECT last_seq FROM payments_cursor")
    assert cursor < seq
    assert await platform.goals_sql("SELECT status FROM contributions WHERE id = %s", started.contribution.id) == [
        ("PENDING",)
    ]

    platform.goals = await platform.start_goals(port=platform.settings.goals_port)
    await eventually(lambda: status_is(platform, payer, started.contribution.id, SUCCEEDED), timeout_s=15)
    await eventually(
        lambda: platform.goals_sql("SELECT 1 FROM payments_cursor WHERE last_seq >= %s", seq), timeout_s=15
    )
    shown = await platform.until(goal.id, lambda g: g.raised_amount == 2000)
    assert shown.contributor_count == 1
    # Its capture and its outcome, both caught up after the restart, are one change.
    assert await platform.goals_sql("SELECT seq FROM goals WHERE id = %s", goal.id) == [(before + 1,)]
