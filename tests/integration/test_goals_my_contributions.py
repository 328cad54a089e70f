"""A person's own contributions across goals (ListMyContributions), over real gRPC on real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from gofund.goals.v1 import goals_pb2, goals_service_pb2

from tests.helpers import reason, rejected
from tests.integration.fixtures.goals import GOALS, Platform, User

pytestmark = pytest.mark.asyncio

OPEN, REFUNDED_GOAL = goals_pb2.GOAL_STATUS_OPEN, goals_pb2.GOAL_STATUS_REFUNDED
PENDING = goals_pb2.CONTRIBUTION_STATUS_PENDING
SUCCEEDED = goals_pb2.CONTRIBUTION_STATUS_SUCCEEDED
FAILED = goals_pb2.CONTRIBUTION_STATUS_FAILED
REFUNDED = goals_pb2.CONTRIBUTION_STATUS_REFUNDED


async def mine(platform: Platform, user: User, **fields: Any) -> goals_service_pb2.ListMyContributionsResponse:
    request = goals_service_pb2.ListMyContributionsRequest(**fields)
    return await platform.goals.public.ListMyContributions(request, metadata=user.auth)


async def refunded_contribution(platform: Platform, owner: User, payer: User, amount: int) -> tuple[str, str]:
    """(goal id, contribution id) of a contribution that succeeded, then was refunded when its goal was
    cancelled: the refund as payments completes it (GOAL -> ESCROW posted, then its outcome)."""
    goal = await platform.goal(owner, target=amount, title="Roof for the clinic")
    contribution_id, payment_id = await platform.contribute(goal, payer, amount)
    await platform.status(goal.id, goals_pb2.GOAL_STATUS_FUNDED)
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="The council paid for it"), metadata=owner.auth
    )
    await platform.refund_posting(goal, amount, payment_id)
    assert await platform.refunded(contribution_id, payment_id) is None
    await platform.status(goal.id, REFUNDED_GOAL)
    return goal.id, contribution_id


async def test_a_person_sees_only_their_own_contributions_across_goals_in_every_status_newest_first(
    platform: Platform,
) -> None:
    owner, other = await platform.users(2)
    payer = await platform.fresh_user()
    refunded_goal, refunded_id = await refunded_contribution(platform, owner, payer, 4000)
    books = await platform.goal(owner, title="Books for Ikeja")
    paid_id, _ = await platform.contribute(books, payer, 300)
    failed_id = await platform.pending_contribution(books, payer, 200)
    assert await platform.fail(failed_id, str(uuid.uuid4()), "Declined") is None
    await platform.contribute(books, other, 700)
    water = await platform.goal(owner, title="Clean water")
    pending_id = await platform.pending_contribution(water, payer, 150)

    listed = await mine(platform, payer)

    rows = [
        (item.id, item.goal_id, item.status, item.amount, c.goal_title, c.goal_status)
        for c in listed.contributions
        for item in [c.contribution]
    ]
    assert rows == [
        (pending_id, water.id, PENDING, 150, "Clean water", OPEN),
        (failed_id, books.id, FAILED, 200, "Books for Ikeja", OPEN),
        (paid_id, books.id, SUCCEEDED, 300, "Books for Ikeja", OPEN),
        (refunded_id, refunded_goal, REFUNDED, 4000, "Roof for the clinic", REFUNDED_GOAL),
    ]
    assert {c.contribution.user_id for c in listed.contributions} == {payer.id}
    assert listed.next_page_token == ""
    # The other contributor's list has theirs, never the payer's.
    theirs = await mine(platform, other)
    assert payer.id not in {c.contribution.user_id for c in theirs.contributions}


async def test_pages_follow_created_at_then_id_so_contributions_made_in_one_instant_are_each_listed_once(
    platform: Platform,
) -> None:
    owner = await platform.user()
    payer = await platform.fresh_user()
    goal = await platform.goal(owner)
    made = [await platform.pending_contribution(goal, payer, 100 + i) for i in range(5)]
    # Three of them at the same instant: only the id tells them apart.
    await platform.goals_sql(
        "UPDATE contributions SET created_at = '2030-01-01T00:00:00Z' WHERE id = ANY(%s::uuid[])", made[1:4]
    )

    seen: list[str] = []
    token = ""
    for _ in range(len(made) + 1):
        page = await mine(platform, payer, page_size=2, page_token=token)
        assert len(page.contributions) <= 2
        seen.extend(c.contribution.id for c in page.contributions)
        token = page.next_page_token
        if not token:
            break
    tied = sorted(made[1:4], key=uuid.UUID, reverse=True)
    assert seen == [*tied, made[4], made[0]]


async def test_the_status_filter_lists_one_status_and_its_token_pages_only_that_filter_for_that_person(
    platform: Platform,
) -> None:
    owner, other = await platform.users(2)
    payer = await platform.fresh_user()
    _, refunded_id = await refunded_contribution(platform, owner, payer, 2500)
    goal = await platform.goal(owner)
    pending = [await platform.pending_contribution(goal, payer, 100) for _ in range(2)]
    paid_id, _ = await platform.contribute(goal, payer, 500)

    refunds = await mine(platform, payer, status=REFUNDED)
    assert [(c.contribution.id, c.contribution.status) for c in refunds.contributions] == [(refunded_id, REFUNDED)]
    succeeded = await mine(platform, payer, status=SUCCEEDED)
    assert [c.contribution.id for c in succeeded.contributions] == [paid_id]
    first = await mine(platform, payer, status=PENDING, page_size=1)
    second = await mine(platform, payer, status=PENDING, page_size=1, page_token=first.next_page_token)
    assert [c.contribution.id for c in [*first.contributions, *second.contributions]] == list(reversed(pending))
    assert second.next_page_token == ""

    other_filter = await rejected(mine(platform, payer, status=SUCCEEDED, page_token=first.next_page_token))
    assert (other_filter.code(), reason(other_filter, GOALS)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    someone_else = await rejected(mine(platform, other, status=PENDING, page_token=first.next_page_token))
    assert reason(someone_else, GOALS) == "INVALID_PAGE_TOKEN"


async def test_listing_my_contributions_needs_a_login_and_refuses_bad_input(platform: Platform) -> None:
    payer = await platform.user()
    for _ in range(2):
        await platform.goal(payer)
    anonymous = await rejected(
        platform.goals.public.ListMyContributions(goals_service_pb2.ListMyContributionsRequest())
    )
    assert (anonymous.code(), reason(anonymous, GOALS)) == (grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REQUIRED")
    expired = await rejected(
        platform.goals.public.ListMyContributions(
            goals_service_pb2.ListMyContributionsRequest(), metadata=(("authorization", "Bearer not-a-token"),)
        )
    )
    assert (expired.code(), reason(expired, GOALS)) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
    garbage = await rejected(mine(platform, payer, page_token="garbage!"))
    assert (garbage.code(), reason(garbage, GOALS)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    # A token of another list of this service (ListGoals) is not a position in this one.
    goals_token = (
        await platform.goals.public.ListGoals(goals_service_pb2.ListGoalsRequest(owner_id=payer.id, page_size=1))
    ).next_page_token
    assert goals_token
    assert reason(await rejected(mine(platform, payer, page_token=goals_token)), GOALS) == "INVALID_PAGE_TOKEN"
    assert reason(await rejected(mine(platform, payer, status=42)), GOALS) == "INVALID_STATUS"
    assert reason(await rejected(mine(platform, payer, page_size=-1)), GOALS) == "INVALID_PAGE_SIZE"
