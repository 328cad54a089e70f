"""Races between different actors on one goal: many voters at the same instant, and
operations that exclude each other (approve vs reject vs cancel vs window close vs expiry).

Every test repeats its race several times on new goals, since one run may happen to
take the locks in an order that hides a bug. After each race the database must show
one decision: the tally equals the stored votes, and a goal has at most one outflow
(a release or a refund, never both), whatever order the locks were taken in.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import grpc
import psycopg
import pytest
from gofund.goals.v1 import goals_pb2, goals_service_pb2

from tests.helpers import eventually, reason, rejected
from tests.integration.fixtures.goals import GOALS, FakeClock, Platform, User
from tests.integration.test_goals_votes import submit, vote

pytestmark = pytest.mark.asyncio

ROUNDS = 6
FUNDED, RELEASED, REFUNDING = (
    goals_pb2.GOAL_STATUS_FUNDED,
    goals_pb2.GOAL_STATUS_RELEASED,
    goals_pb2.GOAL_STATUS_REFUNDING,
)
PENDING, APPROVED, REJECTED = (
    goals_pb2.PROOF_STATUS_PENDING,
    goals_pb2.PROOF_STATUS_APPROVED,
    goals_pb2.PROOF_STATUS_REJECTED,
)


async def outcome(platform: Platform, call: Any) -> Any:
    """The response, or the error's (code, reason): a race's loser is told why, it never fails silently."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return (exc.code(), reason(exc, GOALS))


async def stored_tally(platform: Platform, proof_id: str) -> tuple[int, int, int]:
    rows = await platform.goals_sql(
        "SELECT coalesce(sum(weight) FILTER (WHERE is_approved), 0), "
        "coalesce(sum(weight) FILTER (WHERE NOT is_approved), 0), count(*) FROM votes WHERE proof_id = %s",
        proof_id,
    )
    approve, reject, count = rows[0]
    return int(approve), int(reject), int(count)


async def outflows(platform: Platform, goal_id: str) -> tuple[str | None, int, int]:
    """(goals.outflow, release rows, refund rows of the goal's own refund) for one goal."""
    rows = await platform.goals_sql(
        "SELECT g.outflow, (SELECT count(*) FROM releases r WHERE r.goal_id = g.id), "
        "(SELECT count(*) FROM refunds f WHERE f.goal_id = g.id AND f.outflow IS NOT NULL) "
        "FROM goals g WHERE g.id = %s",
        goal_id,
    )
    outflow, releases, refunds = rows[0]
    return outflow, int(releases), int(refunds)


async def assert_one_outflow(platform: Platform, goal_id: str, backers: int) -> str:
    outflow, releases, refunds = await outflows(platform, goal_id)
    assert outflow in ("RELEASE", "REFUND"), outflow
    if outflow == "RELEASE":
        assert (releases, refunds) == (1, 0)
    else:
        assert (releases, refunds) == (0, backers)
    return str(outflow)


async def test_ten_contributors_voting_at_the_same_instant_are_all_counted(platform: Platform) -> None:
    owner, *voters = await platform.users(11)
    for _ in range(ROUNDS):
        # 1,000 each: five approvals (5,000 of 10,000, not a majority) and four rejections
        # (approval is still possible) decide nothing, so every one of the nine must be counted.
        goal = await platform.funded_goal(owner, [(v, 1000) for v in voters])
        proof = await submit(platform, owner, goal.id)
        casting = voters[:9]
        answers = await asyncio.gather(
            *(vote(platform, voter, proof.id, approve=i < 5) for i, voter in enumerate(casting))
        )
        assert all(a.vote.weight == 1000 for a in answers)
        stored = (await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof.id))).proof
        assert (stored.approve_weight, stored.reject_weight, stored.voter_count) == (5000, 4000, 9)
        assert (stored.approve_weight, stored.reject_weight, stored.voter_count) == await stored_tally(
            platform, proof.id
        )
        assert stored.status == PENDING
        # The tenth approval makes 6,000 > 5,000.
        last = await vote(platform, voters[9], proof.id, approve=True)
        assert last.proof.status == APPROVED
        assert await assert_one_outflow(platform, goal.id, backers=10) == "RELEASE"


