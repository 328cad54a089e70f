"""The common ledger client sends exactly the requests goals' and payments' own clients sent.

Ledger transaction ids are the idempotency guarantee of every saga step and webhook: a
replay after a crash posts under the same id and the ledger answers the first result. If
a request's bytes changed (an id, a leg's order, a field), a replay across a deploy could
post twice. The expected bytes below were recorded from the two clients this module
replaced (goals' LedgerGateway, in what was services/goals/gateways.py, and
services/payments/peers.py's Peers, before the move), for the calls each service makes, with ids derived as they are
in production; they are compared as deterministic serialisations.
"""

from __future__ import annotations

from typing import Any

import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2

from services.common import ledger_client
from services.common.ledger_client import (
    CREDIT,
    DEBIT,
    ESCROW,
    GOAL,
    PLATFORM_ENTITY,
    REVENUE,
    USER,
    LedgerClient,
    Posting,
)
from services.goals import domain as goals_domain
from services.payments import domain as payments_domain
from services.payments.peers import Peers

GOAL_ID = "0b5c1e0e-3f55-4d1a-9a43-2d6a1b8e0c11"
OWNER = "7a0f6c52-61a3-4c8e-a0b0-4c1f7f5d9e22"
PAYMENT = "c3d2a1b0-9f8e-4d7c-8b6a-5e4d3c2b1a00"
REFUND = "11111111-2222-4333-8444-555555555555"
PAYOUT = "99999999-8888-4777-8666-555555555555"
PAYMENT_METADATA = {"payment_id": PAYMENT, "goal_id": GOAL_ID, "contribution_id": "cc", "reference": "ref-1"}
PAYOUT_METADATA = {"payout_id": PAYOUT, "goal_id": GOAL_ID, "user_id": OWNER}

