"""Goal rules without I/O: validation, states, the vote tally, fees, derived ids, backoff."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import ValidationFailed, Validator
from services.goals import domain
from services.goals.domain import ContributionStatus, GoalStatus, ProofStatus, Tally
from services.goals.sagas import _retry_delay

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def new_goal(**fields: object) -> domain.NewGoal:
    values: dict[str, object] = {
        "title": "Clean water",
        "description": "A borehole.",
        "target_amount": 100_000,
        "currency": "NGN",
        "deadline": NOW + timedelta(days=30),
        "request_id": "",
    }
    values.update(fields)
    return domain.NewGoal(**values)  # type: ignore[arg-type]


def reasons(error: ValidationFailed) -> list[str]:
    return [v.reason for v in error.violations]


# -- validation ---------------------------------------------------------------------------
def test_a_valid_goal_has_its_title_trimmed() -> None:
    assert domain.validate_new_goal(new_goal(title="  Clean water  ")).title == "Clean water"


def test_every_invalid_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as raised:
        domain.validate_new_goal(
            new_goal(
                title="ab", description="x" * 10_001, target_amount=0, currency="EUR", deadline=None,
                request_id="r" * 201,
            )
        )  # fmt: skip
    assert reasons(raised.value) == [
        "INVALID_TITLE", "INVALID_DESCRIPTION", "INVALID_TARGET_AMOUNT", "UNSUPPORTED_CURRENCY",
        "INVALID_DEADLINE", "INVALID_REQUEST_ID",
    ]  # fmt: skip
    assert raised.value.reason == "INVALID_TITLE"


@pytest.mark.parametrize(("amount", "valid"), [(1, True), (10**12, True), (10**12 + 1, False), (-1, False)])
def test_targets_are_positive_and_at_most_a_trillion_minor_units(amount: int, valid: bool) -> None:
    if valid:
        domain.validate_new_goal(new_goal(target_amount=amount))
    else:
        with pytest.raises(ValidationFailed):
            domain.validate_new_goal(new_goal(target_amount=amount))


@pytest.mark.parametrize(
    ("ahead", "valid"),
    [
        (timedelta(minutes=59), False),
        (timedelta(hours=1), True),
        (timedelta(days=365), True),
        (timedelta(days=365, seconds=1), False),
        (-timedelta(days=1), False),
    ],
)
def test_deadlines_are_one_hour_to_a_year_ahead(ahead: timedelta, valid: bool) -> None:
    if valid:
        domain.check_deadline(NOW + ahead, NOW)
    else:
        with pytest.raises(ValidationFailed, match="deadline"):
            domain.check_deadline(NOW + ahead, NOW)


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        (["https://example.com/a.jpg"], []),
        (["http://example.com/a.jpg"], ["INVALID_MEDIA_URL"]),
        (["https:///no-host"], ["INVALID_MEDIA_URL"]),
        (["https://example.com/" + "a" * 2048], ["INVALID_MEDIA_URL"]),
        (["https://example.com/a"] * 11, ["TOO_MANY_MEDIA_URLS"]),
    ],
)
def test_media_urls_are_at_most_ten_https_links(urls: list[str], expected: list[str]) -> None:
    check = Validator()
    domain.validate_media_urls(check, urls)
    assert [v.reason for v in check.violations] == expected


def test_the_fingerprint_of_a_goal_ignores_nothing_that_was_asked_for() -> None:
    assert new_goal().fingerprint() == new_goal().fingerprint()
    assert new_goal().fingerprint() != new_goal(title="Other").fingerprint()
    assert new_goal().fingerprint() != new_goal(deadline=NOW + timedelta(days=31)).fingerprint()


# -- states -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", list(GoalStatus))
def test_money_counts_only_while_open_or_funded_and_before_its_outflow_is_decided(status: GoalStatus) -> None:
    open_or_funded = status in (GoalStatus.OPEN, GoalStatus.FUNDED)
    assert domain.accepts_money(status, None) is open_or_funded
    assert domain.cancellable(status, None) is open_or_funded
    for outflow in domain.Outflow:
        assert domain.accepts_money(status, outflow) is False
        assert domain.cancellable(status, outflow) is False
    assert status.final is (status in (GoalStatus.WITHDRAWN, GoalStatus.REFUNDED))


def test_the_goal_state_machine_has_every_documented_move_and_no_other() -> None:
    # DESIGN.md: OPEN -> FUNDED -> RELEASED -> WITHDRAWN; OPEN -> EXPIRED -> REFUNDING -> REFUNDED;
    # OPEN|FUNDED -> CANCELLED -> REFUNDING; the third rejection FUNDED -> REFUNDING; a reversed
    # transfer WITHDRAWN -> RELEASED.
    S = GoalStatus
    allowed = {
        (S.OPEN, S.FUNDED), (S.FUNDED, S.RELEASED), (S.RELEASED, S.WITHDRAWN), (S.OPEN, S.EXPIRED),
        (S.EXPIRED, S.REFUNDING), (S.REFUNDING, S.REFUNDED), (S.OPEN, S.CANCELLED), (S.FUNDED, S.CANCELLED),
        (S.CANCELLED, S.REFUNDING), (S.FUNDED, S.REFUNDING), (S.WITHDRAWN, S.RELEASED),
    }  # fmt: skip
    for current in GoalStatus:
        for target in GoalStatus:
            assert domain.can_move(current, target) is ((current, target) in allowed), (current, target)
    # Released and refunded never meet: no path leads from one side to the other.
    release_side = {S.RELEASED, S.WITHDRAWN}
    refund_side = {S.EXPIRED, S.CANCELLED, S.REFUNDING, S.REFUNDED}
    assert not any((a, b) in allowed for a in release_side for b in refund_side)
    assert not any((a, b) in allowed for a in refund_side for b in release_side)


def test_contributions_are_taken_only_while_open_and_before_the_deadline() -> None:
    deadline = NOW + timedelta(hours=1)
    assert domain.takes_contributions(GoalStatus.OPEN, deadline, NOW)
    assert not domain.takes_contributions(GoalStatus.OPEN, deadline, deadline)
    assert not domain.takes_contributions(GoalStatus.FUNDED, deadline, NOW)


# -- votes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tally", "expected"),
    [
        (Tally(approve=5001, reject=0, uncast=4999, raised=10_000), ProofStatus.APPROVED),
        (Tally(approve=5000, reject=0, uncast=5000, raised=10_000), None),  # exactly half is not more
        (Tally(approve=1000, reject=5000, uncast=4000, raised=10_000), ProofStatus.REJECTED),  # 5000 at most
        (Tally(approve=1000, reject=4000, uncast=4001, raised=10_000), None),  # 5001 still possible
        (Tally(approve=0, reject=0, uncast=0, raised=10_000), ProofStatus.REJECTED),  # nobody left to vote
    ],
)
def test_a_proof_is_decided_as_soon_as_the_threshold_is_passed_or_out_of_reach(
    tally: Tally, expected: ProofStatus | None
) -> None:
    assert domain.decide_early(tally, approval_threshold_bps=5000) == expected


@pytest.mark.parametrize(
    ("approve", "reject", "expected"),
    [
        (2000, 0, ProofStatus.APPROVED),  # exactly the 20% quorum, all for
        (1999, 0, ProofStatus.REJECTED),  # below quorum
        (1500, 1500, ProofStatus.REJECTED),  # a tie is no majority
        (1600, 1500, ProofStatus.APPROVED),
        (1000, 2000, ProofStatus.REJECTED),
    ],
)
def test_at_the_close_the_majority_of_weight_cast_decides_given_a_quorum(
    approve: int, reject: int, expected: ProofStatus
) -> None:
    tally = Tally(approve=approve, reject=reject, uncast=10_000 - approve - reject, raised=10_000)
    assert domain.decide_at_close(tally, quorum_bps=2000) == expected


def test_thresholds_are_configuration() -> None:
    tally = Tally(approve=6000, reject=0, uncast=4000, raised=10_000)
    assert domain.decide_early(tally, approval_threshold_bps=7000) is None
    assert domain.decide_at_close(Tally(approve=500, reject=0, uncast=0, raised=10_000), quorum_bps=0) == (
        ProofStatus.APPROVED
    )


# -- money and ids ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "bps", "fee"), [(10_000, 500, 500), (9_999, 500, 499), (1, 500, 0), (10_000, 0, 0), (7, 10_000, 7)]
)
def test_the_platform_fee_is_rounded_down_to_the_minor_unit(amount: int, bps: int, fee: int) -> None:
    assert domain.platform_fee(amount, bps) == fee


def test_money_step_ids_are_derived_from_what_they_are_for() -> None:
    goal_id, contribution_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert domain.release_transaction_id(goal_id) == f"goal:{goal_id}:release"
    assert domain.payout_id(goal_id, 1) == domain.payout_id(goal_id, 1)
    assert domain.payout_id(goal_id, 1) != domain.payout_id(goal_id, 2)
    assert domain.refund_id(contribution_id, 1) != domain.refund_id(contribution_id, 2)
    assert uuid.UUID(domain.payout_id(goal_id, 3)).version == 5
    assert domain.payment_idempotency_key(contribution_id) == f"contribution:{contribution_id}"
    assert domain.goal_id_for_request("u1", "r1") != domain.goal_id_for_request("u2", "r1")


def test_saga_retries_back_off_exponentially_up_to_a_cap() -> None:
    delays = [_retry_delay(n, base=timedelta(seconds=5), cap=timedelta(minutes=1)) for n in range(1, 7)]
    assert [d.total_seconds() for d in delays] == [5, 10, 20, 40, 60, 60]
    assert _retry_delay(10_000, base=timedelta(seconds=5), cap=timedelta(hours=1)) == timedelta(hours=1)


@pytest.mark.parametrize(
    ("current", "target", "step"),
    [
        (ContributionStatus.PENDING, ContributionStatus.SUCCEEDED, "move"),
        (ContributionStatus.PENDING, ContributionStatus.FAILED, "move"),
        (ContributionStatus.SUCCEEDED, ContributionStatus.REFUNDED, "move"),
        # Reported again, or overtaken by a later move: a replay that changes nothing.
        (ContributionStatus.SUCCEEDED, ContributionStatus.SUCCEEDED, "replay"),
        (ContributionStatus.REFUNDED, ContributionStatus.SUCCEEDED, "replay"),
        (ContributionStatus.FAILED, ContributionStatus.FAILED, "replay"),
        (ContributionStatus.REFUNDED, ContributionStatus.REFUNDED, "replay"),
        # Contradicting what was recorded: refused.
        (ContributionStatus.FAILED, ContributionStatus.SUCCEEDED, "refused"),
        (ContributionStatus.SUCCEEDED, ContributionStatus.FAILED, "refused"),
        (ContributionStatus.REFUNDED, ContributionStatus.FAILED, "refused"),
        (ContributionStatus.PENDING, ContributionStatus.REFUNDED, "refused"),
        (ContributionStatus.FAILED, ContributionStatus.REFUNDED, "refused"),
    ],
)
def test_what_a_payment_report_does_to_a_contribution_follows_its_state_machine(
    current: ContributionStatus, target: ContributionStatus, step: str
) -> None:
    assert domain.contribution_step(current, target) == step