async def test_every_approval_at_once_is_counted_until_the_decision_and_refused_after(platform: Platform) -> None:
    owner, *voters = await platform.users(9)
    for _ in range(ROUNDS):
        goal = await platform.funded_goal(owner, [(v, 1000) for v in voters])
        proof = await submit(platform, owner, goal.id)
        answers = await asyncio.gather(*(outcome(platform, vote(platform, v, proof.id, approve=True)) for v in voters))
        accepted = [a for a in answers if not isinstance(a, tuple)]
        refused = [a for a in answers if isinstance(a, tuple)]
        # 8,000 raised: the fifth approval (5,000 > 4,000) decides; the other three are told voting closed.
        assert len(accepted) == 5
        assert refused == [(grpc.StatusCode.FAILED_PRECONDITION, "VOTING_CLOSED")] * 3
        assert sorted(a.proof.voter_count for a in accepted) == [1, 2, 3, 4, 5]
        assert [a.proof.status for a in accepted].count(APPROVED) == 1
        stored = (await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof.id))).proof
        assert (stored.approve_weight, stored.reject_weight, stored.voter_count, stored.status) == (
            5000, 0, 5, APPROVED,
        )  # fmt: skip
        assert await stored_tally(platform, proof.id) == (5000, 0, 5)
        assert await assert_one_outflow(platform, goal.id, backers=8) == "RELEASE"


async def test_an_approval_and_a_rejection_at_once_decide_once_on_the_stored_votes(platform: Platform) -> None:
    owner, big, small = await platform.users(3)
    for _ in range(ROUNDS):
        goal = await platform.funded_goal(owner, [(big, 6000), (small, 4000)])
        proof = await submit(platform, owner, goal.id)
        approve, reject = await asyncio.gather(
            outcome(platform, vote(platform, big, proof.id, approve=True)),
            outcome(platform, vote(platform, small, proof.id, approve=False)),
        )
        stored = (await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof.id))).proof
        # 6,000 of 10,000 approves on its own; a rejection of 4,000 first leaves approval possible.
        assert approve.proof.status == APPROVED
        assert stored.status == APPROVED
        if isinstance(reject, tuple):  # the approval came first
            assert reject == (grpc.StatusCode.FAILED_PRECONDITION, "VOTING_CLOSED")
            assert (stored.approve_weight, stored.reject_weight, stored.voter_count) == (6000, 0, 1)
        else:  # the rejection came first and was counted
            assert reject.proof.status == PENDING
            assert (stored.approve_weight, stored.reject_weight, stored.voter_count) == (6000, 4000, 2)
        assert (stored.approve_weight, stored.reject_weight, stored.voter_count) == await stored_tally(
            platform, proof.id
        )
        assert await assert_one_outflow(platform, goal.id, backers=2) == "RELEASE"
        await platform.until(goal.id, lambda g: g.status == RELEASED, what="released")


