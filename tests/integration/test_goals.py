"""Goals and contributions over real gRPC, with real identity and ledger on real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import grpc
import pytest
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc
from gofund.payments.v1 import payments_pb2
from google.protobuf import field_mask_pb2

from services.goals import domain
from services.stack import embedded
from tests.helpers import eventually, reason, rejected
from tests.integration.fixtures.goals import GOALS, Platform

pytestmark = pytest.mark.asyncio

OPEN, FUNDED = goals_pb2.GOAL_STATUS_OPEN, goals_pb2.GOAL_STATUS_FUNDED
REFUNDING, REFUNDED = goals_pb2.GOAL_STATUS_REFUNDING, goals_pb2.GOAL_STATUS_REFUNDED
PENDING = goals_pb2.CONTRIBUTION_STATUS_PENDING
SUCCEEDED = goals_pb2.CONTRIBUTION_STATUS_SUCCEEDED
FAILED = goals_pb2.CONTRIBUTION_STATUS_FAILED
REFUNDED_CONTRIBUTION = goals_pb2.CONTRIBUTION_STATUS_REFUNDED


# -- creating and reading goals ------------------------------------------------------------
async def test_a_new_goal_is_open_with_an_empty_goal_account_of_its_own(platform: Platform) -> None:
    owner = await platform.user()
    goal = await platform.goal(owner, target=50_000, currency="GHS", title="  Clean water  ")
    assert (goal.status, goal.owner_id, goal.title, goal.currency) == (OPEN, owner.id, "Clean water", "GHS")
    assert (goal.raised_amount, goal.contributor_count, goal.cancel_reason) == (0, 0, "")
    assert not goal.HasField("funded_at")
    assert await platform.balance(goal.account_id) == 0
    assert (await platform.get(goal.id)) == goal


async def test_invalid_goals_are_refused_naming_every_bad_field(platform: Platform) -> None:
    owner = await platform.user()
    request = goals_service_pb2.CreateGoalRequest(
        title=" ab ", description="x" * 10_001, target_amount=0, currency="EUR", request_id="r" * 201
    )
    error = await rejected(platform.goals.public.CreateGoal(request, metadata=owner.auth))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error, GOALS) == "INVALID_TITLE"
    for field in ("title", "description", "target_amount", "currency", "deadline", "request_id"):
        assert field in (error.details() or "")
    too_big = await rejected(platform.goal(owner, target=10**12 + 1))
    assert reason(too_big, GOALS) == "INVALID_TARGET_AMOUNT"


@pytest.mark.parametrize(("delta", "accepted"), [({"minutes": 59}, False), ({"minutes": 61}, True),
                                                 ({"days": 364}, True), ({"days": 366}, False)])  # fmt: skip
async def test_the_deadline_is_between_an_hour_and_a_year_ahead(
    platform: Platform, delta: dict[str, float], accepted: bool
) -> None:
    owner = await platform.user()
    call = platform.goal(owner, deadline=platform.deadline(**delta))
    if accepted:
        assert (await call).status == OPEN
    else:
        assert reason(await rejected(call), GOALS) == "INVALID_DEADLINE"


async def test_creating_a_goal_needs_a_login_and_the_goals_create_permission(platform: Platform) -> None:
    anonymous = await rejected(platform.goals.public.CreateGoal(goals_service_pb2.CreateGoalRequest()))
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    user = await platform.fresh_user()
    await platform.sql(platform.settings.identity_database_url, "DELETE FROM user_roles WHERE user_id = %s", user.id)
    denied = await rejected(platform.goal(user))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(denied, GOALS) == "MISSING_PERMISSION"


async def test_a_request_id_makes_creation_idempotent_and_refuses_other_input(platform: Platform) -> None:
    owner = await platform.fresh_user()
    deadline = platform.deadline(days=10)
    first, second = await asyncio.gather(
        platform.goal(owner, request_id="create-1", deadline=deadline),
        platform.goal(owner, request_id="create-1", deadline=deadline),
    )
    assert first == second
    assert await platform.goals_sql("SELECT count(*) FROM goals WHERE owner_id = %s", owner.id) == [(1,)]
    other = await rejected(platform.goal(owner, request_id="create-1", deadline=deadline, title="Another title"))
    assert other.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(other, GOALS) == "IDEMPOTENCY_KEY_REUSED"
    someone_else = await platform.user()
    assert (await platform.goal(someone_else, request_id="create-1", deadline=deadline)).id != first.id


async def test_no_goal_is_created_when_the_ledger_is_down(platform: Platform) -> None:
    cut_off = await platform.start_goals(ledger_target=f"127.0.0.1:{embedded.free_port()}")
    try:
        owner = await platform.user()
        title = f"Unreachable ledger {uuid.uuid4().hex[:8]}"
        request = goals_service_pb2.CreateGoalRequest(
            title=title, target_amount=100, currency="NGN", deadline=platform.deadline()
        )
        error = await rejected(cut_off.public.CreateGoal(request, metadata=owner.auth))
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert reason(error, GOALS) == "LEDGER_UNAVAILABLE"
        assert await platform.goals_sql("SELECT count(*) FROM goals WHERE title = %s", title) == [(0,)]
    finally:
        await platform.stop_goals(cut_off)


async def test_get_goal_checks_the_id(platform: Platform) -> None:
    bad = await rejected(platform.goals.public.GetGoal(goals_service_pb2.GetGoalRequest(goal_id="nope")))
    assert (bad.code(), reason(bad, GOALS)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_GOAL_ID")
    missing = await rejected(platform.get(str(uuid.uuid4())))
    assert (missing.code(), reason(missing, GOALS)) == (grpc.StatusCode.NOT_FOUND, "GOAL_NOT_FOUND")


async def test_goals_are_listed_newest_first_by_filter_and_page(platform: Platform) -> None:
    owner = await platform.fresh_user()
    created = []
    for _ in range(3):
        created.append(await platform.goal(owner))
        platform.clock.advance(seconds=1)
    list_goals = platform.goals.public.ListGoals
    first = await list_goals(goals_service_pb2.ListGoalsRequest(owner_id=owner.id, page_size=2))
    second = await list_goals(
        goals_service_pb2.ListGoalsRequest(owner_id=owner.id, page_size=2, page_token=first.next_page_token)
    )
    assert [g.id for g in [*first.goals, *second.goals]] == [g.id for g in reversed(created)]
    assert second.next_page_token == ""
    opened = await list_goals(goals_service_pb2.ListGoalsRequest(owner_id=owner.id, status=OPEN))
    assert len(opened.goals) == 3
    assert (await list_goals(goals_service_pb2.ListGoalsRequest(owner_id=owner.id, status=FUNDED))).goals == []
    everyone = await list_goals(goals_service_pb2.ListGoalsRequest(page_size=1))
    assert len(everyone.goals) == 1
    assert everyone.next_page_token

    other_filter = await rejected(
        list_goals(goals_service_pb2.ListGoalsRequest(status=OPEN, page_token=first.next_page_token))
    )
    assert reason(other_filter, GOALS) == "INVALID_PAGE_TOKEN"
    assert reason(await rejected(list_goals(goals_service_pb2.ListGoalsRequest(page_token="garbage!"))), GOALS) == (
        "INVALID_PAGE_TOKEN"
    )
    assert reason(await rejected(list_goals(goals_service_pb2.ListGoalsRequest(status=42))), GOALS) == "INVALID_STATUS"
    assert (
        reason(await rejected(list_goals(goals_service_pb2.ListGoalsRequest(owner_id="x"))), GOALS)
        == "INVALID_OWNER_ID"
    )
    assert (
        reason(await rejected(list_goals(goals_service_pb2.ListGoalsRequest(page_size=-1))), GOALS)
        == "INVALID_PAGE_SIZE"
    )


# -- changing and cancelling -----------------------------------------------------------------
async def test_the_owner_changes_title_and_description_while_the_goal_is_open(platform: Platform) -> None:
    owner, stranger = await platform.users(2)
    goal = await platform.goal(owner)
    update = platform.goals.public.UpdateGoal
    changed = (
        await update(goals_service_pb2.UpdateGoalRequest(goal_id=goal.id, title="New title"), metadata=owner.auth)
    ).goal
    assert (changed.title, changed.description) == ("New title", goal.description)
    cleared = (
        await update(
            goals_service_pb2.UpdateGoalRequest(
                goal_id=goal.id, update_mask=field_mask_pb2.FieldMask(paths=["description"])
            ),
            metadata=owner.auth,
        )
    ).goal
    assert (cleared.title, cleared.description) == ("New title", "")
    assert (cleared.target_amount, cleared.deadline) == (goal.target_amount, goal.deadline)

    not_owner = await rejected(
        update(goals_service_pb2.UpdateGoalRequest(goal_id=goal.id, title="Mine now"), metadata=stranger.auth)
    )
    assert (not_owner.code(), reason(not_owner, GOALS)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_GOAL_OWNER")
    bad_mask = await rejected(
        update(
            goals_service_pb2.UpdateGoalRequest(
                goal_id=goal.id, update_mask=field_mask_pb2.FieldMask(paths=["target_amount"])
            ),
            metadata=owner.auth,
        )
    )
    assert reason(bad_mask, GOALS) == "INVALID_UPDATE_MASK"
    short = await rejected(
        update(goals_service_pb2.UpdateGoalRequest(goal_id=goal.id, title="no"), metadata=owner.auth)
    )
    assert reason(short, GOALS) == "INVALID_TITLE"

    backer = await platform.user()
    await platform.contribute(goal, backer, goal.target_amount)
    await platform.status(goal.id, FUNDED)
    closed = await rejected(
        update(goals_service_pb2.UpdateGoalRequest(goal_id=goal.id, title="Too late"), metadata=owner.auth)
    )
    assert (closed.code(), reason(closed, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_OPEN")


async def test_cancelling_a_goal_without_contributions_refunds_it_at_once_and_keeps_the_first_reason(
    platform: Platform,
) -> None:
    owner, stranger = await platform.users(2)
    goal = await platform.goal(owner)
    cancel = platform.goals.public.CancelGoal
    not_owner = await rejected(
        cancel(goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="x"), metadata=stranger.auth)
    )
    assert reason(not_owner, GOALS) == "NOT_GOAL_OWNER"
    no_reason = await rejected(
        cancel(goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="  "), metadata=owner.auth)
    )
    assert reason(no_reason, GOALS) == "INVALID_CANCEL_REASON"
    cancelled = (
        await cancel(goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Plans changed"), metadata=owner.auth)
    ).goal
    assert (cancelled.status, cancelled.cancel_reason) == (REFUNDED, "Plans changed")
    again = (
        await cancel(goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Other"), metadata=owner.auth)
    ).goal
    assert again == cancelled


async def test_a_goal_that_expired_cannot_be_cancelled(platform: Platform) -> None:
    owner = await platform.user()
    goal = await platform.goal(owner, deadline=platform.deadline(hours=2))
    platform.clock.advance(hours=3)
    await platform.status(goal.id, REFUNDED)
    error = await rejected(
        platform.goals.public.CancelGoal(
            goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="late"), metadata=owner.auth
        )
    )
    assert (error.code(), reason(error, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_CANCELLABLE")


# -- contributions ---------------------------------------------------------------------------
async def test_contributions_are_validated_before_payments_is_asked(platform: Platform) -> None:
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner)

    def request(**fields: object) -> goals_service_pb2.CreateContributionRequest:
        values: dict[str, object] = {
            "goal_id": goal.id, "amount": 500, "currency": "NGN", "idempotency_key": uuid.uuid4().hex,
        }  # fmt: skip
        values.update(fields)
        return goals_service_pb2.CreateContributionRequest(**values)  # type: ignore[arg-type]

    create = platform.goals.public.CreateContribution
    cases = [
        (request(amount=0), "INVALID_AMOUNT"),
        (request(amount=-5), "INVALID_AMOUNT"),
        (request(amount=10**12 + 1), "INVALID_AMOUNT"),
        (request(currency="GHS"), "CURRENCY_MISMATCH"),
        (request(idempotency_key=""), "MISSING_IDEMPOTENCY_KEY"),
        (request(goal_id="x"), "INVALID_GOAL_ID"),
    ]
    for bad, expected in cases:
        error = await rejected(create(bad, metadata=payer.auth))
        assert (error.code(), reason(error, GOALS)) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    missing = await rejected(create(request(goal_id=str(uuid.uuid4())), metadata=payer.auth))
    assert reason(missing, GOALS) == "GOAL_NOT_FOUND"
    anonymous = await rejected(create(request()))
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED

    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="closing"), metadata=owner.auth
    )
    closed = await rejected(create(request(), metadata=payer.auth))
    assert (closed.code(), reason(closed, GOALS)) == (grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_OPEN")


async def test_a_contribution_retried_while_payments_is_down_stays_one_pending_contribution(
    platform: Platform,
) -> None:
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner)
    key = uuid.uuid4().hex
    request = goals_service_pb2.CreateContributionRequest(
        goal_id=goal.id, amount=700, currency="NGN", idempotency_key=key
    )
    attempts = [platform.goals.public.CreateContribution(request, metadata=payer.auth) for _ in range(3)]
    for error in await asyncio.gather(*(rejected(a) for a in attempts)):
        assert (error.code(), reason(error, GOALS)) == (grpc.StatusCode.UNAVAILABLE, "PAYMENTS_UNAVAILABLE")
    rows = await platform.goals_sql("SELECT status, amount, payment_id FROM contributions WHERE goal_id = %s", goal.id)
    assert rows == [("PENDING", 700, None)]
    reused = goals_service_pb2.CreateContributionRequest(
        goal_id=goal.id, amount=800, currency="NGN", idempotency_key=key
    )
    error = await rejected(platform.goals.public.CreateContribution(reused, metadata=payer.auth))
    assert reason(error, GOALS) == "IDEMPOTENCY_KEY_REUSED"


async def test_a_confirmed_contribution_counts_its_payer_and_a_repeat_changes_nothing(platform: Platform) -> None:
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner)
    contribution_id = await platform.pending_contribution(goal, payer, 1200)
    payment_id = str(uuid.uuid4())
    await platform.capture(goal, 1200, payment_id)
    assert await platform.confirm(contribution_id, payment_id, 1200, "NGN") is None
    assert await platform.confirm(contribution_id, payment_id, 1200, "NGN") is None
    assert await platform.contribution_state(contribution_id) == ("SUCCEEDED", payment_id, False)
    seen = await platform.until(goal.id, lambda g: g.raised_amount == 1200 and g.contributor_count == 1)
    assert seen.status == OPEN

    # Outcomes that contradict what goals recorded are stepped over (logged as an error)
    # and change nothing.
    for amount, currency, paid_with in ((1300, "NGN", payment_id), (1200, "GHS", payment_id),
                                        (1200, "NGN", str(uuid.uuid4()))):  # fmt: skip
        mismatch = await platform.confirm(contribution_id, paid_with, amount, currency)
        assert isinstance(mismatch, domain.PaymentMismatch)
    assert isinstance(await platform.confirm(str(uuid.uuid4()), payment_id, 1, "NGN"), domain.ContributionNotFound)
    assert isinstance(await platform.confirm("x", payment_id, 1, "NGN"), domain.ContributionNotFound)
    assert isinstance(await platform.fail(contribution_id, payment_id), domain.ContributionAlreadySucceeded)
    assert await platform.contribution_state(contribution_id) == ("SUCCEEDED", payment_id, False)
    assert (await platform.get(goal.id)).raised_amount == 1200


async def test_a_failed_payment_fails_its_contribution_once_and_for_all(platform: Platform) -> None:
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner)
    contribution_id = await platform.pending_contribution(goal, payer, 900)
    payment_id = str(uuid.uuid4())
    assert await platform.fail(contribution_id, payment_id, "Declined") is None
    assert await platform.fail(contribution_id, payment_id, "Declined") is None
    assert await platform.contribution_state(contribution_id) == ("FAILED", payment_id, False)
    assert await platform.goals_sql("SELECT failure_reason FROM contributions WHERE id = %s", contribution_id) == [
        ("Declined",)
    ]
    assert isinstance(await platform.confirm(contribution_id, payment_id, 900, "NGN"), domain.ContributionAlreadyFailed)
    assert isinstance(await platform.refunded(contribution_id, payment_id), domain.ContributionNotSucceeded)
    assert await platform.contribution_state(contribution_id) == ("FAILED", payment_id, False)


async def test_an_outcome_goals_cannot_apply_is_logged_as_an_error_and_stepped_over(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = str(uuid.uuid4())
    with caplog.at_level(logging.ERROR, logger="gofund.goals.follower"):
        refused = await platform.confirm(unknown, str(uuid.uuid4()), 100, "NGN")
        # A kind this goals does not know (a newer payments): no oneof set.
        newer = await platform.deliver(payments_pb2.PaymentOutcome(outcome_id="charge:x:disputed"))
    assert isinstance(refused, domain.ContributionNotFound)
    assert isinstance(newer, domain.OutcomeNotUnderstood)
    logged = [r for r in caplog.records if r.name == "gofund.goals.follower"]
    assert [(r.levelname, r.rule) for r in logged] == [  # type: ignore[attr-defined]
        ("ERROR", "ContributionNotFound"), ("ERROR", "OutcomeNotUnderstood"),
    ]  # fmt: skip
    assert unknown in logged[0].payload  # type: ignore[attr-defined]
    # The stream moved past both: the cursor holds the last one's seq.
    ((cursor,),) = await platform.goals_sql("SELECT last_seq FROM payments_cursor")
    assert cursor >= 2


async def test_a_batch_holding_an_outcome_goals_cannot_apply_applies_the_others_and_steps_over_that_one(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner, target=10_000)
    first, second = [await platform.pending_contribution(goal, backer, 300) for backer in (alice, bob)]
    unknown = str(uuid.uuid4())

    def paid(contribution_id: str, payment_id: str) -> payments_pb2.PaymentOutcome:
        confirmation = payments_pb2.ContributionPaid(
            contribution_id=contribution_id, payment_id=payment_id, amount=300, currency="NGN"
        )
        return payments_pb2.PaymentOutcome(contribution_paid=confirmation)

    payments = [str(uuid.uuid4()) for _ in range(3)]
    with caplog.at_level(logging.ERROR, logger="gofund.goals.follower"):
        await platform.deliver_together(
            [paid(first, payments[0]), paid(unknown, payments[1]), paid(second, payments[2])]
        )
    assert await platform.contribution_state(first) == ("SUCCEEDED", payments[0], False)
    assert await platform.contribution_state(second) == ("SUCCEEDED", payments[2], False)
    logged = [r for r in caplog.records if r.name == "gofund.goals.follower"]
    assert [(r.levelname, r.rule) for r in logged] == [("ERROR", "ContributionNotFound")]  # type: ignore[attr-defined]
    assert unknown in logged[0].payload  # type: ignore[attr-defined]
    ((cursor,),) = await platform.goals_sql("SELECT last_seq FROM payments_cursor")
    assert cursor >= 3


async def test_the_internal_service_refuses_user_tokens(platform: Platform) -> None:
    payer = await platform.user()
    internal = goals_service_pb2_grpc.GoalsInternalServiceStub(platform.goals.channel)
    error = await rejected(internal.ListGoalBooks(goals_service_pb2.ListGoalBooksRequest(), metadata=payer.auth))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_owners_see_every_contribution_and_contributors_only_their_own(platform: Platform) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner)
    alice_id, _ = await platform.contribute(goal, alice, 300)
    platform.clock.advance(seconds=1)
    bob_id, _ = await platform.contribute(goal, bob, 400)
    await platform.goals_sql(
        "UPDATE contributions SET created_at = created_at + interval '1 second' WHERE id = %s", bob_id
    )
    list_them = platform.goals.public.ListContributions

    everything = await list_them(goals_service_pb2.ListContributionsRequest(goal_id=goal.id), metadata=owner.auth)
    assert [c.id for c in everything.contributions] == [bob_id, alice_id]
    mine = await list_them(goals_service_pb2.ListContributionsRequest(goal_id=goal.id), metadata=alice.auth)
    assert [c.id for c in mine.contributions] == [alice_id]
    paged = await list_them(
        goals_service_pb2.ListContributionsRequest(goal_id=goal.id, page_size=1), metadata=owner.auth
    )
    rest = await list_them(
        goals_service_pb2.ListContributionsRequest(goal_id=goal.id, page_size=1, page_token=paged.next_page_token),
        metadata=owner.auth,
    )
    assert [c.id for c in [*paged.contributions, *rest.contributions]] == [bob_id, alice_id]

    get = platform.goals.public.GetContribution
    assert (
        await get(goals_service_pb2.GetContributionRequest(contribution_id=bob_id), metadata=owner.auth)
    ).contribution.amount == 400
    hidden = await rejected(get(goals_service_pb2.GetContributionRequest(contribution_id=bob_id), metadata=alice.auth))
    assert (hidden.code(), reason(hidden, GOALS)) == (grpc.StatusCode.NOT_FOUND, "CONTRIBUTION_NOT_FOUND")


async def test_a_goal_is_funded_once_at_its_target_and_keeps_taking_money(platform: Platform) -> None:
    owner, alice, bob, carol = await platform.users(4)
    goal = await platform.goal(owner, target=10_000)
    await platform.contribute(goal, alice, 6_000)
    await platform.until(goal.id, lambda g: g.raised_amount == 6_000)
    await platform.contribute(goal, bob, 4_000)
    funded = await platform.status(goal.id, FUNDED)
    assert (funded.raised_amount, funded.contributor_count) == (10_000, 2)
    assert funded.funded_at.ToDatetime().replace(tzinfo=None) == platform.clock.now.replace(tzinfo=None)
    await platform.contribute(goal, carol, 500)
    await platform.contribute(goal, alice, 100)
    over = await platform.until(goal.id, lambda g: g.raised_amount == 10_600)
    assert (over.status, over.contributor_count, over.funded_at) == (FUNDED, 3, funded.funded_at)


async def test_money_paid_after_the_goal_closed_is_refunded_never_kept(platform: Platform) -> None:
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner)
    contribution_id = await platform.pending_contribution(goal, payer, 2500)
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="closing"), metadata=owner.auth
    )
    payment_id = str(uuid.uuid4())
    await platform.capture(goal, 2500, payment_id)
    assert await platform.confirm(contribution_id, payment_id, 2500, "NGN") is None
    assert await platform.contribution_state(contribution_id) == ("SUCCEEDED", payment_id, True)
    assert await platform.confirm(contribution_id, payment_id, 2500, "NGN") is None
    closed = await platform.get(goal.id)
    assert (closed.status, closed.raised_amount, closed.contributor_count) == (REFUNDED, 0, 0)
    # Payments is down here: the refund is queued and retried, not dropped.
    await eventually(
        lambda: platform.goals_sql(
            "SELECT 1 FROM refunds WHERE contribution_id = %s AND last_error <> ''", contribution_id
        )
    )
    assert await platform.goals_sql(
        "SELECT state, attempt FROM refunds WHERE contribution_id = %s", contribution_id
    ) == [("PENDING", 1)]

    # payments posts GOAL -> ESCROW on refund.processed, then publishes the outcome.
    await platform.refund_posting(goal, 2500, payment_id)
    assert await platform.refunded(contribution_id, payment_id) is None
    assert await platform.contribution_state(contribution_id) == ("REFUNDED", payment_id, True)
    assert await platform.refunded(contribution_id, payment_id) is None
    assert await platform.confirm(contribution_id, payment_id, 2500, "NGN") is None
    assert await platform.contribution_state(contribution_id) == ("REFUNDED", payment_id, True)
    assert await platform.goals_sql("SELECT state FROM refunds WHERE contribution_id = %s", contribution_id) == [
        ("DONE",)
    ]
    assert await platform.balance(goal.account_id) == 0


async def test_cancelling_a_funded_goal_refunds_every_contribution_then_the_goal_is_refunded(
    platform: Platform,
) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.funded_goal(owner, [(alice, 3000), (bob, 2000)])
    cancelled = (
        await platform.goals.public.CancelGoal(
            goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Venue closed"), metadata=owner.auth
        )
    ).goal
    assert (cancelled.status, cancelled.raised_amount, cancelled.contributor_count) == (REFUNDING, 5000, 2)
    rows = await platform.goals_sql(
        "SELECT c.id, c.payment_id, c.amount FROM refunds r JOIN contributions c ON c.id = r.contribution_id "
        "WHERE r.goal_id = %s ORDER BY c.amount",
        goal.id,
    )
    assert [amount for _, _, amount in rows] == [2000, 3000]
    for contribution_id, payment_id, amount in rows:
        await platform.refund_posting(goal, amount, payment_id)
        assert await platform.refunded(str(contribution_id), payment_id) is None
    refunded = await platform.get(goal.id)
    # Closed goals keep what they raised, for the record.
    assert (refunded.status, refunded.raised_amount, refunded.contributor_count) == (REFUNDED, 5000, 2)
    assert await platform.balance(goal.account_id) == 0


async def test_the_counts_kept_on_a_goal_follow_its_contributions_in_and_out(platform: Platform) -> None:
    """A goal's raised amount and contributors are kept on its row as contributions start and
    stop counting (no sum over every contribution at each change): a contributor paying twice
    counts once, a refund of one of their two keeps them, the last one removes them, and a
    replayed confirmation or refund changes nothing; the kept counts always equal the sum."""
    owner, twice, once = await platform.users(3)
    goal = await platform.goal(owner, target=100_000)

    async def kept_and_summed() -> tuple[list[Any], list[Any]]:
        kept = await platform.goals_sql("SELECT counted_amount, counted_contributors FROM goals WHERE id = %s", goal.id)
        summed = await platform.goals_sql(
            "SELECT coalesce(sum(amount), 0), count(DISTINCT user_id) FROM contributions "
            "WHERE goal_id = %s AND status = 'SUCCEEDED' AND NOT refund_on_confirm",
            goal.id,
        )
        return [tuple(row) for row in kept], [tuple(row) for row in summed]

    first, first_payment = await platform.contribute(goal, twice, 1000)
    await platform.contribute(goal, twice, 2000)
    await platform.contribute(goal, once, 4000)
    assert await platform.confirm(first, first_payment, 1000, "NGN") is None  # a replay
    assert await kept_and_summed() == ([(7000, 2)], [(7000, 2)])
    shown = await platform.until(goal.id, lambda g: g.raised_amount == 7000)
    assert shown.contributor_count == 2

    # An operator's refund of one of `twice`'s contributions: they still count, once.
    await platform.refund_posting(goal, 1000, first_payment)
    assert await platform.refunded(first, first_payment) is None
    assert await platform.refunded(first, first_payment) is None  # a replay
    assert await kept_and_summed() == ([(6000, 2)], [(6000, 2)])

    # `once`'s only contribution refunded: they no longer count.
    ((only, only_payment),) = await platform.goals_sql(
        "SELECT id::text, payment_id FROM contributions WHERE goal_id = %s AND user_id = %s", goal.id, once.id
    )
    await platform.refund_posting(goal, 4000, only_payment)
    assert await platform.refunded(only, only_payment) is None
    assert await kept_and_summed() == ([(2000, 1)], [(2000, 1)])
    shown = await platform.until(goal.id, lambda g: g.raised_amount == 2000)
    assert shown.contributor_count == 1


async def test_kept_counts_that_drifted_are_logged_and_mended_when_the_outflow_is_decided(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.goal(owner, target=100_000)
    await platform.contribute(goal, backer, 3000)
    await platform.goals_sql("UPDATE goals SET counted_amount = 99, counted_contributors = 7 WHERE id = %s", goal.id)

    with caplog.at_level(logging.ERROR, logger="gofund.goals.lifecycle"):
        cancelled = (
            await platform.goals.public.CancelGoal(
                goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason="Venue closed"), metadata=owner.auth
            )
        ).goal

    # The refund is decided on the contributions, never on the kept counts.
    assert (cancelled.status, cancelled.raised_amount, cancelled.contributor_count) == (REFUNDING, 3000, 1)
    assert await platform.goals_sql(
        "SELECT counted_amount, counted_contributors FROM goals WHERE id = %s", goal.id
    ) == [(3000, 1)]
    drifts = [r for r in caplog.records if r.getMessage() == "the goal's kept counts drifted from its contributions"]
    assert len(drifts) == 1
