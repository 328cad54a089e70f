"""WatchGoal, the GOAL balance stream from the ledger, replicas, restarts and the scheduler."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from gofund.goals.v1 import goals_pb2, goals_service_pb2
from gofund.ledger.v1 import ledger_service_pb2
from gofund.payments.v1 import payments_pb2

from services.common.server import ServiceRunner
from services.ledger import main as ledger_main
from tests.helpers import eventually, reason, rejected
from tests.integration.fixtures.goals import GOALS, Platform, take

pytestmark = pytest.mark.asyncio

OPEN, FUNDED = goals_pb2.GOAL_STATUS_OPEN, goals_pb2.GOAL_STATUS_FUNDED
REFUNDING, REFUNDED = goals_pb2.GOAL_STATUS_REFUNDING, goals_pb2.GOAL_STATUS_REFUNDED


def watch(platform: Platform, goal_id: str, process: object = None) -> grpc.aio.UnaryStreamCall:
    stub = (process or platform.goals).public  # type: ignore[attr-defined]
    return stub.WatchGoal(goals_service_pb2.WatchGoalRequest(goal_id=goal_id))


async def cancel(platform: Platform, owner: object, goal_id: str) -> None:
    await platform.goals.public.CancelGoal(
        goals_service_pb2.CancelGoalRequest(goal_id=goal_id, reason="done"),
        metadata=owner.auth,  # type: ignore[attr-defined]
    )


async def test_watching_starts_with_the_current_progress_follows_changes_and_ends_when_final(
    platform: Platform,
) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner, target=1000)
    await platform.contribute(goal, alice, 300)
    await platform.until(goal.id, lambda g: g.raised_amount == 300 and g.contributor_count == 1)
    stream = watch(platform, goal.id)
    (first,) = await take(stream, 1)
    assert (first.goal_id, first.status, first.raised_amount, first.target_amount, first.currency) == (
        goal.id, OPEN, 300, 1000, "NGN",
    )  # fmt: skip
    assert first.contributor_count == 1

    await platform.contribute(goal, bob, 700)
    changes = []
    async with asyncio.timeout(10):
        async for message in stream:
            changes.append(message)
            if message.status == FUNDED and message.contributor_count == 2:
                break
    assert [m.seq for m in changes] == sorted({m.seq for m in changes})
    assert changes[0].seq > first.seq
    assert (changes[-1].raised_amount, changes[-1].status) == (1000, FUNDED)

    await cancel(platform, owner, goal.id)
    async with asyncio.timeout(10):
        async for message in stream:
            if message.status == REFUNDING:
                break
    # Payments refunds each contribution; the last one makes the goal REFUNDED.
    contributions = await platform.goals_sql(
        "SELECT id, payment_id, amount FROM contributions WHERE goal_id = %s", goal.id
    )
    for contribution_id, payment_id, amount in contributions:
        await platform.refund_posting(goal, amount, payment_id)
        assert await platform.refunded(str(contribution_id), payment_id) is None
    async with asyncio.timeout(10):
        rest = [m async for m in stream]  # ends with OK after the final status
    assert rest[-1].status == REFUNDED
    assert await stream.code() is grpc.StatusCode.OK
    once_final = [m async for m in watch(platform, goal.id)]
    assert [(m.status, m.raised_amount) for m in once_final] == [(REFUNDED, 1000)]


async def test_watching_a_goal_needs_a_real_goal(platform: Platform) -> None:
    bad = await rejected(take(watch(platform, "not-an-id"), 1))
    assert (bad.code(), reason(bad, GOALS)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_GOAL_ID")
    missing = await rejected(take(watch(platform, str(uuid.uuid4())), 1))
    assert (missing.code(), reason(missing, GOALS)) == (grpc.StatusCode.NOT_FOUND, "GOAL_NOT_FOUND")


async def test_a_watcher_that_goes_away_is_forgotten(platform: Platform) -> None:
    owner = await platform.user()
    goal = await platform.goal(owner)
    broadcaster = platform.goals.broadcaster
    before = broadcaster.watcher_count
    stream = watch(platform, goal.id)
    await take(stream, 1)
    assert broadcaster.watcher_count == before + 1
    stream.cancel()
    await eventually(lambda: asyncio.sleep(0, broadcaster.watcher_count == before))


async def test_two_thousand_watchers_opening_one_goal_at_once_are_all_served(platform: Platform) -> None:
    # A viral goal: a burst of pages opening at once is queued, not cancelled by
    # gRPC beyond its default 1,000 calls waiting for the server.
    owner = await platform.user()
    goal = await platform.goal(owner)
    streams = [watch(platform, goal.id) for _ in range(2000)]
    try:
        firsts = await asyncio.gather(*(take(stream, 1) for stream in streams), return_exceptions=True)
    finally:
        for stream in streams:
            stream.cancel()
    failed = [f for f in firsts if isinstance(f, BaseException)]
    assert failed == []
    assert {first[0].goal_id for first in firsts if not isinstance(first, BaseException)} == {goal.id}


async def test_changes_made_by_another_goals_process_reach_every_watcher(platform: Platform) -> None:
    replica = await platform.start_goals()
    try:
        owner, backer = await platform.users(2)
        goal = await platform.goal(owner, target=5000)
        here, there = watch(platform, goal.id), watch(platform, goal.id, replica)
        await take(here, 1)
        await take(there, 1)
        # The cancel is handled by the first process; the replica's watcher sees it too.
        await cancel(platform, owner, goal.id)
        seen_there = [m.status async for m in there]
        seen_here = [m.status async for m in here]
        assert seen_there[-1] == seen_here[-1] == REFUNDED
        # Funding seen by both processes' balance followers moves the goal once.
        other = await platform.goal(owner, target=800)
        await platform.contribute(other, backer, 800)
        funded = await platform.status(other.id, FUNDED)
        assert (funded.raised_amount, funded.contributor_count) == (800, 1)
        watched = await take(watch(platform, other.id, replica), 1)
        assert watched[0].seq == (await platform.goals_sql("SELECT seq FROM goals WHERE id = %s", other.id))[0][0]
    finally:
        await platform.stop_goals(replica)


async def test_a_restarted_goals_process_resumes_the_balance_stream_from_its_stored_seq(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.goal(owner, target=3000)
    await platform.stop_goals(platform.goals)
    try:
        for amount in (1000, 2000):  # money arrives while no goals process is running
            contribution_id = await platform.pending_contribution(goal, backer, amount)
            payment_id = str(uuid.uuid4())
            await platform.capture(goal, amount, payment_id)
            # Confirmed as payments' outcome would confirm it: counted on the goal too.
            await platform.goals_sql(
                "UPDATE contributions SET status = 'SUCCEEDED', payment_id = %s WHERE id = %s",
                payment_id,
                contribution_id,
            )
            await platform.goals_sql(
                "UPDATE goals SET counted_amount = counted_amount + %s, counted_contributors = 1 WHERE id = %s",
                amount,
                goal.id,
            )
    finally:
        platform.goals = await platform.start_goals()
    funded = await platform.status(goal.id, FUNDED)
    assert funded.raised_amount == 3000
    ((cursor,),) = await platform.goals_sql("SELECT last_seq FROM ledger_cursor")
    ((ledger_last,),) = await platform.sql(platform.ledger_url, "SELECT last_seq FROM ledger_sequence")
    await eventually(lambda: platform.goals_sql("SELECT 1 FROM ledger_cursor WHERE last_seq = %s", ledger_last))
    assert cursor <= ledger_last


async def test_the_balance_stream_survives_a_ledger_restart(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.goal(owner, target=900)
    ledger = platform.runners[1]
    await ledger.stop()
    replacement = ServiceRunner(ledger_main.build, platform.settings, port=platform.settings.ledger_port)
    await replacement.start()
    platform.runners[1] = replacement
    await platform.ledger.Reconcile(ledger_service_pb2.ReconcileRequest(), wait_for_ready=True)
    await platform.contribute(goal, backer, 900)
    assert (await platform.status(goal.id, FUNDED)).raised_amount == 900


async def test_expiry_asks_the_ledger_instead_of_trusting_a_lagging_raised_amount(platform: Platform) -> None:
    owner = await platform.user()
    short = await platform.goal(owner, target=500, deadline=platform.deadline(hours=2))
    reached = await platform.goal(owner, target=500, deadline=platform.deadline(hours=2))
    # This process stops following the ledger: its raised amounts lag behind.
    await platform.stop_goals(platform.goals)
    platform.goals = await platform.start_goals()
    platform.goals.runner._tasks[1].cancel()  # the balance follower of this process
    await platform.capture(reached, 500, str(uuid.uuid4()))
    await platform.capture(short, 200, str(uuid.uuid4()))
    assert (await platform.get(reached.id)).raised_amount == 0
    platform.clock.advance(hours=3)
    expired = await platform.status(short.id, REFUNDED)  # nothing to refund: no contribution paid
    # The 200 captured has no confirmed contribution: it never counted (its
    # confirmation would make it a late payment, refunded on its own).
    assert expired.raised_amount == 0
    funded = await platform.status(reached.id, FUNDED)
    assert funded.raised_amount == 500
    await platform.stop_goals(platform.goals)
    platform.goals = await platform.start_goals()


async def test_two_schedulers_expire_each_goal_exactly_once(platform: Platform) -> None:
    replica = await platform.start_goals()
    try:
        owner = await platform.user()
        goals = [await platform.goal(owner, deadline=platform.deadline(hours=1, seconds=30)) for _ in range(10)]
        platform.clock.advance(hours=2)
        await asyncio.gather(platform.goals.scheduler.tick(), replica.scheduler.tick())
        for goal in goals:
            await platform.status(goal.id, REFUNDED)
        seqs = await platform.goals_sql(
            "SELECT seq FROM goals WHERE id = ANY(%s::uuid[])", [uuid.UUID(g.id) for g in goals]
        )
        # created (1), EXPIRED, REFUNDING, REFUNDED: each transition once.
        assert sorted(s for (s,) in seqs) == [4] * 10
    finally:
        await platform.stop_goals(replica)


# -- resuming, heartbeats, one change per contribution ------------------------------------
def resume(platform: Platform, goal_id: str, after_seq: int = 0, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    request = goals_service_pb2.WatchGoalRequest(goal_id=goal_id, after_seq=after_seq)
    return platform.goals.public.WatchGoal(request, metadata=metadata)


async def next_message(stream: Any, *, heartbeat: bool) -> Any:
    """The stream's next heartbeat, or its next change (skipping heartbeats)."""
    async with asyncio.timeout(10):
        async for message in stream:
            if message.heartbeat is heartbeat:
                return message
    raise AssertionError("the stream ended")


