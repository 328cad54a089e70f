"""The whole story through Envoy: a goal funded by two contributors at Paystack's
checkout, watched live as NDJSON, proof, votes, release, payout, WITHDRAWN; and
a goal whose owner cancels it, refunded. Each test uses a currency no other
test in the session uses, so the platform's ESCROW and REVENUE accounts in it
are the test's own and can be checked exactly."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from typing import Any

import httpx
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2

from services.stack.stack import Stack
from tests.e2e.conftest import BIN, edge
from tests.e2e.money import (
    User,
    api,
    balance,
    contributed,
    goal_status,
    ledger,
    new_user,
    ok,
    open_goal,
    payments_db,
    platform_account,
    register_recipient,
    settle_payout,
    transaction,
)
from tests.helpers import eventually_sync


def watch_goal(stack: Stack, goal_id: str, received: list[dict[str, Any]], opened: threading.Event) -> None:
    """Read WatchGoal's NDJSON through Envoy, one object per line, as each arrives."""
    with httpx.stream("GET", f"{edge(stack)}/v1/goals/{goal_id}:watch", timeout=60) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        for line in response.iter_lines():
            if line.strip():
                received.append(json.loads(line))
                opened.set()


def test_a_funded_goal_is_proven_approved_released_and_paid_out(stack: Stack) -> None:
    currency = "KES"
    owner, alice, bob = new_user(stack), new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=100_000, currency=currency)
    progress: list[dict[str, Any]] = []
    opened = threading.Event()
    watcher = threading.Thread(target=watch_goal, args=(stack, goal["id"], progress, opened), daemon=True)
    watcher.start()
    assert opened.wait(10)

    contributed(stack, alice, goal, 60_000)
    contributed(stack, bob, goal, 40_000)
    funded = goal_status(stack, goal["id"], "FUNDED")
    assert (funded["raised_amount"], funded["contributor_count"]) == ("100000", 2)
    eventually_sync(
        lambda: progress and progress[-1]["status"] == "GOAL_STATUS_FUNDED", what="the stream to show FUNDED"
    )
    messages = [p for p in progress if not p.get("heartbeat")]
    changes = [(int(p["raised_amount"]), p["contributor_count"], p["status"]) for p in messages]
    assert changes[0] == (0, 0, "GOAL_STATUS_OPEN")  # the first message is the state when the watch began
    # Each contribution is one change with every field updated (a slow reader may
    # see two coalesced into one): never a raised amount without its contributor.
    assert set(changes) <= {
        (0, 0, "GOAL_STATUS_OPEN"), (60_000, 1, "GOAL_STATUS_OPEN"), (100_000, 2, "GOAL_STATUS_FUNDED"),
    }  # fmt: skip
    seqs = [int(p["seq"]) for p in messages]
    assert seqs == sorted(set(seqs))

    register_recipient(stack, owner, currency)
    proof = ok(
        api(stack, "POST", f"/v1/goals/{goal['id']}/proofs", owner,
            json={"title": "Borehole dug", "description": "Photos of the pump.",
                  "media_urls": ["https://example.org/pump.jpg"]})
    )["proof"]  # fmt: skip
    assert proof["status"] == "PROOF_STATUS_PENDING"
    owner_vote = api(stack, "POST", f"/v1/proofs/{proof['id']}/votes", owner, json={"is_approved": True})
    assert owner_vote.status_code == 403
    stranger_vote = api(stack, "POST", f"/v1/proofs/{proof['id']}/votes", new_user(stack), json={"is_approved": True})
    assert stranger_vote.status_code == 403
    vote = ok(api(stack, "POST", f"/v1/proofs/{proof['id']}/votes", alice, json={"is_approved": True, "comment": "ok"}))
    assert vote["vote"]["weight"] == "60000"
    assert vote["proof"]["status"] == "PROOF_STATUS_APPROVED"  # 60% of the weight: decided at once
    again = api(stack, "POST", f"/v1/proofs/{proof['id']}/votes", alice, json={"is_approved": True})
    assert again.status_code == 409

    goal_status(stack, goal["id"], "RELEASED")
    settle_payout(stack, goal["id"])
    withdrawn = goal_status(stack, goal["id"], "WITHDRAWN")
    assert withdrawn["raised_amount"] == "100000"  # a closed goal keeps what it raised

    fee = 100_000 * stack.settings.platform_fee_bps // 10_000
    assert balance(stack, goal["account_id"]) == 0
    assert balance(stack, platform_account(stack, "REVENUE", currency)) == fee
    assert balance(stack, platform_account(stack, "ESCROW", currency)) == fee  # the fee is all that stays
    with ledger(stack) as internal:
        owner_account = internal.OpenAccount(
            ledger_service_pb2.OpenAccountRequest(account_type=ledger_pb2.ACCOUNT_TYPE_USER, entity_id=owner.id,
                                                  currency=currency),
            timeout=10,
        ).account.id  # fmt: skip
    assert balance(stack, owner_account) == 0  # paid out
    eventually_sync(lambda: progress[-1]["status"] == "GOAL_STATUS_WITHDRAWN", what="the stream to show WITHDRAWN")
    watcher.join(10)
    assert not watcher.is_alive()  # the stream ends after the final status
    reconcile = subprocess.run(
        [str(BIN / "gofund"), "ledger", "reconcile"],
        env={**os.environ, **stack.overrides},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr


def test_a_cancelled_goal_refunds_every_contribution(stack: Stack) -> None:
    currency = "ZAR"
    owner, alice, bob = new_user(stack), new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=500_000, currency=currency)
    first = contributed(stack, alice, goal, 30_000)
    second = contributed(stack, bob, goal, 20_000)
    cancelled = ok(api(stack, "POST", f"/v1/goals/{goal['id']}:cancel", owner, json={"reason": "site flooded"}))
    assert cancelled["goal"]["status"] in ("GOAL_STATUS_CANCELLED", "GOAL_STATUS_REFUNDING")

    def settle_refunds() -> bool:
        for contribution in (first, second):
            reference = ok(api(stack, "GET", f"/v1/contributions/{contribution['id']}", owner))["contribution"][
                "payment_reference"
            ]
            httpx.post(
                f"{stack.settings.paystack_url}/_sim/refunds/{reference}/settle",
                json={"outcome": "success"},
                timeout=10,
            )
        return ok(api(stack, "GET", f"/v1/goals/{goal['id']}"))["goal"]["status"] == "GOAL_STATUS_REFUNDED"

    eventually_sync(settle_refunds, timeout_s=60, what="the refunds to complete")
    for contribution, payer in ((first, alice), (second, bob)):
        refunded = ok(api(stack, "GET", f"/v1/contributions/{contribution['id']}", payer))["contribution"]
        assert refunded["status"] == "CONTRIBUTION_STATUS_REFUNDED"
    assert balance(stack, goal["account_id"]) == 0
    assert balance(stack, platform_account(stack, "ESCROW", currency)) == 0
    assert balance(stack, platform_account(stack, "REVENUE", currency)) == 0


