"""Goals use cases: each in one unit of work, the rules from `domain` and `lifecycle`.

The servicer calls these with plain values and gets store rows back; no gRPC
here, SQL only through `store`. Calls to the ledger and payments are made
outside any transaction that holds a goal's row lock, except where the lock is
what makes the step safe (documented in `sagas`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.auth import require_permission
from services.common.context import Principal
from services.common.db import Database
from services.common.errors import FieldViolation, IdempotencyKeyReused, ValidationFailed, Validator
from services.common.idempotency import fingerprint
from services.common.ids import check_id, parse_id
from services.goals import domain, lifecycle, store
from services.goals.domain import (
    ContributionStatus,
    GoalStatus,
    ProofStatus,
)
from services.goals.peers import LedgerGateway, PaymentsGateway, Refused
from services.goals.streams import ProgressBroadcaster

CREATE_PERMISSION = "goals:create"


@dataclass(frozen=True)
class ContributionCheckout:
    contribution: store.Contribution
    authorization_url: str


def _not_found_goal(goal_id: str) -> domain.GoalNotFound:
    return domain.GoalNotFound(f"goal {goal_id} does not exist", metadata={"goal_id": goal_id})


def _invalid(field: str, description: str, reason: str) -> ValidationFailed:
    return ValidationFailed([FieldViolation(field, description, reason)])


class Goals:
    def __init__(
        self,
        database: Database,
        *,
        ledger: LedgerGateway,
        payments: PaymentsGateway,
        broadcaster: ProgressBroadcaster,
        rules: lifecycle.Rules,
        clock: Callable[[], datetime],
        wake_sagas: Callable[[], None],
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.payments = payments
        self.broadcaster = broadcaster
        self.rules = rules
        self.clock = clock
        self.wake_sagas = wake_sagas

    # -- goals ------------------------------------------------------------------------
    async def create_goal(self, caller: Principal | None, request: domain.NewGoal) -> store.Goal:
        owner = require_permission(caller, CREATE_PERMISSION)
        new = domain.validate_new_goal(request)
        assert new.deadline is not None
        now = self.clock()
        goal_id = domain.goal_id_for_request(owner.user_id, new.request_id) if new.request_id else str(uuid.uuid4())
        if new.request_id:
            async with self.database.transaction() as session:
                existing = await store.get_goal(session, goal_id)
            if existing is not None:
                return self._replayed_goal(existing, new)
        domain.check_deadline(new.deadline, now)
        # The GOAL account first: if the ledger cannot open it, no goal exists.
        # A retry (same request id, same goal id) finds the same account.
        # Every rule the insert below could break is checked above (shape and
        # lengths here, control characters in the request interceptor, the
        # request-id conflict by the goal id derived from it), so only a lost
        # database can still stop the insert. The account that leaves is empty
        # for good and harmless: money reaches a GOAL account only through a
        # contribution to the goal that names it, and no goal names this one.
        account_id = await self.ledger.open_account("GOAL", goal_id, new.currency)
        async with self.database.transaction() as session:
            inserted = await store.insert_goal(
                session,
                {
                    "id": uuid.UUID(goal_id), "owner_id": uuid.UUID(owner.user_id), "title": new.title,
                    "description": new.description, "target_amount": new.target_amount, "currency": new.currency,
                    "deadline": new.deadline, "status": GoalStatus.OPEN, "raised_amount": 0,
                    "contributor_count": 0, "account_id": uuid.UUID(account_id), "cancel_reason": "",
                    "created_at": now, "updated_at": now, "seq": 1, "ledger_seq": 0,
                    "request_id": new.request_id or None,
                    "request_fingerprint": new.fingerprint() if new.request_id else None,
                },
            )  # fmt: skip
            goal = await store.get_goal(session, goal_id)
        assert goal is not None
        return goal if inserted else self._replayed_goal(goal, new)

    @staticmethod
    def _replayed_goal(goal: store.Goal, request: domain.NewGoal) -> store.Goal:
        if goal.request_fingerprint != request.fingerprint():
            raise IdempotencyKeyReused(
                "request_id was used for a goal with different input", metadata={"goal_id": str(goal.id)}
            )
        return goal

    async def goal(self, goal_id: str) -> store.Goal:
        goal_id = parse_id(goal_id, "goal_id", "INVALID_GOAL_ID")
        async with self.database.transaction() as session:
            goal = await store.get_goal(session, goal_id)
        if goal is None:
            raise _not_found_goal(goal_id)
        return goal

    async def list_goals(
        self, status: GoalStatus | None, owner_id: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[store.Goal]:
        async with self.database.transaction() as session:
            return await store.list_goals(session, status=status, owner_id=owner_id, after=after, limit=limit)

    async def update_goal(self, caller: Principal, goal_id: str, changes: dict[str, str]) -> store.Goal:
        check = Validator()
        goal_id = check_id(check, goal_id, "goal_id", "INVALID_GOAL_ID")
        if "title" in changes:
            changes["title"] = domain.check_title(check, changes["title"])
        if "description" in changes:
            domain.check_description(check, changes["description"])
        check.raise_if_invalid()
        now = self.clock()
        async with self.database.transaction() as session:
            goal = await self._owned_goal(session, caller, goal_id)
            if goal.status != GoalStatus.OPEN:
                raise domain.GoalNotOpen("only an open goal can be changed", metadata={"status": goal.status})
            if any(getattr(goal, field) != value for field, value in changes.items()):
                for field, value in changes.items():
                    setattr(goal, field, value)
                store.touch(goal, now)
            return goal

    async def cancel_goal(self, caller: Principal, goal_id: str, reason: str) -> store.Goal:
        check = Validator()
        goal_id = check_id(check, goal_id, "goal_id", "INVALID_GOAL_ID")
        reason = reason.strip()
        check.require(
            1 <= len(reason) <= domain.MAX_CANCEL_REASON,
            "reason",
            f"must be 1 to {domain.MAX_CANCEL_REASON} characters",
            "INVALID_CANCEL_REASON",
        )
        check.raise_if_invalid()
        now = self.clock()
        async with self.database.transaction() as session:
            goal = await self._owned_goal(session, caller, goal_id)
            await lifecycle.cancel(session, goal, reason, now)
        self.wake_sagas()
        return goal

    async def _owned_goal(self, session: AsyncSession, caller: Principal, goal_id: str) -> store.Goal:
        goal = await store.get_goal(session, goal_id, lock=True)
        if goal is None:
            raise _not_found_goal(goal_id)
        if str(goal.owner_id) != caller.user_id:
            raise domain.NotGoalOwner("only the goal's owner may do this")
        return goal

    async def books(self, after: tuple[datetime, str] | None, limit: int) -> list[store.Books]:
        async with self.database.transaction() as session:
            # One snapshot for the goals, releases and contributions of the page.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            return await store.list_books(session, after, limit)

    async def watch(self, goal_id: str, after_seq: int = 0) -> AsyncIterator[tuple[store.Progress, bool]]:
        """(progress, heartbeat): the goal's progress now unless the client saw it (`after_seq`),
        then each change the goal's feed publishes, in seq order, until a final status; the
        latest again as a heartbeat when the feed has been quiet (see services.common.feed,
        which also paces and coalesces the changes).

        A goal's progress is one state, not a history, so resuming needs no
        replay: the current state is everything the client missed, coalesced.
        """
        goal_id = parse_id(goal_id, "goal_id", "INVALID_GOAL_ID")
        if after_seq < 0:
            raise _invalid("after_seq", "must not be negative", "INVALID_AFTER_SEQ")
        # Subscribed before reading, so no commit falls between the read and the stream.
        feed = self.broadcaster.subscribe(goal_id)
        handled = feed.frame
        try:
            current = await self._progress(goal_id)
            if current is None:
                raise _not_found_goal(goal_id)
            if after_seq > current.seq:
                # Every seq a client was sent is committed, so this one was not this goal's.
                raise _invalid("after_seq", f"is above the goal's seq, {current.seq}", "INVALID_AFTER_SEQ")
            if current.seq > after_seq:
                yield current, False
            while not current.status.final:
                await feed.wait(handled)
                reread, heartbeat = feed.reread_frame > handled, feed.heartbeat_frame > handled
                handled = feed.frame
                # Notifications may have been lost: read the goal.
                latest = await self._progress(goal_id) if reread else feed.published
                if latest is not None and latest.seq > current.seq:
                    current = latest
                    yield current, False
                elif heartbeat:
                    yield current, True
        finally:
            self.broadcaster.unsubscribe(feed)

    async def _progress(self, goal_id: str) -> store.Progress | None:
        # A short read on its own connection: never hold one while a client is written to.
        async with self.database.engine.connect() as connection:
            return await store.progress_of(connection, goal_id)

    # -- contributions --------------------------------------------------------------------
    async def create_contribution(
        self, caller: Principal, goal_id: str, amount: int, currency: str, idempotency_key: str
    ) -> ContributionCheckout:
        check = Validator()
        goal_id = check_id(check, goal_id, "goal_id", "INVALID_GOAL_ID")
        check.require(
            0 < amount <= domain.MAX_AMOUNT, "amount", "must be positive and at most 10^12 (minor units)",
            "INVALID_AMOUNT",
        )  # fmt: skip
        if check.require(bool(idempotency_key), "idempotency_key", "is required", "MISSING_IDEMPOTENCY_KEY"):
            check.require(
                len(idempotency_key) <= domain.MAX_REQUEST_ID,
                "idempotency_key",
                f"at most {domain.MAX_REQUEST_ID} characters",
                "INVALID_IDEMPOTENCY_KEY",
            )
        check.raise_if_invalid()
        now = self.clock()
        async with self.database.transaction() as session:
            contribution = await store.contribution_by_key(session, caller.user_id, idempotency_key)
            if contribution is None:
                goal = await store.get_goal(session, goal_id)
                if goal is None:
                    raise _not_found_goal(goal_id)
                if currency != goal.currency:
                    raise _invalid("currency", f"must be the goal's currency, {goal.currency}", "CURRENCY_MISMATCH")
                if not domain.takes_contributions(goal.status, goal.deadline, now):
                    raise domain.GoalNotOpen("the goal is not taking contributions", metadata={"status": goal.status})
                await store.insert_contribution(
                    session,
                    {
                        "id": uuid.uuid4(), "goal_id": goal.id, "user_id": uuid.UUID(caller.user_id),
                        "payment_reference": "", "idempotency_key": idempotency_key, "amount": amount,
                        "currency": currency, "status": ContributionStatus.PENDING,
                        "created_at": now, "updated_at": now,
                    },
                )  # fmt: skip
                contribution = await store.contribution_by_key(session, caller.user_id, idempotency_key)
                assert contribution is not None
        if (str(contribution.goal_id), contribution.amount, contribution.currency) != (goal_id, amount, currency):
            raise IdempotencyKeyReused(
                "idempotency_key was used for a different contribution",
                metadata={"contribution_id": str(contribution.id)},
            )
        try:
            payment = await self.payments.initialize_payment(
                idempotency_key=domain.payment_idempotency_key(str(contribution.id)),
                user_id=caller.user_id,
                goal_id=goal_id,
                contribution_id=str(contribution.id),
                amount=amount,
                currency=currency,
            )
        except Refused as exc:
            # Payments said no (Paystack refused, the payer is unknown to identity...):
            # the contribution stays PENDING and a retry with the key may succeed later.
            raise domain.PaymentRejected(
                "the payment could not be started; try another amount or later", metadata={"reason": exc.reason}
            ) from None
        async with self.database.transaction() as session:
            await store.record_payment(session, contribution.id, payment.payment_id, payment.reference, self.clock())
            recorded = await store.get_contribution(session, str(contribution.id))
        assert recorded is not None
        return ContributionCheckout(recorded, payment.authorization_url)

    async def list_contributions(
        self, caller: Principal, goal_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[store.Contribution]:
        goal = await self.goal(goal_id)
        mine_only = None if str(goal.owner_id) == caller.user_id else uuid.UUID(caller.user_id)
        async with self.database.transaction() as session:
            return await store.list_contributions(session, goal.id, user_id=mine_only, after=after, limit=limit)

    async def my_contributions(
        self,
        caller: Principal,
        status: ContributionStatus | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[store.ContributionOfGoal]:
        async with self.database.transaction() as session:
            return await store.list_user_contributions(
                session, uuid.UUID(caller.user_id), status=status, after=after, limit=limit
            )

    async def contribution(self, caller: Principal, contribution_id: str) -> store.Contribution:
        contribution_id = parse_id(contribution_id, "contribution_id", "INVALID_CONTRIBUTION_ID")
        async with self.database.transaction() as session:
            contribution = await store.get_contribution(session, contribution_id)
            goal = await store.get_goal(session, str(contribution.goal_id)) if contribution else None
        if (
            contribution is None
            or goal is None
            or caller.user_id not in (str(contribution.user_id), str(goal.owner_id))
        ):
            raise domain.ContributionNotFound(
                f"contribution {contribution_id} does not exist", metadata={"contribution_id": contribution_id}
            )
        return contribution

    # -- proofs and votes -----------------------------------------------------------------------
    async def create_proof(
        self,
        caller: Principal,
        goal_id: str,
        *,
        title: str,
        description: str,
        media_urls: list[str],
        request_id: str,
    ) -> store.Proof:
        check = Validator()
        goal_id = check_id(check, goal_id, "goal_id", "INVALID_GOAL_ID")
        title = domain.check_title(check, title)
        domain.check_description(check, description)
        domain.validate_media_urls(check, media_urls)
        domain.check_request_id(check, request_id)
        check.raise_if_invalid()
        content = fingerprint(
            {"goal_id": goal_id, "title": title, "description": description, "media_urls": media_urls}
        )
        now = self.clock()
        try:
            async with self.database.transaction() as session:
                # Under the goal's lock, so a concurrent retry finds the first one's proof.
                goal = await self._owned_goal(session, caller, goal_id)
                if request_id:
                    existing = await store.proof_by_request(session, uuid.UUID(caller.user_id), request_id)
                    if existing is not None:
                        return self._replayed_proof(existing, content)
                proofs = await store.proofs_of(session, goal.id)
                pending = any(p.status == ProofStatus.PENDING for p in proofs)
                if len(proofs) >= domain.MAX_PROOFS and not pending:
                    raise domain.ProofLimitReached(f"a goal takes at most {domain.MAX_PROOFS} proofs")
                if goal.status != GoalStatus.FUNDED or goal.outflow is not None:
                    raise domain.GoalNotFunded(
                        "proof can only be submitted for a funded goal", metadata={"status": goal.status}
                    )
                if pending:
                    raise domain.ProofPending("another proof is still in voting")
                proof = store.Proof(
                    id=uuid.uuid4(), goal_id=goal.id, owner_id=goal.owner_id, title=title, description=description,
                    media_urls=list(media_urls), status=ProofStatus.PENDING, attempt=len(proofs) + 1,
                    approve_weight=0, reject_weight=0, voter_count=0,
                    voting_ends_at=now + self.rules.voting_window, created_at=now, updated_at=now,
                    request_id=request_id or None, request_fingerprint=content if request_id else None,
                )  # fmt: skip
                session.add(proof)
                await session.flush()
                return proof
        except IntegrityError:
            # The same request id used at the same time for another goal won the insert.
            if not request_id:
                raise
            async with self.database.transaction() as session:
                existing = await store.proof_by_request(session, uuid.UUID(caller.user_id), request_id)
            if existing is None:
                raise
            return self._replayed_proof(existing, content)

    @staticmethod
    def _replayed_proof(proof: store.Proof, content: str) -> store.Proof:
        if proof.request_fingerprint != content:
            raise IdempotencyKeyReused(
                "request_id was used for a proof with different input", metadata={"proof_id": str(proof.id)}
            )
        return proof

    async def proofs(self, goal_id: str) -> list[store.Proof]:
        goal = await self.goal(goal_id)
        async with self.database.transaction() as session:
            return await store.proofs_of(session, goal.id)

    async def proof(self, proof_id: str) -> store.Proof:
        proof_id = parse_id(proof_id, "proof_id", "INVALID_PROOF_ID")
        async with self.database.transaction() as session:
            proof = await store.get_proof(session, proof_id)
        if proof is None:
            raise domain.ProofNotFound(f"proof {proof_id} does not exist", metadata={"proof_id": proof_id})
        return proof

    async def vote(
        self, caller: Principal, proof_id: str, is_approved: bool, comment: str
    ) -> tuple[store.Vote, store.Proof]:
        check = Validator()
        proof_id = check_id(check, proof_id, "proof_id", "INVALID_PROOF_ID")
        check.require(
            len(comment) <= domain.MAX_COMMENT, "comment", f"at most {domain.MAX_COMMENT} characters", "INVALID_COMMENT"
        )
        check.raise_if_invalid()
        voter = uuid.UUID(caller.user_id)
        now = self.clock()
        decided = False
        async with self.database.transaction() as session:
            # Votes on one goal are serialized by its row lock: lock it first, then
            # read the proof, so each tally sees every vote committed before it.
            goal_id = await store.goal_of_proof(session, proof_id)
            goal = await store.get_goal(session, str(goal_id), lock=True) if goal_id else None
            proof = await store.get_proof(session, proof_id, lock=True) if goal else None
            if goal is None or proof is None:
                raise domain.ProofNotFound(f"proof {proof_id} does not exist", metadata={"proof_id": proof_id})
            if goal.owner_id == voter:
                raise domain.OwnerCannotVote("the goal's owner does not vote on its proofs")
            weight = await store.weight_of(session, goal.id, voter)
            if weight <= 0:
                raise domain.NotAContributor("only the goal's contributors vote")
            if await store.vote_of(session, proof.id, voter) is not None:
                raise domain.AlreadyVoted("you have already voted on this proof")
            open_for_votes = (
                proof.status == ProofStatus.PENDING
                and now < proof.voting_ends_at
                and goal.status == GoalStatus.FUNDED
                and goal.outflow is None
            )
            if not open_for_votes:
                raise domain.VotingClosed("voting on this proof has closed", metadata={"status": proof.status})
            vote = store.Vote(
                id=uuid.uuid4(), proof_id=proof.id, voter_id=voter, is_approved=is_approved, weight=weight,
                comment=comment, created_at=now,
            )  # fmt: skip
            session.add(vote)
            await session.flush()
            # The tally is the stored votes, summed under the lock: never a counter
            # carried over from an earlier read.
            proof.approve_weight, proof.reject_weight, proof.voter_count = await store.vote_totals(session, proof.id)
            store.touch(proof, now)
            await session.flush()
            decision = domain.decide_early(
                await lifecycle.tally(session, goal, proof), self.rules.approval_threshold_bps
            )
            if decision is not None:
                await lifecycle.settle_proof(session, goal, proof, decision, rules=self.rules, now=now)
                decided = True
        if decided:
            self.wake_sagas()
        return vote, proof