# (method, transaction id, request bytes as hex) as the old clients sent them.
GOALS_CALLS = [
    (
        "OpenAccount",
        "",
        "08041208706c6174666f726d1a034e474e",
    ),
    (
        "OpenAccount",
        "",
        "0801122437613066366335322d363161332d346338652d613062302d3463316637663564396532321a034e474e",
    ),
    (
        "OpenAccount",
        "",
        "0802122430623563316530652d336635352d346431612d396134332d3264366131623865306331311a034e474e",
    ),
    (
        "PostTransaction",
        "goal:0b5c1e0e-3f55-4d1a-9a43-2d6a1b8e0c11:release",
        "0a31676f616c3a30623563316530652d336635352d346431612d396134332d3264366131623865306331313a72656c65"
        "61736512140a08676f616c2d616363100118904e22034e474e12130a077265762d616363100218f40322034e474e1215"
        "0a096f776e65722d6163631002189c4a22034e474e1a3472656c65617365206f6620676f616c2030623563316530652d"
        "336635352d346431612d396134332d326436613162386530633131222f0a07676f616c5f696412243062356331653065"
        "2d336635352d346431612d396134332d326436613162386530633131220e0a0870726f6f665f696412027031",
    ),
    (
        "BatchGetBalances",
        "",
        "0a0261310a026132",
    ),
]
PAYMENTS_CALLS = [
    (
        "OpenAccount",
        "",
        "08031208706c6174666f726d1a034e474e",
    ),
    (
        "OpenAccount",
        "",
        "0802122430623563316530652d336635352d346431612d396134332d3264366131623865306331311a034e474e",
    ),
    (
        "OpenAccount",
        "",
        "0801122437613066366335322d363161332d346338652d613062302d3463316637663564396532321a03474853",
    ),
    (
        "PostTransaction",
        "payment:c3d2a1b0-9f8e-4d7c-8b6a-5e4d3c2b1a00:capture",
        "0a347061796d656e743a63336432613162302d396638652d346437632d386236612d3565346433633262316130303a63"
        "617074757265120f0a03657363100118c41322034e474e12100a04676f616c100218c41322034e474e1a21636f6e7472"
        "69627574696f6e20636170747572656420627920506179737461636b22150a0f636f6e747269627574696f6e5f696412"
        "026363222f0a07676f616c5f6964122430623563316530652d336635352d346431612d396134332d3264366131623865"
        "3063313122320a0a7061796d656e745f6964122463336432613162302d396638652d346437632d386236612d35653464"
        "336332623161303022120a097265666572656e636512057265662d31",
    ),
    (
        "PostTransaction",
        "refund:eecc5d7a-3603-5a25-8625-8ca384f80c4e:reserve",
        "0a33726566756e643a65656363356437612d333630332d356132352d383632352d3863613338346638306334653a7265"
        "736572766512100a04676f616c100118c41322034e474e120f0a03657363100218c41322034e474e1a28726566756e64"
        "207265736572766564206265666f726520506179737461636b2069732061736b656422150a0f636f6e74726962757469"
        "6f6e5f696412026363222f0a07676f616c5f6964122430623563316530652d336635352d346431612d396134332d3264"
        "3661316238653063313122320a0a7061796d656e745f6964122463336432613162302d396638652d346437632d386236"
        "612d35653464336332623161303022120a097265666572656e636512057265662d3122310a09726566756e645f696412"
        "2431313131313131312d323232322d343333332d383434342d3535353535353535353535352801",
    ),
    (
        "PostPendingTransaction",
        "refund:eecc5d7a-3603-5a25-8625-8ca384f80c4e:settle",
        "0a32726566756e643a65656363356437612d333630332d356132352d383632352d3863613338346638306334653a7365"
        "74746c651233726566756e643a65656363356437612d333630332d356132352d383632352d3863613338346638306334"
        "653a726573657276651a2e636f6e747269627574696f6e20726566756e64656420746f20746865207061796572206279"
        "20506179737461636b22150a0f636f6e747269627574696f6e5f696412026363222f0a07676f616c5f69641224306235"
        "63316530652d336635352d346431612d396134332d32643661316238653063313122320a0a7061796d656e745f696412"
        "2463336432613162302d396638652d346437632d386236612d35653464336332623161303022180a1270617973746163"
        "6b5f726566756e645f69641202373722120a097265666572656e636512057265662d3122310a09726566756e645f6964"
        "122431313131313131312d323232322d343333332d383434342d353535353535353535353535",
    ),
    (
        "VoidPendingTransaction",
        "refund:eecc5d7a-3603-5a25-8625-8ca384f80c4e:void",
        "0a30726566756e643a65656363356437612d333630332d356132352d383632352d3863613338346638306334653a766f"
        "69641233726566756e643a65656363356437612d333630332d356132352d383632352d3863613338346638306334653a"
        "726573657276651a38726566756e64206661696c656420617420506179737461636b3b20746865206d6f6e6579207374"
        "61797320776974682074686520676f616c22150a0f636f6e747269627574696f6e5f696412026363222f0a07676f616c"
        "5f6964122430623563316530652d336635352d346431612d396134332d32643661316238653063313122320a0a706179"
        "6d656e745f6964122463336432613162302d396638652d346437632d386236612d35653464336332623161303022180a"
        "12706179737461636b5f726566756e645f69641202373722120a097265666572656e636512057265662d3122310a0972"
        "6566756e645f6964122431313131313131312d323232322d343333332d383434342d353535353535353535353535",
    ),
    (
        "PostTransaction",
        "payout:99999999-8888-4777-8666-555555555555:reserve",
        "0a337061796f75743a39393939393939392d383838382d343737372d383636362d3535353535353535353535353a7265"
        "736572766512100a04757365721001189c4a22034e474e120f0a036573631002189c4a22034e474e1a287061796f7574"
        "207265736572766564206265666f726520506179737461636b2069732061736b6564222f0a07676f616c5f6964122430"
        "623563316530652d336635352d346431612d396134332d32643661316238653063313122310a097061796f75745f6964"
        "122439393939393939392d383838382d343737372d383636362d353535353535353535353535222f0a07757365725f69"
        "64122437613066366335322d363161332d346338652d613062302d3463316637663564396532322801",
    ),
    (
        "PostPendingTransaction",
        "payout:99999999-8888-4777-8666-555555555555:transfer",
        "0a347061796f75743a39393939393939392d383838382d343737372d383636362d3535353535353535353535353a7472"
        "616e7366657212337061796f75743a39393939393939392d383838382d343737372d383636362d353535353535353535"
        "3535353a726573657276651a2b7061796f75742073656e7420746f20746865206f776e657227732062616e6b20627920"
        "506179737461636b222f0a07676f616c5f6964122430623563316530652d336635352d346431612d396134332d326436"
        "61316238653063313122310a097061796f75745f6964122439393939393939392d383838382d343737372d383636362d"
        "353535353535353535353535222f0a07757365725f6964122437613066366335322d363161332d346338652d61306230"
        "2d346331663766356439653232",
    ),
    (
        "VoidPendingTransaction",
        "payout:99999999-8888-4777-8666-555555555555:void",
        "0a307061796f75743a39393939393939392d383838382d343737372d383636362d3535353535353535353535353a766f"
        "696412337061796f75743a39393939393939392d383838382d343737372d383636362d3535353535353535353535353a"
        "726573657276651a367061796f7574206661696c656420617420506179737461636b3b20746865206d6f6e6579207374"
        "61797320746865206f776e65722773222f0a07676f616c5f6964122430623563316530652d336635352d346431612d39"
        "6134332d32643661316238653063313122310a097061796f75745f6964122439393939393939392d383838382d343737"
        "372d383636362d353535353535353535353535222f0a07757365725f6964122437613066366335322d363161332d3463"
        "38652d613062302d346331663766356439653232",
    ),
    (
        "PostTransaction",
        "payout:99999999-8888-4777-8666-555555555555:reversal",
        "0a347061796f75743a39393939393939392d383838382d343737372d383636362d3535353535353535353535353a7265"
        "76657273616c120f0a036573631001189c4a22034e474e12100a04757365721002189c4a22034e474e1a3b7061796f75"
        "7420726576657273656420627920506179737461636b3b20746865206d6f6e657920697320746865206f776e65722773"
        "20616761696e222f0a07676f616c5f6964122430623563316530652d336635352d346431612d396134332d3264366131"
        "6238653063313122310a097061796f75745f6964122439393939393939392d383838382d343737372d383636362d3535"
        "35353535353535353535222f0a07757365725f6964122437613066366335322d363161332d346338652d613062302d34"
        "6331663766356439653232",
    ),
    (
        "BatchGetBalances",
        "",
        "0a0261310a026132",
    ),
]