def released_goal(stack: Stack, amount: int) -> tuple[User, dict[str, Any], str]:
    """A goal funded by one backer, approved and released: (owner, goal, owner's USER account)."""
    owner, backer = new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=amount)
    contributed(stack, backer, goal, amount)
    goal_status(stack, goal["id"], "FUNDED")
    register_recipient(stack, owner, goal["currency"])
    proof = ok(api(stack, "POST", f"/v1/goals/{goal['id']}/proofs", owner, json={"title": "Done", "description": "."}))
    ok(api(stack, "POST", f"/v1/proofs/{proof['proof']['id']}/votes", backer, json={"is_approved": True}))
    goal_status(stack, goal["id"], "RELEASED")
    with ledger(stack) as internal:
        owner_account = internal.OpenAccount(
            ledger_service_pb2.OpenAccountRequest(
                account_type=ledger_pb2.ACCOUNT_TYPE_USER, entity_id=owner.id, currency=goal["currency"]
            ),
            timeout=10,
        ).account.id
    return owner, goal, str(owner_account)


def payouts_of(stack: Stack, goal_id: str) -> list[dict[str, Any]]:
    with payments_db(stack) as db:
        return list(db.payouts.find({"goalId": goal_id}, {"_id": 0, "payoutId": 1, "status": 1, "amount": 1}))


def test_a_failed_transfer_keeps_the_money_with_the_owner_and_the_goal_released(stack: Stack) -> None:
    _, goal, owner_account = released_goal(stack, 20_000)
    owed = 20_000 - 20_000 * stack.settings.platform_fee_bps // 10_000
    settle_payout(stack, goal["id"], outcome="failed")
    (payout,) = eventually_sync(
        lambda: [p for p in payouts_of(stack, goal["id"]) if p["status"] == "FAILED"], what="the failed payout"
    )
    assert transaction(stack, f"payout:{payout['payoutId']}:transfer") is None  # no money left
    assert balance(stack, owner_account) == owed
    assert ok(api(stack, "GET", f"/v1/goals/{goal['id']}"))["goal"]["status"] == "GOAL_STATUS_RELEASED"


def test_a_reversed_transfer_returns_the_money_to_the_owner_exactly_once(stack: Stack) -> None:
    _, goal, owner_account = released_goal(stack, 30_000)
    owed = 30_000 - 30_000 * stack.settings.platform_fee_bps // 10_000
    settle_payout(stack, goal["id"], outcome="success")
    goal_status(stack, goal["id"], "WITHDRAWN")
    assert balance(stack, owner_account) == 0
    (payout,) = payouts_of(stack, goal["id"])
    reversed_ = httpx.post(
        f"{stack.settings.paystack_url}/_sim/transfers/gfpo-{uuid.UUID(payout['payoutId']).hex}/settle",
        json={"outcome": "reversed"},
        timeout=10,
    )
    assert reversed_.status_code == 200, reversed_.text
    goal_status(stack, goal["id"], "RELEASED")  # the money is the owner's again; goals pays it out anew
    assert transaction(stack, f"payout:{payout['payoutId']}:transfer") is not None
    assert transaction(stack, f"payout:{payout['payoutId']}:reversal") is not None
    assert balance(stack, owner_account) == owed
