"""gRPC adapter for the goals service: proto in, use case, proto out. No rules, no SQL."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import grpc
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc

from services.common import paging
from services.common.context import caller, caller_or_none
from services.common.errors import ErrorMapping, ErrorTable, FieldViolation, ValidationFailed, Validator
from services.common.ids import canonical_id, check_id
from services.common.proto import request_datetime, timestamp
from services.common.resume import resume_after
from services.goals import domain, store
from services.goals.domain import ContributionStatus, GoalStatus, Outflow, ProofStatus
from services.goals.use_cases import Goals

Code = grpc.StatusCode
ERRORS = ErrorTable(
    domain="goals.gofund",
    entries={
        domain.GoalNotFound: ErrorMapping(Code.NOT_FOUND, "GOAL_NOT_FOUND"),
        domain.ContributionNotFound: ErrorMapping(Code.NOT_FOUND, "CONTRIBUTION_NOT_FOUND"),
        domain.ProofNotFound: ErrorMapping(Code.NOT_FOUND, "PROOF_NOT_FOUND"),
        domain.NotGoalOwner: ErrorMapping(Code.PERMISSION_DENIED, "NOT_GOAL_OWNER"),
        domain.GoalNotOpen: ErrorMapping(Code.FAILED_PRECONDITION, "GOAL_NOT_OPEN"),
        domain.GoalNotCancellable: ErrorMapping(Code.FAILED_PRECONDITION, "GOAL_NOT_CANCELLABLE"),
        domain.GoalNotFunded: ErrorMapping(Code.FAILED_PRECONDITION, "GOAL_NOT_FUNDED"),
        domain.IllegalGoalMove: ErrorMapping(Code.FAILED_PRECONDITION, "GOAL_STATE_CONFLICT"),
        domain.ProofPending: ErrorMapping(Code.FAILED_PRECONDITION, "PROOF_PENDING"),
        domain.ProofLimitReached: ErrorMapping(Code.FAILED_PRECONDITION, "PROOF_LIMIT_REACHED"),
        domain.NotAContributor: ErrorMapping(Code.PERMISSION_DENIED, "NOT_A_CONTRIBUTOR"),
        domain.OwnerCannotVote: ErrorMapping(Code.PERMISSION_DENIED, "OWNER_CANNOT_VOTE"),
        domain.VotingClosed: ErrorMapping(Code.FAILED_PRECONDITION, "VOTING_CLOSED"),
        domain.AlreadyVoted: ErrorMapping(Code.ALREADY_EXISTS, "ALREADY_VOTED"),
        domain.LedgerUnavailable: ErrorMapping(Code.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
        domain.PaymentsUnavailable: ErrorMapping(Code.UNAVAILABLE, "PAYMENTS_UNAVAILABLE"),
        domain.PaymentRejected: ErrorMapping(Code.FAILED_PRECONDITION, "PAYSTACK_REJECTED"),
    },
)

# Methods a caller may use without logging in.
ANONYMOUS = [
    "GoalsService/GetGoal",
    "GoalsService/ListGoals",
    "GoalsService/WatchGoal",
    "GoalsService/ListProofs",
    "GoalsService/GetProof",
]

_GOAL_STATUS = {s: getattr(goals_pb2, f"GOAL_STATUS_{s.value}") for s in GoalStatus}
_GOAL_STATUS_OF = {v: k for k, v in _GOAL_STATUS.items()}
_CONTRIBUTION_STATUS = {s: getattr(goals_pb2, f"CONTRIBUTION_STATUS_{s.value}") for s in ContributionStatus}
_CONTRIBUTION_STATUS_OF = {v: k for k, v in _CONTRIBUTION_STATUS.items()}
_PROOF_STATUS = {s: getattr(goals_pb2, f"PROOF_STATUS_{s.value}") for s in ProofStatus}
UpdatableField = Literal["title", "description"]
UPDATABLE_FIELDS: tuple[UpdatableField, ...] = ("title", "description")


def goal_message(goal: store.Goal) -> goals_pb2.Goal:
    message = goals_pb2.Goal(
        id=str(goal.id),
        owner_id=str(goal.owner_id),
        title=goal.title,
        description=goal.description,
        target_amount=goal.target_amount,
        currency=goal.currency,
        deadline=timestamp(goal.deadline),
        status=_GOAL_STATUS[goal.status],
        raised_amount=goal.raised_amount,
        contributor_count=goal.contributor_count,
        account_id=str(goal.account_id or ""),
        created_at=timestamp(goal.created_at),
        updated_at=timestamp(goal.updated_at),
        cancel_reason=goal.cancel_reason,
    )
    if goal.funded_at is not None:
        message.funded_at.CopyFrom(timestamp(goal.funded_at))
    return message


def contribution_message(contribution: store.Contribution) -> goals_pb2.Contribution:
    return goals_pb2.Contribution(
        id=str(contribution.id),
        goal_id=str(contribution.goal_id),
        user_id=str(contribution.user_id),
        payment_id=contribution.payment_id or "",
        amount=contribution.amount,
        currency=contribution.currency,
        status=_CONTRIBUTION_STATUS[contribution.status],
        created_at=timestamp(contribution.created_at),
        updated_at=timestamp(contribution.updated_at),
        payment_reference=contribution.payment_reference,
    )


def proof_message(proof: store.Proof) -> goals_pb2.Proof:
    message = goals_pb2.Proof(
        id=str(proof.id),
        goal_id=str(proof.goal_id),
        owner_id=str(proof.owner_id),
        title=proof.title,
        description=proof.description,
        media_urls=[str(u) for u in proof.media_urls],
        status=_PROOF_STATUS[proof.status],
        approve_weight=proof.approve_weight,
        reject_weight=proof.reject_weight,
        voter_count=proof.voter_count,
        voting_ends_at=timestamp(proof.voting_ends_at),
        attempt=proof.attempt,
        created_at=timestamp(proof.created_at),
        updated_at=timestamp(proof.updated_at),
    )
    if proof.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(proof.decided_at))
    return message


def vote_message(vote: store.Vote) -> goals_pb2.Vote:
    return goals_pb2.Vote(
        id=str(vote.id),
        proof_id=str(vote.proof_id),
        voter_id=str(vote.voter_id),
        is_approved=vote.is_approved,
        weight=vote.weight,
        comment=vote.comment,
        created_at=timestamp(vote.created_at),
    )


# Every watcher of a goal receives the same message for a change: serialize it
# once (the interceptor passes bytes through) and share it.
@functools.lru_cache(maxsize=4096)
def progress_bytes(progress: store.Progress, heartbeat: bool = False) -> bytes:
    return goals_service_pb2.WatchGoalResponse(
        goal_id=progress.goal_id,
        status=_GOAL_STATUS[progress.status],
        raised_amount=progress.raised_amount,
        target_amount=progress.target_amount,
        contributor_count=progress.contributor_count,
        seq=progress.seq,
        currency=progress.currency,
        heartbeat=heartbeat,
    ).SerializeToString()


def _bad_token() -> ValidationFailed:
    return ValidationFailed(
        [FieldViolation("page_token", "is not a token for this list and these filters", "INVALID_PAGE_TOKEN")]
    )


_OUTFLOW: dict[Outflow | None, goals_pb2.GoalOutflow.ValueType] = {
    None: goals_pb2.GOAL_OUTFLOW_UNSPECIFIED,
    Outflow.RELEASE: goals_pb2.GOAL_OUTFLOW_RELEASE,
    Outflow.REFUND: goals_pb2.GOAL_OUTFLOW_REFUND,
}


def books_message(books: store.Books) -> goals_pb2.GoalBooks:
    goal = books.goal
    return goals_pb2.GoalBooks(
        goal_id=str(goal.id),
        status=_GOAL_STATUS[goal.status],
        outflow=_OUTFLOW[goal.outflow],
        currency=goal.currency,
        account_id=str(goal.account_id or ""),
        raised_amount=goal.raised_amount,
        released_amount=books.release.amount if books.release else 0,
        release_fee=books.release.fee if books.release else 0,
        contributions=[
            goals_pb2.ContributionBooks(
                contribution_id=str(c.id),
                payment_id=c.payment_id or "",
                status=_CONTRIBUTION_STATUS[c.status],
                amount=c.amount,
                late=c.refund_on_confirm,
            )
            for c in books.contributions
        ],
    )


def decode_cursor(token: str, scope: dict[str, Any]) -> tuple[datetime, str] | None:
    """The (created_at, id) position of a page token issued for the same `scope` (filters).

    The token is signed (services.common.paging); the scope is compared too, so a
    page of one goal's contributions never continues another's list."""
    schema: paging.Schema = {
        "created_at": datetime,
        "id": str,
        "scope": {name: type(value) for name, value in scope.items()},
    }
    cursor = paging.decode_token(token, schema)
    if cursor is None:
        return None
    row_id = canonical_id(cursor["id"])
    if cursor["scope"] != scope or row_id is None:
        raise _bad_token()
    return cursor["created_at"], row_id


def encode_cursor(created_at: datetime, row_id: object, scope: dict[str, Any]) -> str:
    return paging.encode_token({"created_at": created_at, "id": str(row_id), "scope": scope})


class GoalsServicer(goals_service_pb2_grpc.GoalsServiceServicer):
    """Public RPCs (routed by Envoy)."""

    def __init__(self, goals: Goals) -> None:
        self.goals = goals

    async def CreateGoal(
        self, request: goals_service_pb2.CreateGoalRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.CreateGoalResponse:
        deadline = request_datetime(request, "deadline", "INVALID_DEADLINE")
        goal = await self.goals.create_goal(
            caller_or_none(),
            domain.NewGoal(
                title=request.title,
                description=request.description,
                target_amount=request.target_amount,
                currency=request.currency,
                deadline=deadline,
                request_id=request.request_id,
            ),
        )
        return goals_service_pb2.CreateGoalResponse(goal=goal_message(goal))

    async def GetGoal(
        self, request: goals_service_pb2.GetGoalRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.GetGoalResponse:
        return goals_service_pb2.GetGoalResponse(goal=goal_message(await self.goals.goal(request.goal_id)))

    async def ListGoals(
        self, request: goals_service_pb2.ListGoalsRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.ListGoalsResponse:
        check = Validator()
        known = request.status == goals_pb2.GOAL_STATUS_UNSPECIFIED or request.status in _GOAL_STATUS_OF
        check.require(known, "status", "unknown goal status", "INVALID_STATUS")
        owner_id = check_id(check, request.owner_id, "owner_id", "INVALID_OWNER_ID") if request.owner_id else None
        check.raise_if_invalid()
        size = paging.page_size(request.page_size)
        scope = {"status": int(request.status), "owner_id": owner_id or ""}
        after = decode_cursor(request.page_token, scope)
        status = _GOAL_STATUS_OF.get(request.status)
        goals = await self.goals.list_goals(status, owner_id, after, size + 1)
        token = encode_cursor(goals[size - 1].created_at, goals[size - 1].id, scope) if len(goals) > size else ""
        return goals_service_pb2.ListGoalsResponse(goals=[goal_message(g) for g in goals[:size]], next_page_token=token)

    async def UpdateGoal(
        self, request: goals_service_pb2.UpdateGoalRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.UpdateGoalResponse:
        paths = list(request.update_mask.paths)
        unknown = [p for p in paths if p not in UPDATABLE_FIELDS]
        if unknown:
            raise ValidationFailed(
                [FieldViolation("update_mask", f"cannot update {', '.join(unknown)}", "INVALID_UPDATE_MASK")]
            )
        # The mask's paths as field names (the check above left no other), in the mask's order.
        masked = [f for p in paths for f in UPDATABLE_FIELDS if f == p]
        fields = masked or [f for f in UPDATABLE_FIELDS if request.HasField(f)]
        # A field the mask names but the request leaves out is cleared (AIP-134).
        changes: dict[str, str] = {f: getattr(request, f) if request.HasField(f) else "" for f in fields}
        goal = await self.goals.update_goal(caller(), request.goal_id, changes)
        return goals_service_pb2.UpdateGoalResponse(goal=goal_message(goal))

    async def CancelGoal(
        self, request: goals_service_pb2.CancelGoalRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.CancelGoalResponse:
        goal = await self.goals.cancel_goal(caller(), request.goal_id, request.reason)
        return goals_service_pb2.CancelGoalResponse(goal=goal_message(goal))

    # Streams yield pre-serialized messages (see progress_bytes), hence the override.
    async def WatchGoal(  # type: ignore[override]
        self, request: goals_service_pb2.WatchGoalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        progress = self.goals.watch(request.goal_id, resume_after(request.after_seq, context))
        async for state, heartbeat in progress:
            yield progress_bytes(state, heartbeat)

    async def CreateContribution(
        self, request: goals_service_pb2.CreateContributionRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.CreateContributionResponse:
        checkout = await self.goals.create_contribution(
            caller(), request.goal_id, request.amount, request.currency, request.idempotency_key
        )
        return goals_service_pb2.CreateContributionResponse(
            contribution=contribution_message(checkout.contribution),
            authorization_url=checkout.authorization_url,
            payment_reference=checkout.contribution.payment_reference,
        )

    async def ListContributions(
        self, request: goals_service_pb2.ListContributionsRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.ListContributionsResponse:
        principal = caller()
        size = paging.page_size(request.page_size)
        goal_id = canonical_id(request.goal_id) or request.goal_id
        scope = {"goal_id": goal_id}
        after = decode_cursor(request.page_token, scope)
        rows = await self.goals.list_contributions(principal, request.goal_id, after, size + 1)
        token = encode_cursor(rows[size - 1].created_at, rows[size - 1].id, scope) if len(rows) > size else ""
        return goals_service_pb2.ListContributionsResponse(
            contributions=[contribution_message(c) for c in rows[:size]], next_page_token=token
        )

    async def ListMyContributions(
        self, request: goals_service_pb2.ListMyContributionsRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.ListMyContributionsResponse:
        principal = caller()
        known = request.status == goals_pb2.CONTRIBUTION_STATUS_UNSPECIFIED or request.status in _CONTRIBUTION_STATUS_OF
        if not known:
            raise ValidationFailed([FieldViolation("status", "unknown contribution status", "INVALID_STATUS")])
        size = paging.page_size(request.page_size)
        # The caller is in the scope: one person's token does not page through another's list.
        scope = {"user_id": principal.user_id, "status": int(request.status)}
        after = decode_cursor(request.page_token, scope)
        status = _CONTRIBUTION_STATUS_OF.get(request.status)
        rows = await self.goals.my_contributions(principal, status, after, size + 1)
        last = rows[size - 1].contribution if len(rows) > size else None
        token = encode_cursor(last.created_at, last.id, scope) if last is not None else ""
        return goals_service_pb2.ListMyContributionsResponse(
            contributions=[
                goals_service_pb2.MyContribution(
                    contribution=contribution_message(row.contribution),
                    goal_title=row.goal_title,
                    goal_status=_GOAL_STATUS[row.goal_status],
                )
                for row in rows[:size]
            ],
            next_page_token=token,
        )

    async def GetContribution(
        self, request: goals_service_pb2.GetContributionRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.GetContributionResponse:
        contribution = await self.goals.contribution(caller(), request.contribution_id)
        return goals_service_pb2.GetContributionResponse(contribution=contribution_message(contribution))

    async def CreateProof(
        self, request: goals_service_pb2.CreateProofRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.CreateProofResponse:
        proof = await self.goals.create_proof(
            caller(),
            request.goal_id,
            title=request.title,
            description=request.description,
            media_urls=list(request.media_urls),
            request_id=request.request_id,
        )
        return goals_service_pb2.CreateProofResponse(proof=proof_message(proof))

    async def ListProofs(
        self, request: goals_service_pb2.ListProofsRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.ListProofsResponse:
        proofs = await self.goals.proofs(request.goal_id)
        return goals_service_pb2.ListProofsResponse(proofs=[proof_message(p) for p in proofs])

    async def GetProof(
        self, request: goals_service_pb2.GetProofRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.GetProofResponse:
        return goals_service_pb2.GetProofResponse(proof=proof_message(await self.goals.proof(request.proof_id)))

    async def CreateVote(
        self, request: goals_service_pb2.CreateVoteRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.CreateVoteResponse:
        vote, proof = await self.goals.vote(caller(), request.proof_id, request.is_approved, request.comment)
        return goals_service_pb2.CreateVoteResponse(vote=vote_message(vote), proof=proof_message(proof))


class GoalsInternalServicer(goals_service_pb2_grpc.GoalsInternalServiceServicer):
    """Internal RPCs: payments' reconciliation reads every goal's books."""

    def __init__(self, goals: Goals) -> None:
        self.goals = goals

    async def ListGoalBooks(
        self, request: goals_service_pb2.ListGoalBooksRequest, context: grpc.aio.ServicerContext
    ) -> goals_service_pb2.ListGoalBooksResponse:
        size = paging.page_size(request.page_size)
        scope = {"books": True}
        after = decode_cursor(request.page_token, scope)
        books = await self.goals.books(after, size + 1)
        last = books[size - 1].goal if len(books) > size else None
        token = encode_cursor(last.created_at, last.id, scope) if last else ""
        return goals_service_pb2.ListGoalBooksResponse(
            goal_books=[books_message(b) for b in books[:size]], next_page_token=token
        )