class Recorder:
    """Stands in for the generated ledger stub: records each request and answers the
    least a caller reads (an account id), so the requests themselves can be compared."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __getattr__(self, method: str) -> Any:
        async def call(request: Any, **_: Any) -> Any:
            self.calls.append(
                (method, getattr(request, "transaction_id", ""), request.SerializeToString(deterministic=True).hex())
            )
            if method == "OpenAccount":
                return ledger_service_pb2.OpenAccountResponse(account=ledger_pb2.Account(id=f"acc-{len(self.calls)}"))
            if method == "BatchGetBalances":
                return ledger_service_pb2.BatchGetBalancesResponse()
            return None

        return call


def client() -> tuple[LedgerClient, Recorder]:
    recorder = Recorder()
    return LedgerClient(recorder), recorder  # type: ignore[arg-type]


def expected(calls: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [(method, transaction_id, "".join(hex_)) for method, transaction_id, *hex_ in calls]


@pytest.mark.asyncio
async def test_goals_release_and_account_requests_are_the_ones_goals_sent() -> None:
    ledger, recorder = client()
    await ledger.account(REVENUE, PLATFORM_ENTITY, "NGN")
    await ledger.account(USER, OWNER, "NGN")
    await ledger.account(GOAL, GOAL_ID, "NGN")
    await ledger.post(
        goals_domain.release_transaction_id(GOAL_ID),
        [Posting("goal-acc", DEBIT, 10_000), Posting("rev-acc", CREDIT, 500), Posting("owner-acc", CREDIT, 9_500)],
        "NGN",
        f"release of goal {GOAL_ID}",
        {"goal_id": GOAL_ID, "proof_id": "p1"},
    )
    await ledger.balances(["a1", "a2"])
    assert recorder.calls == expected(GOALS_CALLS)


@pytest.mark.asyncio
async def test_payments_capture_refund_and_payout_requests_are_the_ones_payments_sent() -> None:
    ledger, recorder = client()
    peers = Peers.__new__(Peers)  # only its ledger is used here; no channels to open
    peers.ledger = ledger
    await ledger.account(ESCROW, PLATFORM_ENTITY, "NGN")
    await ledger.account(GOAL, GOAL_ID, "NGN")
    await ledger.account(USER, OWNER, "GHS")
    await ledger.post(
        payments_domain.capture_transaction_id(PAYMENT),
        ledger_client.transfer(debit="esc", credit="goal", amount=2_500),
        "NGN",
        "contribution captured by Paystack",
        PAYMENT_METADATA,
    )
    key = payments_domain.refund_key(PAYMENT, REFUND)
    refund_metadata = {**PAYMENT_METADATA, "refund_id": REFUND}
    await peers.reserve(
        payments_domain.refund_reserve_id(key),
        debit="goal",
        credit="esc",
        amount=2_500,
        currency="NGN",
        description="refund reserved before Paystack is asked",
        metadata=refund_metadata,
    )
    settled = {**refund_metadata, "paystack_refund_id": "77"}
    reserved = payments_domain.refund_reserve_id(key)
    await ledger.post_reserved(
        payments_domain.refund_settle_id(key), reserved, "contribution refunded to the payer by Paystack", settled
    )
    await ledger.void_reserved(
        payments_domain.refund_void_id(key),
        reserved,
        "refund failed at Paystack; the money stays with the goal",
        settled,
    )
    await peers.reserve(
        payments_domain.payout_reserve_id(PAYOUT),
        debit="user",
        credit="esc",
        amount=9_500,
        currency="NGN",
        description="payout reserved before Paystack is asked",
        metadata=PAYOUT_METADATA,
    )
    reserved = payments_domain.payout_reserve_id(PAYOUT)
    await ledger.post_reserved(
        payments_domain.payout_transaction_id(PAYOUT),
        reserved,
        "payout sent to the owner's bank by Paystack",
        PAYOUT_METADATA,
    )
    await ledger.void_reserved(
        payments_domain.payout_void_id(PAYOUT),
        reserved,
        "payout failed at Paystack; the money stays the owner's",
        PAYOUT_METADATA,
    )
    await ledger.post(
        payments_domain.payout_reversal_transaction_id(PAYOUT),
        ledger_client.transfer(debit="esc", credit="user", amount=9_500),
        "NGN",
        "payout reversed by Paystack; the money is the owner's again",
        PAYOUT_METADATA,
    )
    await ledger.balances(["a1", "a2"])
    assert recorder.calls == expected(PAYMENTS_CALLS)


@pytest.mark.asyncio
async def test_an_account_is_opened_once_per_type_entity_and_currency() -> None:
    ledger, recorder = client()
    first = await ledger.account(ESCROW, PLATFORM_ENTITY, "NGN")
    again = await ledger.account(ESCROW, PLATFORM_ENTITY, "NGN")
    other_currency = await ledger.account(ESCROW, PLATFORM_ENTITY, "GHS")
    assert first == again != other_currency
    assert [method for method, *_ in recorder.calls] == ["OpenAccount", "OpenAccount"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("count", "requests"), [(0, 0), (1, 1), (500, 1), (501, 2), (1_200, 3)])
async def test_balances_are_asked_for_in_pages_the_ledger_accepts(count: int, requests: int) -> None:
    ledger, recorder = client()
    await ledger.balances([f"a{i}" for i in range(count)])
    assert len(recorder.calls) == requests


def test_a_transfer_debits_first_then_credits_the_same_amount() -> None:
    assert ledger_client.transfer(debit="from", credit="to", amount=7) == [
        Posting("from", DEBIT, 7),
        Posting("to", CREDIT, 7),
    ]
