"""What the tests of goals with the real payments service share: checkout, the simulator's controls, payouts.

Every test module that runs the payments path (goals ⇄ payments ⇄ the Paystack
simulator) builds its data with these, so a contribution is paid, a proof
approved or a payout awaited one way everywhere.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
from gofund.goals.v1 import goals_pb2, goals_service_pb2
from gofund.payments.v1 import payments_service_pb2
from pymongo import AsyncMongoClient

from tests.helpers import eventually
from tests.integration.goals_fixtures import Platform, User

SUCCEEDED = goals_pb2.CONTRIBUTION_STATUS_SUCCEEDED


async def checkout(platform: Platform, payer: User, goal: Any, amount: int, key: str | None = None) -> Any:
    request = goals_service_pb2.CreateContributionRequest(
        goal_id=goal.id, amount=amount, currency=goal.currency, idempotency_key=key or uuid.uuid4().hex
    )
    return await platform.goals.public.CreateContribution(request, metadata=payer.auth)


async def simulator(path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(path, json=body or {})


async def pay(started: Any) -> None:
    """The payer presses Pay on the simulator's checkout page."""
    response = await simulator(f"{started.authorization_url}/pay", {"outcome": "success"})
    assert response.status_code == 200, response.text


async def sim(platform: Platform, path: str, body: dict[str, Any] | None = None) -> Any:
    """POST one of the simulator's /_sim controls; its answer."""
    assert platform.simulator is not None
    response = await simulator(f"{platform.simulator.base_url}{path}", body)
    assert response.status_code == 200, response.text
    return response.json()


async def settle(platform: Platform, kind: str, key: str, outcome: str) -> None:
    await sim(platform, f"/_sim/{kind}/{key}/settle", {"outcome": outcome})


async def contribution(platform: Platform, user: User, contribution_id: str) -> Any:
    response = await platform.goals.public.GetContribution(
        goals_service_pb2.GetContributionRequest(contribution_id=contribution_id), metadata=user.auth
    )
    return response.contribution


async def status_is(platform: Platform, user: User, contribution_id: str, status: int) -> Any:
    found = await contribution(platform, user, contribution_id)
    return found if found.status == status else None


async def paid_contribution(platform: Platform, payer: User, goal: Any, amount: int) -> Any:
    started = await checkout(platform, payer, goal, amount)
    await pay(started)
    return await eventually(lambda: status_is(platform, payer, started.contribution.id, SUCCEEDED), timeout_s=15)


async def add_recipient(platform: Platform, owner: User) -> Any:
    """A payout recipient for the owner (an account the simulator resolves)."""
    request = payments_service_pb2.CreatePayoutRecipientRequest(
        account_number="0123456789", bank_code="058", name="Ada Owner", currency="NGN",
        idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    return (await platform.payments.CreatePayoutRecipient(request, metadata=owner.auth)).recipient


async def approve_first_proof(platform: Platform, owner: User, backer: User, goal: Any) -> None:
    """The owner of a funded goal submits a proof and its one backer approves it."""
    proof = (
        await platform.goals.public.CreateProof(
            goals_service_pb2.CreateProofRequest(goal_id=goal.id, title="Receipts"), metadata=owner.auth
        )
    ).proof
    await platform.goals.public.CreateVote(
        goals_service_pb2.CreateVoteRequest(proof_id=proof.id, is_approved=True), metadata=backer.auth
    )


async def sent_payout(platform: Platform, payout_id: str) -> Any:
    """The payout once its transfer is at Paystack (it has a transfer code), else None."""
    try:
        response = await platform.payments_internal.GetPayout(
            payments_service_pb2.GetPayoutRequest(payout_id=payout_id)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return response.payout if response.payout.transfer_code else None


def payments_db(platform: Platform) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(platform.settings.mongodb_url, tz_aware=True)
    return client, client[platform.settings.mongodb_database]


async def payment_doc(platform: Platform, payment_id: str) -> dict[str, Any]:
    client, db = payments_db(platform)
    try:
        doc = await db.payments.find_one({"paymentId": payment_id})
    finally:
        await client.close()
    assert doc is not None
    return doc


async def flagged(platform: Platform, payment_id: str) -> dict[str, Any] | None:
    doc = await payment_doc(platform, payment_id)
    return doc if doc.get("flagged") else None
