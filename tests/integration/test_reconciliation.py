"""Reconciliation across goals, payments, the ledger and Paystack, on real stores.

The platform here is this module's own: after real money flows (a goal paid,
released and withdrawn, a goal cancelled and refunded, a checkout nobody
finished) reconciliation is clean; then each inconsistency is planted directly
in a store, and reconciliation must name it with the ids involved.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from gofund.goals.v1 import goals_pb2, goals_service_pb2
from gofund.ledger.v1 import ledger_service_pb2
from gofund.payments.v1 import payments_pb2, payments_service_pb2
from prometheus_client import CollectorRegistry

from services.common.metrics import ReconciliationGauges
from services.goals import domain as goals_domain
from services.payments import domain
from services.payments.reconcile import Schedule
from tests.helpers import eventually
from tests.integration.fixtures.goals import Platform, start_platform
from tests.integration.fixtures.ledger import CREDIT, DEBIT, open_account, posting
from tests.integration.fixtures.payments import (
    add_recipient,
    approve_first_proof,
    checkout,
    flagged,
    paid_contribution,
    payments_db,
    sent_payout,
    settle,
    sim,
)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(scope="module")
async def books(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    running = await start_platform(
        postgres_port, mongodb_port, tmp_path_factory.mktemp("reconciliation"), with_payments=True
    )
    yield running
    await running.close()


async def reconcile(platform: Platform) -> list[tuple[str, dict[str, str], str]]:
    response = await platform.payments_internal.Reconcile(payments_service_pb2.ReconcileRequest(), timeout=60)
    return [
        (payments_pb2.DriftKind.Name(d.kind).removeprefix("DRIFT_KIND_"), dict(d.ids), d.detail)
        for d in response.reconciliation.drifts
    ]


def found(drifts: list[tuple[str, dict[str, str], str]], kind: str, **ids: str) -> bool:
    return any(k == kind and all(i.get(name) == value for name, value in ids.items()) for k, i, _ in drifts)


async def released_goal(platform: Platform) -> Any:
    owner = await platform.fresh_user()
    (backer,) = (await platform.users(2))[1:]
    await add_recipient(platform, owner)
    goal = await platform.goal(owner, target=4000)
    paid = await paid_contribution(platform, backer, goal, 4000)
    await platform.status(goal.id, goals_pb2.GOAL_STATUS_FUNDED, timeout_s=15)
    await approve_first_proof(platform, owner, backer, goal)
    payout_id = goals_domain.payout_id(goal.id, 1)
    payout = await eventually(lambda: sent_payout(platform, payout_id), timeout_s=15)
    await settle(platform, "transfers", payout.transfer_code, "success")
    await platform.status(goal.id, goals_pb2.GOAL_STATUS_WITHDRAWN, timeout_s=15)
    return goal, paid, payout_id


async def refunded_goal(platform: Platform) -> Any:
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=50_000)
    paid = await paid_contribution(platform, payer, goal, 3000)
    await platform.until(goal.id, lambda g: g.raised_amount == 3000)
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Closing"), metadata=owner.auth
    )
    await eventually(
        lambda: platform.goals_sql("SELECT 1 FROM refunds WHERE contribution_id = %s AND state = 'REQUESTED'", paid.id),
        timeout_s=15,
    )
    await settle(platform, "refunds", paid.payment_reference, "success")
    await platform.status(goal.id, goals_pb2.GOAL_STATUS_REFUNDED, timeout_s=15)
    return goal, paid


async def test_real_flows_reconcile_clean_and_every_planted_inconsistency_is_named(books: Platform) -> None:
    platform = books
    released, released_paid, payout_id = await released_goal(platform)
    refunded, refunded_paid = await refunded_goal(platform)
    owner, payer = await platform.users(2)
    open_goal = await platform.goal(owner, target=90_000)
    kept = await paid_contribution(platform, payer, open_goal, 2500)
    await checkout(platform, payer, open_goal, 2000)  # nobody pays: still consistent
    drifts: list[Any] = []

    async def clean() -> bool:
        drifts[:] = await reconcile(platform)
        return not drifts

    # On a timeout the drifts last found are the better failure.
    with contextlib.suppress(AssertionError):
        await eventually(clean, 30, "reconciliation to be clean", interval_s=0.1)
    assert drifts == []

    escrow = await open_account(platform.ledger, "ESCROW", "NGN")
    client, db = payments_db(platform)
    try:
        # 1. A payout's record moved to another goal: that goal paid out what it never took in.
        await db.payouts.update_one({"payoutId": payout_id}, {"$set": {"goalId": open_goal.id}})
        # 2. A counted contribution of the released goal refunded in the ledger as well.
        key = domain.refund_key(released_paid.payment_id, "planted")
        await db.payments.update_one(
            {"paymentId": released_paid.payment_id},
            {"$set": {"refund": {"refundId": "planted", "key": key, "paystackRefundId": "999999"}}},
        )
        await platform.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=f"test:{uuid.uuid4()}",
                postings=[posting(escrow, DEBIT, 100), posting(released.account_id, CREDIT, 100)],
                description="planted money for the planted refund",
            )
        )
        await _reserve_and_post(platform, key, released.account_id, escrow, 100)
        # 3. A succeeded contribution whose payment the ledger never captured.
        ghost_payment = str(uuid.uuid4())
        ghost = str(uuid.uuid4())
        await platform.goals_sql(
            "INSERT INTO contributions (id, goal_id, user_id, payment_id, payment_reference, idempotency_key, amount, "
            "currency, status, created_at, updated_at) VALUES (%s, %s, %s, %s, '', %s, 700, 'NGN', 'SUCCEEDED', now(), "
            "now())",
            ghost, open_goal.id, payer.id, ghost_payment, uuid.uuid4().hex,
        )  # fmt: skip
        # 4. A capture with no contribution behind it (the open goal's raised amount follows its
        # balance, so only the capture itself and ESCROW show it).
        stray = str(uuid.uuid4())
        await platform.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=domain.capture_transaction_id(stray),
                postings=[posting(escrow, DEBIT, 900), posting(open_goal.account_id, CREDIT, 900)],
                description="planted capture",
            )
        )
        # 5. A paid charge whose webhook is lost and that nobody has verified yet.
        lost = await checkout(platform, payer, open_goal, 1200)
        await sim(platform, "/_sim/webhooks/drop", {"reference": lost.payment_reference})
        await sim(platform, f"/checkout/{lost.authorization_url.rsplit('/', 1)[1]}/pay", {"outcome": "success"})
        # 6. A refund issued at Paystack's dashboard (never asked for by us, never in the ledger).
        await sim(platform, "/_sim/refunds", {"transaction": kept.payment_reference, "amount": 1})
        await settle(platform, "refunds", kept.payment_reference, "success")
        await eventually(lambda: flagged(platform, kept.payment_id), timeout_s=15)
        # 7. A reservation nobody will resolve.
        orphan = f"refund:{uuid.uuid4()}:reserve"
        await platform.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=orphan,
                postings=[posting(open_goal.account_id, DEBIT, 50), posting(escrow, CREDIT, 50)],
                description="planted reservation",
                pending=True,
            )
        )
        # 8. A payment's status changed behind Paystack's back, and one flagged.
        await db.payments.update_one({"paymentId": refunded_paid.payment_id}, {"$set": {"status": "FAILED"}})
        # 9. A goal's raised amount changed in the goals database.
        await platform.goals_sql("UPDATE goals SET raised_amount = raised_amount + 5 WHERE id = %s", refunded.id)
        # 10. A stored balance changed behind the ledger's back.
        await platform.sql(
            platform.ledger_url,
            "UPDATE account_balances SET credits = credits + 1, balance = balance + 1, available = available + 1 "
            "WHERE account_id = %s",
            released.account_id,
        )
    finally:
        await client.close()

    drifts = await reconcile(platform)
    expected = [
        ("OUTFLOW_ABOVE_INFLOW", {"goal_id": open_goal.id}),
        ("RELEASED_AND_REFUNDED", {"goal_id": released.id}),
        ("LEDGER_WITHOUT_PAYSTACK", {"transaction_id": domain.refund_settle_id(key)}),
        ("CONTRIBUTION_WITHOUT_CAPTURE", {"contribution_id": ghost, "payment_id": ghost_payment}),
        ("CAPTURE_WITHOUT_CONTRIBUTION", {"payment_id": stray}),
        ("CHARGE_NOT_CAPTURED", {"payment_id": lost.contribution.payment_id}),
        ("STATUS_DIFFERS", {"payment_id": lost.contribution.payment_id}),
        ("OUTFLOW_NOT_IN_LEDGER", {"payment_id": kept.payment_id}),
        ("NEEDS_OPERATOR", {"payment_id": kept.payment_id}),
        ("RESERVATION_UNRESOLVED", {"transaction_id": orphan}),
        ("STATUS_DIFFERS", {"payment_id": refunded_paid.payment_id}),
        ("RAISED_DIFFERS", {"goal_id": refunded.id}),
        ("ESCROW_DIFFERS", {"currency": "NGN"}),
        ("LEDGER_UNBALANCED", {"account_id": released.account_id}),
    ]
    missing = [(kind, ids) for kind, ids in expected if not found(drifts, kind, **ids)]
    assert missing == [], drifts


async def _reserve_and_post(platform: Platform, key: str, goal_account: str, escrow: str, amount: int) -> None:
    await platform.ledger.PostTransaction(
        ledger_service_pb2.PostTransactionRequest(
            transaction_id=domain.refund_reserve_id(key),
            postings=[posting(goal_account, DEBIT, amount), posting(escrow, CREDIT, amount)],
            description="planted refund",
            pending=True,
        )
    )
    await platform.ledger.PostPendingTransaction(
        ledger_service_pb2.PostPendingTransactionRequest(
            transaction_id=domain.refund_settle_id(key), pending_transaction_id=domain.refund_reserve_id(key)
        )
    )


async def test_the_scheduled_run_counts_only_drift_that_two_runs_in_a_row_find(books: Platform) -> None:
    platform = books
    runner = next(r for r in platform.runners if r.service is not None and r.service.name == "payments")
    assert runner.service is not None
    payments = runner.service.background[1].__self__._payments  # type: ignore[attr-defined]
    gauges = ReconciliationGauges()
    registry = CollectorRegistry()
    for collector in gauges.collectors:
        registry.register(collector)
    schedule = Schedule(payments, gauges, interval=timedelta(0))  # every call may run
    client, db = payments_db(platform)
    try:
        await db.jobs.delete_many({})
    finally:
        await client.close()
    # The earlier test left drift: the first run sees it, but only the second counts it.
    assert await schedule.run_once()
    assert registry.get_sample_value("gofund_reconciliation_drifts", {"kind": "NEEDS_OPERATOR"}) == 0
    assert registry.get_sample_value("gofund_reconciliation_last_clean_age_seconds") == -1
    assert await schedule.run_once()
    persisting = registry.get_sample_value("gofund_reconciliation_drifts", {"kind": "NEEDS_OPERATOR"})
    assert persisting is not None
    assert persisting >= 1
    assert registry.get_sample_value("gofund_reconciliation_drifts", {"kind": "RESERVATION_UNRESOLVED"}) == 1
    assert registry.get_sample_value("gofund_reconciliation_last_run_age_seconds") is not None
    assert registry.get_sample_value("gofund_reconciliation_last_clean_age_seconds") == -1
