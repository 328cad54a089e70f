"""Crashes and outages, on a stack of their own (they stop its processes).

A webhook arriving while the ledger is down is acknowledged, kept, retried and
credited once when the ledger is back; a payments process killed (SIGKILL)
after storing an event and before processing it finishes the event after its
restart; a goals process killed between the release posting and the payout
finishes the release after its restart, moving the money once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from services.payments.domain import capture_transaction_id
from services.stack.stack import Stack
from tests.e2e.conftest import stack_environment
from tests.e2e.money import (
    api,
    balance,
    contribute,
    contributed,
    entries,
    goal_status,
    new_user,
    ok,
    open_goal,
    pay,
    payment_status,
    payments_db,
    platform_account,
    register_recipient,
    settle_payout,
    sim_events,
    transaction,
)
from tests.helpers import eventually_sync


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    platform = Stack(stack_environment(tmp_path_factory.mktemp("fragile")), durable=False)
    platform.start()
    yield platform
    platform.stop()


def stored_event(stack: Stack, reference: str) -> dict[str, object] | None:
    with payments_db(stack) as db:
        found: dict[str, object] | None = db.webhook_events.find_one({"eventId": f"charge.success:{reference}"})
    return found


def test_a_webhook_arriving_while_the_ledger_is_down_is_credited_once_it_returns(fragile: Stack) -> None:
    owner, payer = new_user(fragile), new_user(fragile)
    goal = open_goal(fragile, owner, target=1_000_000)
    started = contribute(fragile, payer, goal, 55_000)
    reference, payment_id = started["payment_reference"], started["contribution"]["payment_id"]

    fragile.services["ledger"].stop()
    try:
        pay(started["authorization_url"])
        # Acknowledged to Paystack (200), stored, and retried while the ledger is away.
        eventually_sync(lambda: [e for e in sim_events(fragile, reference=reference) if e["last_http_status"] == 200])
        retried = eventually_sync(
            lambda: (e := stored_event(fragile, reference)) and int(str(e["attempts"])) >= 2 and e,
            what="the processor to retry",
        )
        assert retried["status"] == "PENDING"
        assert "UNAVAILABLE" in str(retried["lastError"])
    finally:
        fragile.start_service("ledger")
        fragile.wait_edge_healthy()
    payment_status(fragile, payer, payment_id, "SUCCESS", timeout_s=60)
    assert [e["transaction_id"] for e in entries(fragile, goal["account_id"])] == [capture_transaction_id(payment_id)]
    assert balance(fragile, goal["account_id"]) == 55_000


def test_payments_killed_between_storing_and_processing_finishes_after_restart(fragile: Stack) -> None:
    owner, payer = new_user(fragile), new_user(fragile)
    goal = open_goal(fragile, owner, target=1_000_000)
    started = contribute(fragile, payer, goal, 21_000)
    reference, payment_id = started["payment_reference"], started["contribution"]["payment_id"]

    # With the ledger away the event is stored but cannot be processed, which
    # holds the process in the window between the two.
    fragile.services["ledger"].stop()
    try:
        pay(started["authorization_url"])
        eventually_sync(lambda: stored_event(fragile, reference), what="the event to be stored")
        fragile.services["payments"].kill()
    finally:
        fragile.start_service("ledger")
    assert (stored_event(fragile, reference) or {})["status"] == "PENDING"
    fragile.start_service("payments")
    fragile.wait_edge_healthy()
    payment_status(fragile, payer, payment_id, "SUCCESS", timeout_s=60)
    assert [e["transaction_id"] for e in entries(fragile, goal["account_id"])] == [capture_transaction_id(payment_id)]
    assert (stored_event(fragile, reference) or {})["status"] == "PROCESSED"


def test_goals_killed_mid_release_completes_the_release_once_after_restart(fragile: Stack) -> None:
    currency = "GHS"
    owner, backer = new_user(fragile), new_user(fragile)
    goal = open_goal(fragile, owner, target=80_000, currency=currency)
    contributed(fragile, backer, goal, 80_000)
    goal_status(fragile, goal["id"], "FUNDED")
    register_recipient(fragile, owner, currency)
    proof = ok(
        api(
            fragile,
            "POST",
            f"/v1/goals/{goal['id']}/proofs",
            owner,
            json={"title": "Done", "description": "All of it."},
        )
    )["proof"]

    payments = fragile.services["payments"].process
    assert payments is not None
    payments.send_signal(signal.SIGSTOP)  # the payout request will hang: the release stops between its steps
    try:
        ok(api(fragile, "POST", f"/v1/proofs/{proof['id']}/votes", backer, json={"is_approved": True}))
        eventually_sync(lambda: transaction(fragile, f"goal:{goal['id']}:release"), what="the release posting")
        fragile.services["goals"].kill()
    finally:
        payments.send_signal(signal.SIGCONT)
    fragile.start_service("goals")
    fragile.wait_edge_healthy()

    settle_payout(fragile, goal["id"])
    goal_status(fragile, goal["id"], "WITHDRAWN", timeout_s=60)
    fee = 80_000 * fragile.settings.platform_fee_bps // 10_000
    with payments_db(fragile) as db:
        payouts = list(db.payouts.find({"goalId": goal["id"]}))
    assert [(p["amount"], p["status"]) for p in payouts] == [(80_000 - fee, "SUCCESS")]
    release = transaction(fragile, f"goal:{goal['id']}:release")
    assert sorted(e.amount for e in release.entries) == sorted([80_000, fee, 80_000 - fee])
    assert balance(fragile, platform_account(fragile, "REVENUE", currency)) == fee
    assert balance(fragile, platform_account(fragile, "ESCROW", currency)) == fee
    assert balance(fragile, goal["account_id"]) == 0