async def goal_seq(platform: Platform, goal_id: str) -> int:
    ((seq,),) = await platform.goals_sql("SELECT seq FROM goals WHERE id = %s", goal_id)
    return int(seq)


async def test_resuming_after_a_seq_skips_what_was_seen_and_delivers_what_was_not(platform: Platform) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner, target=10_000)
    stream = watch(platform, goal.id)
    await take(stream, 1)
    await platform.contribute(goal, alice, 300)
    (seen,) = await take(stream, 1)
    stream.cancel()  # the client goes away having seen `seen`

    # Nothing changed since: the stream starts with the next change, not the state it saw.
    caught_up = resume(platform, goal.id, seen.seq)
    await platform.contribute(goal, bob, 200)
    (change,) = await take(caught_up, 1)
    caught_up.cancel()
    assert (change.seq, change.raised_amount, change.contributor_count) == (seen.seq + 1, 500, 2)

    # The goal changed while the client was away: it gets the state now, then what follows.
    await platform.contribute(goal, bob, 100)
    await platform.until(goal.id, lambda g: g.raised_amount == 600)
    behind = resume(platform, goal.id, seen.seq)
    (missed,) = await take(behind, 1)
    assert (missed.seq, missed.raised_amount, missed.contributor_count) == (seen.seq + 2, 600, 2)
    await cancel(platform, owner, goal.id)  # CANCELLED then REFUNDING, committed together
    rest = []
    async with asyncio.timeout(10):
        async for message in behind:
            rest.append(message)
            if message.status == REFUNDING:
                break
    behind.cancel()
    assert [m.seq for m in rest] == sorted({m.seq for m in rest})
    assert rest[0].seq > missed.seq
    assert rest[-1].seq == missed.seq + 2


