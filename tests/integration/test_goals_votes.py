"""Proofs, votes and the release saga, with contributions made the way payments makes them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from gofund.goals.v1 import goals_pb2, goals_service_pb2
from gofund.ledger.v1 import ledger_service_pb2

from services.goals import domain
from tests.helpers import eventually, reason, rejected
from tests.integration.fixtures.goals import GOALS, Platform, User
from tests.integration.fixtures.ledger import open_account

pytestmark = pytest.mark.asyncio

FUNDED, RELEASED = goals_pb2.GOAL_STATUS_FUNDED, goals_pb2.GOAL_STATUS_RELEASED
WITHDRAWN, REFUNDING = goals_pb2.GOAL_STATUS_WITHDRAWN, goals_pb2.GOAL_STATUS_REFUNDING
PENDING, APPROVED, REJECTED = (
    goals_pb2.PROOF_STATUS_PENDING,
    goals_pb2.PROOF_STATUS_APPROVED,
    goals_pb2.PROOF_STATUS_REJECTED,
)


async def submit(platform: Platform, owner: User, goal_id: str, **fields: object) -> goals_pb2.Proof:
    values: dict[str, object] = {"goal_id": goal_id, "title": "Receipts", "description": "All books bought."}
    values.update(fields)
    request = goals_service_pb2.CreateProofRequest(**values)  # type: ignore[arg-type]
    return (await platform.goals.public.CreateProof(request, metadata=owner.auth)).proof


async def vote(platform: Platform, voter: User, proof_id: str, approve: bool) -> goals_service_pb2.CreateVoteResponse:
    return await platform.goals.public.CreateVote(
        goals_service_pb2.CreateVoteRequest(proof_id=proof_id, is_approved=approve, comment="seen it"),
        metadata=voter.auth,
    )


async def report_payout(platform: Platform, goal_id: str, attempt: int, status: str) -> Any:
    """Payments' payout_settled outcome for the goal's payout `attempt`: the refusal the
    follower logged and stepped over, or the goal as it stands after it."""
    refused = await platform.payout_settled(goal_id, domain.payout_id(goal_id, attempt), status, reason=status)
    return refused or await platform.get(goal_id)


async def test_only_the_owner_of_a_funded_goal_submits_proof_one_at_a_time(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    open_goal = await platform.goal(owner)
    not_funded = await rejected(submit(platform, owner, open_goal.id))
    assert (not_funded.code(), reason(not_funded, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_FUNDED")

    goal = await platform.funded_goal(owner, [(backer, 4000)])
    stranger = await rejected(submit(platform, backer, goal.id))
    assert (stranger.code(), reason(stranger, GOALS)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_GOAL_OWNER")
    bad_media = await rejected(submit(platform, owner, goal.id, media_urls=["http://example.com/a.jpg"]))
    assert reason(bad_media, GOALS) == "INVALID_MEDIA_URL"
    too_many = await rejected(submit(platform, owner, goal.id, media_urls=["https://example.com/a.jpg"] * 11))
    assert reason(too_many, GOALS) == "TOO_MANY_MEDIA_URLS"
    missing = await rejected(submit(platform, owner, str(uuid.uuid4())))
    assert reason(missing, GOALS) == "GOAL_NOT_FOUND"

    media = ["https://example.com/receipt.jpg", "https://example.com/class.mp4"]
    proof, twin = await asyncio.gather(
        submit(platform, owner, goal.id, media_urls=media, request_id="proof-1"),
        submit(platform, owner, goal.id, media_urls=media, request_id="proof-1"),
    )
    assert twin == proof
    assert (proof.status, proof.attempt, list(proof.media_urls), proof.owner_id) == (PENDING, 1, media, owner.id)
    window = proof.voting_ends_at.ToDatetime() - proof.created_at.ToDatetime()
    assert window.total_seconds() == platform.settings.voting_window_hours * 3600
    assert (await submit(platform, owner, goal.id, media_urls=media, request_id="proof-1")) == proof
    reused = await rejected(submit(platform, owner, goal.id, title="Other", request_id="proof-1"))
    assert reason(reused, GOALS) == "IDEMPOTENCY_KEY_REUSED"
    second = await rejected(submit(platform, owner, goal.id))
    assert (second.code(), reason(second, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "PROOF_PENDING")

    listed = await platform.goals.public.ListProofs(goals_service_pb2.ListProofsRequest(goal_id=goal.id))
    assert list(listed.proofs) == [proof]
    fetched = await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof.id))
    assert fetched.proof == proof
    unknown = await rejected(
        platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=str(uuid.uuid4())))
    )
    assert (unknown.code(), reason(unknown, GOALS)) == (grpc.StatusCode.NOT_FOUND, "PROOF_NOT_FOUND")


async def test_contributors_vote_once_by_weight_and_the_owner_never(platform: Platform) -> None:
    owner, alice, bob, carol, stranger = await platform.users(5)
    goal = await platform.funded_goal(owner, [(alice, 2000), (bob, 3000), (carol, 5000), (alice, 1000)])
    await platform.contribute(goal, owner, 500)  # the owner chipped in too, and still does not vote
    proof = await submit(platform, owner, goal.id)

    own = await rejected(vote(platform, owner, proof.id, approve=True))
    assert (own.code(), reason(own, GOALS)) == (grpc.StatusCode.PERMISSION_DENIED, "OWNER_CANNOT_VOTE")
    outsider = await rejected(vote(platform, stranger, proof.id, approve=True))
    assert (outsider.code(), reason(outsider, GOALS)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_A_CONTRIBUTOR")
    long_comment = await rejected(
        platform.goals.public.CreateVote(
            goals_service_pb2.CreateVoteRequest(proof_id=proof.id, comment="x" * 1001), metadata=alice.auth
        )
    )
    assert reason(long_comment, GOALS) == "INVALID_COMMENT"

    outcomes = await asyncio.gather(
        vote(platform, alice, proof.id, approve=True), vote(platform, alice, proof.id, approve=True),
        return_exceptions=True,
    )  # fmt: skip
    (first,) = [o for o in outcomes if not isinstance(o, BaseException)]
    (twice,) = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert reason(twice, GOALS) == "ALREADY_VOTED"
    assert (first.vote.weight, first.vote.voter_id, first.vote.is_approved) == (3000, alice.id, True)
    assert (first.proof.approve_weight, first.proof.reject_weight, first.proof.voter_count) == (3000, 0, 1)
    again = await rejected(vote(platform, alice, proof.id, approve=False))
    assert (again.code(), reason(again, GOALS)) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_VOTED")
    second = await vote(platform, bob, proof.id, approve=False)
    assert (second.proof.approve_weight, second.proof.reject_weight, second.proof.status) == (3000, 3000, PENDING)
    tally = (await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof.id))).proof
    assert (tally.approve_weight, tally.reject_weight, tally.voter_count) == (3000, 3000, 2)


async def test_approval_releases_the_escrow_less_the_fee_and_waits_for_a_payout_recipient(
    platform: Platform,
) -> None:
    owner, alice, bob, carol = await platform.users(4)
    goal = await platform.funded_goal(owner, [(alice, 3000), (bob, 3000), (carol, 4000)])
    owner_account = await open_account(platform.ledger, "USER", "NGN", owner.id)
    owner_before = await platform.balance(owner_account)
    proof = await submit(platform, owner, goal.id)
    assert (await vote(platform, alice, proof.id, approve=True)).proof.status == PENDING
    # 3000 + 4000 of 10000 is more than half: approved at once, without waiting for Bob.
    decided = (await vote(platform, carol, proof.id, approve=True)).proof
    assert (decided.status, decided.approve_weight) == (APPROVED, 7000)
    assert decided.HasField("decided_at")
    late = await rejected(vote(platform, bob, proof.id, approve=False))
    assert (late.code(), reason(late, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "VOTING_CLOSED")

    released = await platform.status(goal.id, RELEASED)
    assert (released.raised_amount, released.contributor_count) == (10_000, 3)
    release = await platform.ledger.GetTransaction(
        ledger_service_pb2.GetTransactionRequest(transaction_id=f"goal:{goal.id}:release")
    )
    assert sorted(e.amount for e in release.transaction.entries) == [500, 9500, 10_000]
    assert await platform.balance(goal.account_id) == 0
    assert await platform.balance(owner_account) == owner_before + 9500
    # Payments is down here (as it is while the owner has no payout recipient):
    # the saga keeps the payout pending, stored under its id, and never gives up.
    row = await eventually(
        lambda: platform.goals_sql(
            "SELECT r.step, r.payout_attempt, p.id, p.amount FROM releases r JOIN payouts p ON p.goal_id = r.goal_id "
            "WHERE r.goal_id = %s AND r.last_error <> ''",
            goal.id,
        )
    )
    assert [(step, attempt, str(payout_id), amount) for step, attempt, payout_id, amount in row] == [
        ("PAYOUT", 1, domain.payout_id(goal.id, 1), 9500)
    ]
    assert (await platform.get(goal.id)).status == RELEASED


async def test_a_payout_that_fails_is_retried_under_a_new_id_until_it_succeeds(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.funded_goal(owner, [(backer, 2000)])
    proof = await submit(platform, owner, goal.id)
    await vote(platform, backer, proof.id, approve=True)
    await platform.status(goal.id, RELEASED)
    await eventually(lambda: platform.goals_sql("SELECT 1 FROM payouts WHERE goal_id = %s", goal.id))

    failed = await report_payout(platform, goal.id, 1, "FAILED")
    assert failed.status == RELEASED
    assert (await report_payout(platform, goal.id, 1, "FAILED")) == failed  # a repeat
    assert isinstance(await report_payout(platform, goal.id, 1, "SUCCESS"), domain.PayoutMismatch)  # stale
    assert isinstance(await report_payout(platform, goal.id, 7, "SUCCESS"), domain.PayoutMismatch)
    not_an_ending = await report_payout(platform, goal.id, 1, "PENDING")
    assert isinstance(not_an_ending, domain.OutcomeNotUnderstood)
    assert (await platform.get(goal.id)) == failed

    platform.clock.advance(hours=1)  # the retry is due
    await eventually(lambda: platform.goals_sql("SELECT 1 FROM payouts WHERE goal_id = %s AND attempt = 2", goal.id))
    withdrawn = await report_payout(platform, goal.id, 2, "SUCCESS")
    assert withdrawn.status == WITHDRAWN
    assert (await report_payout(platform, goal.id, 2, "SUCCESS")) == withdrawn
    # Paystack may reverse a transfer that had succeeded: the goal is RELEASED again.
    reversed_ = await report_payout(platform, goal.id, 2, "REVERSED")
    assert reversed_.status == RELEASED
    assert await platform.goals_sql("SELECT step, payout_attempt FROM releases WHERE goal_id = %s", goal.id) == [
        ("PAYOUT", 3)
    ]


async def test_payout_results_are_only_for_released_goals(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.funded_goal(owner, [(backer, 1000)])
    assert isinstance(await report_payout(platform, goal.id, 1, "SUCCESS"), domain.GoalNotReleased)
    assert isinstance(await report_payout(platform, str(uuid.uuid4()), 1, "SUCCESS"), domain.GoalNotFound)
    assert (await platform.get(goal.id)).status == FUNDED


async def test_a_proof_is_rejected_as_soon_as_approval_can_no_longer_happen(platform: Platform) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.funded_goal(owner, [(alice, 6000), (bob, 4000)])
    proof = await submit(platform, owner, goal.id)
    decided = (await vote(platform, alice, proof.id, approve=False)).proof
    assert (decided.status, decided.reject_weight) == (REJECTED, 6000)
    second = await submit(platform, owner, goal.id)
    assert (second.attempt, second.status) == (2, PENDING)


async def test_at_the_window_close_the_majority_of_weight_cast_decides_given_a_quorum(platform: Platform) -> None:
    owner, alice, bob, carol = await platform.users(4)
    goal = await platform.funded_goal(owner, [(alice, 1000), (bob, 1000), (carol, 8000)])
    window = {"hours": platform.settings.voting_window_hours, "seconds": 1}

    first = await submit(platform, owner, goal.id)
    await vote(platform, alice, first.id, approve=True)  # 10% voted: below the 20% quorum
    platform.clock.advance(**window)
    await eventually(lambda: platform.goals_sql("SELECT 1 FROM proofs WHERE id = %s AND status = 'REJECTED'", first.id))

    second = await submit(platform, owner, goal.id)
    await vote(platform, alice, second.id, approve=True)
    await vote(platform, bob, second.id, approve=False)  # quorum, but a tie is no majority
    platform.clock.advance(**window)
    await eventually(
        lambda: platform.goals_sql("SELECT 1 FROM proofs WHERE id = %s AND status = 'REJECTED'", second.id)
    )

    third = await submit(platform, owner, goal.id)
    await vote(platform, alice, third.id, approve=True)
    await vote(platform, bob, third.id, approve=True)  # 20% voted, all of it for
    closed = await rejected(submit(platform, owner, goal.id))
    assert reason(closed, GOALS) == "PROOF_PENDING"
    platform.clock.advance(**window)
    await platform.status(goal.id, RELEASED)
    proofs = (await platform.goals.public.ListProofs(goals_service_pb2.ListProofsRequest(goal_id=goal.id))).proofs
    assert [(p.attempt, p.status) for p in proofs] == [(1, REJECTED), (2, REJECTED), (3, APPROVED)]


async def test_the_third_rejected_proof_refunds_the_goal(platform: Platform) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.funded_goal(owner, [(alice, 7000), (bob, 3000)])
    for attempt in (1, 2, 3):
        proof = await submit(platform, owner, goal.id)
        assert (await vote(platform, alice, proof.id, approve=False)).proof.status == REJECTED
        assert proof.attempt == attempt
    refunding = await platform.get(goal.id)
    assert (refunding.status, refunding.raised_amount) == (REFUNDING, 10_000)
    assert await platform.goals_sql("SELECT count(*) FROM refunds WHERE goal_id = %s", goal.id) == [(2,)]
    after = await rejected(submit(platform, owner, goal.id))
    assert (after.code(), reason(after, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "PROOF_LIMIT_REACHED")


async def test_a_release_replayed_after_a_lost_commit_moves_the_money_once(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.funded_goal(owner, [(backer, 8000)])
    proof = await submit(platform, owner, goal.id)
    await vote(platform, backer, proof.id, approve=True)
    await platform.status(goal.id, RELEASED)
    owner_account = await open_account(platform.ledger, "USER", "NGN", owner.id)
    before = await platform.balance(owner_account)
    # As if the process had crashed after the ledger posting but before its own commit.
    await platform.goals_sql(
        "WITH goal AS (UPDATE goals SET status = 'FUNDED' WHERE id = %s) "
        "UPDATE releases SET step = 'POST', next_attempt_at = now() - interval '1 day' WHERE goal_id = %s",
        goal.id,
        goal.id,
    )
    await platform.status(goal.id, RELEASED)
    assert await platform.balance(owner_account) == before
    assert await platform.balance(goal.account_id) == 0
    release = await platform.ledger.GetTransaction(
        ledger_service_pb2.GetTransactionRequest(transaction_id=f"goal:{goal.id}:release")
    )
    assert sorted(e.amount for e in release.transaction.entries) == [400, 7600, 8000]