async def test_an_approval_racing_the_owners_cancel_releases_or_refunds_never_both(platform: Platform) -> None:
    owner, big, small = await platform.users(3)
    seen: set[str] = set()
    for _ in range(ROUNDS):
        goal = await platform.funded_goal(owner, [(big, 6000), (small, 4000)])
        proof = await submit(platform, owner, goal.id)
        voted, cancelled = await asyncio.gather(
            outcome(platform, vote(platform, big, proof.id, approve=True)),
            outcome(
                platform,
                platform.goals.public.CancelGoal(
                    goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Changed plans"), metadata=owner.auth
                ),
            ),
        )
        winner = await assert_one_outflow(platform, goal.id, backers=2)
        seen.add(winner)
        stored = (await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof.id))).proof
        if winner == "RELEASE":
            assert voted.proof.status == APPROVED
            assert cancelled == (grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_CANCELLABLE")
            assert stored.status == APPROVED
        else:
            assert voted == (grpc.StatusCode.FAILED_PRECONDITION, "VOTING_CLOSED")
            assert cancelled.goal.status == REFUNDING
            assert (stored.status, stored.voter_count) == (REJECTED, 0)
    assert seen  # which side wins is the race's; that only one does is the test


async def reject_twice(platform: Platform, owner: User, rejecter: User, goal_id: str) -> None:
    for _ in range(2):
        proof = await submit(platform, owner, goal_id)
        answer = await vote(platform, rejecter, proof.id, approve=False)
        assert answer.proof.status == REJECTED


async def test_an_approval_racing_the_third_rejection_at_window_close_decides_once(platform: Platform) -> None:
    owner, approver, rejecter = await platform.users(3)
    for _ in range(ROUNDS):
        # 4,000 + 6,000: the rejecter alone rejects; the approver (4,000) alone does not approve,
        # so the third proof is decided by the approver's vote and the window closing together.
        goal = await platform.funded_goal(owner, [(approver, 4000), (rejecter, 6000)])
        await reject_twice(platform, owner, rejecter, goal.id)
        third = await submit(platform, owner, goal.id)
        # A second goals process whose clock has reached the window's end: its scheduler
        # closes the vote (4,000 cast of 10,000 meets the 20% quorum: approved if counted,
        # rejected, the third time, if not) while the first takes the vote.
        late = FakeClock()
        late.now = third.voting_ends_at.ToDatetime().replace(tzinfo=platform.clock.now.tzinfo)
        closer = await platform.start_goals(late)
        try:
            voted, _ = await asyncio.gather(
                outcome(platform, vote(platform, approver, third.id, approve=True)),
                closer.scheduler.close_votes(),
            )
            # The closing process skips a goal row the vote held locked: it looks again.
            stored = await eventually(lambda proof_id=third.id, closer=closer: _closed_vote(platform, closer, proof_id))
        finally:
            await platform.stop_goals(closer)
        winner = await assert_one_outflow(platform, goal.id, backers=2)
        if winner == "RELEASE":
            assert voted.vote.weight == 4000
            assert (stored.status, stored.approve_weight) == (APPROVED, 4000)
        else:
            assert voted == (grpc.StatusCode.FAILED_PRECONDITION, "VOTING_CLOSED")
            assert (stored.status, stored.voter_count) == (REJECTED, 0)
            assert (await platform.get(goal.id)).status == REFUNDING


async def _closed_vote(platform: Platform, closer: Any, proof_id: str) -> Any:
    await closer.scheduler.close_votes()
    proof = (await platform.goals.public.GetProof(goals_service_pb2.GetProofRequest(proof_id=proof_id))).proof
    return proof if proof.status != PENDING else None


async def test_expiry_cancel_and_a_late_payment_at_the_deadline_refund_each_payment_once(platform: Platform) -> None:
    owner, first, second, late_payer = await platform.users(4)
    for _ in range(ROUNDS):
        goal = await platform.goal(owner, target=50_000, deadline=platform.deadline(hours=2))
        for backer in (first, second):
            await platform.contribute(goal, backer, 1000)
        late_contribution = await platform.pending_contribution(goal, late_payer, 700)
        late_payment = str(uuid.uuid4())
        await platform.capture(goal, 700, late_payment)
        after_deadline = FakeClock()
        after_deadline.now = platform.clock.now + timedelta(hours=3)
        expirer = await platform.start_goals(after_deadline)
        try:
            results = await asyncio.gather(
                expirer.scheduler.expire_goals(),
                outcome(
                    platform,
                    platform.goals.public.CancelGoal(
                        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Closing"), metadata=owner.auth
                    ),
                ),
                outcome(platform, platform.confirm(late_contribution, late_payment, 700, goal.currency)),
            )
            await eventually(lambda goal_id=goal.id: _closed(platform, goal_id))
        finally:
            await platform.stop_goals(expirer)
        cancelled, refused = results[1], results[2]
        assert refused is None
        _, _, late = await platform.contribution_state(late_contribution)
        refunds = await platform.goals_sql(
            "SELECT contribution_id, outflow FROM refunds WHERE goal_id = %s ORDER BY outflow NULLS LAST", goal.id
        )
        outflow, releases, goal_refunds = await outflows(platform, goal.id)
        assert (outflow, releases) == ("REFUND", 0)
        if late:  # the payment came after the close: refunded on its own
            assert goal_refunds == 2
            assert [str(r[0]) for r in refunds if r[1] is None] == [late_contribution]
        else:  # it counted before the close: refunded with the others
            assert goal_refunds == 3
        assert len(refunds) == 3  # one refund per payment, never two
        cause = (await platform.goals_sql("SELECT refund_cause FROM goals WHERE id = %s", goal.id))[0][0]
        if isinstance(cancelled, tuple):
            assert cancelled == (grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_CANCELLABLE")
            assert cause == "EXPIRED"
        else:
            assert cause == "CANCELLED"


async def _closed(platform: Platform, goal_id: str) -> bool:
    return (await platform.get(goal_id)).status == REFUNDING


async def test_the_database_refuses_a_second_outflow_whatever_the_code_does(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.funded_goal(owner, [(backer, 3000)])
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Closing"), metadata=owner.auth
    )
    proof_id = str(uuid.uuid4())
    await platform.goals_sql(
        "INSERT INTO proofs (id, goal_id, owner_id, title, description, media_urls, status, attempt, approve_weight, "
        "reject_weight, voting_ends_at, voter_count) VALUES (%s, %s, %s, 'x', '', '[]', 'APPROVED', 1, 0, 0, now(), 0)",
        proof_id, goal.id, owner.id,
    )  # fmt: skip
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await platform.goals_sql(
            "INSERT INTO releases (goal_id, proof_id, amount, fee, step, payout_attempt, failures, next_attempt_at, "
            "last_error) VALUES (%s, %s, 3000, 150, 'POST', 1, 0, now(), '')",
            goal.id, proof_id,
        )  # fmt: skip
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        await platform.goals_sql("UPDATE goals SET outflow = 'RELEASE' WHERE id = %s", goal.id)
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        await platform.goals_sql("UPDATE goals SET outflow = NULL WHERE id = %s", goal.id)
    error = await rejected(submit(platform, owner, goal.id))
    assert reason(error, GOALS) == "GOAL_NOT_FUNDED"