async def test_a_client_that_resumes_misses_no_final_state(platform: Platform) -> None:
    owner = await platform.user()
    goal = await platform.goal(owner)
    stream = watch(platform, goal.id)
    (first,) = await take(stream, 1)
    await cancel(platform, owner, goal.id)  # nothing paid: CANCELLED, REFUNDING, REFUNDED at once
    final_seq = await goal_seq(platform, goal.id)
    stream.cancel()

    resumed = [m async for m in resume(platform, goal.id, first.seq)]
    assert [(m.seq, m.status) for m in resumed] == [(final_seq, REFUNDED)]
    seen_final = resume(platform, goal.id, final_seq)
    assert [m async for m in seen_final] == []  # it has the final state: the stream ends at once
    assert await seen_final.code() is grpc.StatusCode.OK


async def test_after_seq_must_be_a_seq_of_the_goal(platform: Platform) -> None:
    owner = await platform.user()
    goal = await platform.goal(owner)
    for after_seq in (-1, await goal_seq(platform, goal.id) + 1):
        bad = await rejected(take(resume(platform, goal.id, after_seq), 1))
        assert (bad.code(), reason(bad, GOALS)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AFTER_SEQ")


async def test_an_sse_clients_last_event_id_resumes_the_stream(platform: Platform) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.goal(owner, target=10_000)
    seen = await goal_seq(platform, goal.id)
    stream = resume(platform, goal.id, metadata=(("last-event-id", str(seen)),))
    await platform.contribute(goal, backer, 400)
    (change,) = await take(stream, 1)
    stream.cancel()
    assert (change.seq, change.raised_amount) == (seen + 1, 400)
    # The request's own after_seq, when given, is the position; the header is not read.
    explicit = resume(platform, goal.id, seen, metadata=(("last-event-id", "not a seq"),))
    (current,) = await take(explicit, 1)
    explicit.cancel()
    assert current.seq == seen + 1


@pytest.mark.parametrize("header", ["abc", "-1", "1e3", "1.5", "99999999999999999999"])
async def test_a_malformed_last_event_id_is_refused(platform: Platform, header: str) -> None:
    owner = await platform.user()
    goal = await platform.goal(owner)
    bad = await rejected(take(resume(platform, goal.id, metadata=(("last-event-id", header),)), 1))
    assert (bad.code(), reason(bad, GOALS)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_LAST_EVENT_ID")


async def test_a_quiet_stream_sends_heartbeats_repeating_the_latest_seq(platform: Platform) -> None:
    replica = await platform.start_goals(stream_heartbeat_ms=50)
    try:
        owner, backer = await platform.users(2)
        goal = await platform.goal(owner, target=10_000)
        stream = watch(platform, goal.id, replica)
        first, beat = await take(stream, 2)
        assert not first.heartbeat
        assert beat.heartbeat
        assert (beat.seq, beat.raised_amount, beat.status) == (first.seq, first.raised_amount, first.status)

        await platform.contribute(goal, backer, 700)
        change = await next_message(stream, heartbeat=False)
        later = await next_message(stream, heartbeat=True)
        assert (change.seq, change.raised_amount, change.contributor_count) == (first.seq + 1, 700, 1)
        assert (later.seq, later.raised_amount, later.contributor_count) == (change.seq, 700, 1)

        # Resumed with nothing missed, the first thing it hears is a heartbeat at its own seq.
        caught_up = replica.public.WatchGoal(goals_service_pb2.WatchGoalRequest(goal_id=goal.id, after_seq=change.seq))
        (beat,) = await take(caught_up, 1)
        assert (beat.heartbeat, beat.seq, beat.raised_amount) == (True, change.seq, 700)

        # A client that goes away between heartbeats is forgotten.
        broadcaster = replica.broadcaster
        stream.cancel()
        caught_up.cancel()
        await eventually(lambda: asyncio.sleep(0, broadcaster.watcher_count == 0))
    finally:
        await platform.stop_goals(replica)


async def test_a_busy_goal_stream_is_coalesced_to_its_rate_and_ends_on_the_last_change(platform: Platform) -> None:
    # One message per 2 s: contributions paid one after another fall in one pause.
    replica = await platform.start_goals(stream_max_updates_per_s=0.5)
    try:
        owner, *backers = await platform.users(5)
        goal = await platform.goal(owner, target=100_000)
        stream = watch(platform, goal.id, replica)
        (first,) = await take(stream, 1)
        for backer in backers:
            await platform.contribute(goal, backer, 100)
        changes = []
        while not changes or changes[-1].contributor_count < len(backers):
            changes.append(await next_message(stream, heartbeat=False))
        stream.cancel()
    finally:
        await platform.stop_goals(replica)
    assert first.raised_amount == 0
    # Each contribution is up to two changes (capture, confirmation): the first goes out at once,
    # the rest as one, the newest.
    assert len(changes) <= 2
    assert (changes[-1].raised_amount, changes[-1].contributor_count) == (400, 4)


async def _capture_applied(platform: Platform, goal_id: str, balance: int) -> None:
    """Wait until goals has applied the GOAL balance the ledger's stream brought."""
    await eventually(
        lambda: platform.goals_sql("SELECT 1 FROM goals WHERE id = %s AND ledger_balance = %s", goal_id, balance)
    )


async def _pay(platform: Platform, goal: Any, backer: Any, amount: int, *, balance: int, order: str) -> None:
    """One contribution's two signals in `order`: the capture (ledger stream) and the confirmation (payments)."""
    contribution_id = await platform.pending_contribution(goal, backer, amount)
    payment_id = str(uuid.uuid4())
    if order == "capture first":
        await platform.capture(goal, amount, payment_id)
        await _capture_applied(platform, goal.id, balance)
        assert await platform.confirm(contribution_id, payment_id, amount, goal.currency) is None
    elif order == "at once":
        _, refused = await asyncio.gather(
            platform.capture(goal, amount, payment_id),
            platform.confirm(contribution_id, payment_id, amount, goal.currency),
        )
        assert refused is None
    else:
        # Payments posts before it confirms, but goals may hear the confirmation
        # before its balance stream delivers the capture: this is that order.
        assert await platform.confirm(contribution_id, payment_id, amount, goal.currency) is None
        await platform.capture(goal, amount, payment_id)


@pytest.mark.parametrize("order", ["capture first", "confirmation first"])
async def test_one_contribution_is_one_change_carrying_every_field(platform: Platform, order: str) -> None:
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner, target=1000)
    stream = watch(platform, goal.id)
    (first,) = await take(stream, 1)

    await _pay(platform, goal, alice, 600, balance=600, order=order)
    (change,) = await take(stream, 1)
    assert (change.seq, change.raised_amount, change.contributor_count, change.status) == (first.seq + 1, 600, 1, OPEN)

    # The contribution that reaches the target: FUNDED in the same change.
    await _pay(platform, goal, bob, 400, balance=1000, order=order)
    (funded,) = await take(stream, 1)
    stream.cancel()
    assert (funded.seq, funded.raised_amount, funded.contributor_count, funded.status) == (
        first.seq + 2, 1000, 2, FUNDED,
    )  # fmt: skip
    assert await goal_seq(platform, goal.id) == funded.seq


async def test_two_backers_paying_at_once_make_at_most_one_change_each_with_every_field(platform: Platform) -> None:
    # Different actors at the same instant, each contribution's two signals at once too:
    # every change shown is a consistent step (no raised amount without its
    # contributor), at most one per contribution, ending FUNDED with both.
    owner, alice, bob = await platform.users(3)
    goal = await platform.goal(owner, target=1000)
    stream = watch(platform, goal.id)
    (first,) = await take(stream, 1)
    await asyncio.gather(
        _pay(platform, goal, alice, 600, balance=600, order="at once"),
        _pay(platform, goal, bob, 400, balance=400, order="at once"),
    )
    seen = []
    while not seen or seen[-1].status != FUNDED:
        (change,) = await take(stream, 1)
        seen.append(change)
    stream.cancel()
    steps = {(c.raised_amount, c.contributor_count, c.status) for c in seen}
    assert steps <= {(600, 1, OPEN), (400, 1, OPEN), (1000, 2, FUNDED)}
    assert [c.seq for c in seen] == sorted({c.seq for c in seen})
    assert await goal_seq(platform, goal.id) - first.seq <= 2


async def test_confirmations_applied_as_one_batch_make_one_change_for_their_goal(platform: Platform) -> None:
    # A follower behind its stream applies what arrived meanwhile in one transaction:
    # the goal shows the batch's outcome once, reaching FUNDED in that change.
    owner, *backers = await platform.users(4)
    goal = await platform.goal(owner, target=900)
    before = await goal_seq(platform, goal.id)
    paid = []
    for backer in backers:
        contribution_id = await platform.pending_contribution(goal, backer, 300)
        payment_id = str(uuid.uuid4())
        await platform.capture(goal, 300, payment_id)
        confirmation = payments_pb2.ContributionPaid(
            contribution_id=contribution_id, payment_id=payment_id, amount=300, currency=goal.currency
        )
        paid.append(payments_pb2.PaymentOutcome(contribution_paid=confirmation))
    await _capture_applied(platform, goal.id, 900)
    assert await goal_seq(platform, goal.id) == before  # no confirmation yet: nothing shown
    await platform.deliver_together(paid)
    assert await goal_seq(platform, goal.id) == before + 1
    (shown,) = await take(watch(platform, goal.id), 1)
    assert (shown.raised_amount, shown.contributor_count, shown.status) == (900, 3, FUNDED)


@pytest.mark.parametrize("order", ["capture first", "confirmation first"])
async def test_a_goals_restart_between_a_contributions_two_signals_still_makes_one_change(
    platform: Platform, order: str
) -> None:
    owner, backer = await platform.users(2)
    goal = await platform.goal(owner, target=1000)
    before = await goal_seq(platform, goal.id)
    contribution_id = await platform.pending_contribution(goal, backer, 1000)
    payment_id = str(uuid.uuid4())
    if order == "capture first":
        await platform.capture(goal, 1000, payment_id)
        await _capture_applied(platform, goal.id, 1000)
    else:
        assert await platform.confirm(contribution_id, payment_id, 1000, goal.currency) is None
    await platform.stop_goals(platform.goals)
    platform.goals = await platform.start_goals()
    stream = resume(platform, goal.id, before)
    if order == "capture first":
        assert await platform.confirm(contribution_id, payment_id, 1000, goal.currency) is None
    else:
        await platform.capture(goal, 1000, payment_id)
    (funded,) = await take(stream, 1)
    stream.cancel()
    assert (funded.seq, funded.raised_amount, funded.contributor_count, funded.status) == (before + 1, 1000, 1, FUNDED)
    # A replayed confirmation changes nothing.
    assert await platform.confirm(contribution_id, payment_id, 1000, goal.currency) is None
    assert await goal_seq(platform, goal.id) == before + 1
