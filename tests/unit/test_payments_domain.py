"""Payment rules without I/O: signatures, event ids, verify verdicts, status moves, validation."""

from __future__ import annotations

import json
import uuid

import pytest

from services.common.errors import ValidationFailed
from services.common.idempotency import fingerprint
from services.payments import domain
from services.payments.domain import PaymentStatus

SECRET = "sk_test_unit"


def body(event: str, **data: object) -> bytes:
    return json.dumps({"event": event, "data": data}).encode()


def test_signature_is_hmac_sha512_of_the_exact_bytes() -> None:
    raw = body("charge.success", reference="gf_1", amount=500)
    assert domain.signature_valid(SECRET, raw, domain.sign(SECRET, raw))


def test_a_body_altered_by_one_byte_fails_the_signature() -> None:
    raw = body("charge.success", reference="gf_1", amount=500)
    signature = domain.sign(SECRET, raw)
    altered = raw.replace(b"500", b"900")
    assert not domain.signature_valid(SECRET, altered, signature)


@pytest.mark.parametrize("signature", ["", "00" * 64, "not-hex"])
def test_missing_or_forged_signatures_are_refused(signature: str) -> None:
    assert not domain.signature_valid(SECRET, body("charge.success", reference="gf_1"), signature)


def test_a_signature_made_with_another_key_is_refused() -> None:
    raw = body("charge.success", reference="gf_1")
    assert not domain.signature_valid(SECRET, raw, domain.sign("sk_other", raw))


def test_event_ids_derive_from_the_event_and_its_object() -> None:
    assert domain.parse_event(body("charge.success", reference="gf_1", id=9)).event_id == "charge.success:gf_1"
    assert domain.parse_event(body("refund.processed", id=77, transaction_reference="gf_1")).event_id == (
        "refund.processed:77"
    )
    assert domain.parse_event(body("transfer.success", transfer_code="TRF_x", reference="r")).event_id == (
        "transfer.success:TRF_x"
    )


def test_the_same_object_under_two_events_gets_two_ids() -> None:
    success = domain.parse_event(body("transfer.success", transfer_code="TRF_x"))
    reversed_ = domain.parse_event(body("transfer.reversed", transfer_code="TRF_x"))
    assert success.event_id != reversed_.event_id


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", json.dumps({"event": "charge.success"}).encode(), body("charge.success", amount=5)],
)
def test_bodies_that_are_not_identifiable_events_are_malformed(raw: bytes) -> None:
    with pytest.raises(domain.MalformedEvent):
        domain.parse_event(raw)


def test_unknown_event_types_parse_but_are_not_handled() -> None:
    parsed = domain.parse_event(body("subscription.create", code="SUB_1"))
    assert not parsed.handled


def test_verify_success_with_our_amount_and_currency_credits() -> None:
    assert domain.judge_verification("success", 500, "ngn", 500, "NGN").status is PaymentStatus.SUCCESS


def test_verify_with_another_amount_is_a_mismatch_and_moves_nothing() -> None:
    verdict = domain.judge_verification("success", 400, "NGN", 500, "NGN")
    assert verdict.status is None
    assert "400" in verdict.mismatch


def test_verify_with_another_currency_is_a_mismatch() -> None:
    assert domain.judge_verification("success", 500, "GHS", 500, "NGN").mismatch


@pytest.mark.parametrize("status", ["abandoned", "ongoing", "pending"])
def test_an_unfinished_checkout_leaves_the_payment_pending(status: str) -> None:
    assert domain.judge_verification(status, 0, "NGN", 500, "NGN") == domain.Verdict(None)


def test_a_failed_charge_fails_the_payment() -> None:
    assert domain.judge_verification("failed", 500, "NGN", 500, "NGN").status is PaymentStatus.FAILED


def test_a_refund_event_without_its_own_id_is_told_apart_by_its_bytes() -> None:
    first = body("refund.failed", transaction_reference="gf-1", amount=100)
    second = body("refund.failed", transaction_reference="gf-1", amount=200)
    assert domain.parse_event(first).event_id == domain.parse_event(first).event_id
    assert domain.parse_event(first).event_id != domain.parse_event(second).event_id
    assert domain.parse_event(body("refund.processed", refund_reference="RF1")).event_id == "refund.processed:RF1"


def test_paystacks_refusals_of_our_own_earlier_attempts_are_recognised() -> None:
    assert domain.duplicate_reference(domain.PaystackRejected("Duplicate Transaction Reference"))
    assert domain.duplicate_reference(
        domain.PaystackRejected("Please provide a unique reference. Reference already exists on a transfer")
    )
    assert domain.duplicate_reference(domain.PaystackRejected("anything", code="duplicate_reference"))
    assert not domain.duplicate_reference(
        domain.PaystackRejected("Recipient specified is invalid", code="invalid_transfer_recipient")
    )
    assert domain.reference_not_found(domain.PaystackRejected("x", code="transaction_not_found"))
    assert domain.reference_not_found(domain.PaystackRejected("Transaction reference not found"))
    assert domain.already_refunded("Transaction has been fully reversed")
    assert not domain.already_refunded("Transaction not found")


def test_references_are_fixed_per_payment_and_change_only_per_attempt() -> None:
    payment_id = str(uuid.uuid4())
    assert domain.payment_reference(payment_id) == domain.payment_reference(payment_id)
    assert domain.payment_reference(payment_id, 1) != domain.payment_reference(payment_id)


def test_initialize_reports_every_invalid_field_at_once() -> None:
    with pytest.raises(ValidationFailed) as raised:
        domain.validate_initialize(
            idempotency_key="",
            user_id="x",
            goal_id="y",
            contribution_id="z",
            amount=0,
            currency="EUR",
            callback="ftp://example",
        )
    reasons = {v.reason for v in raised.value.violations}
    assert reasons == {
        "INVALID_IDEMPOTENCY_KEY",
        "INVALID_USER_ID",
        "INVALID_GOAL_ID",
        "INVALID_CONTRIBUTION_ID",
        "INVALID_AMOUNT",
        "UNSUPPORTED_CURRENCY",
        "INVALID_CALLBACK_URL",
    }


def test_recipient_validation_names_each_field() -> None:
    with pytest.raises(ValidationFailed) as raised:
        domain.validate_recipient(account_number="12ab", bank_code="", name=" ", currency="NGN", idempotency_key="k")
    assert {v.field for v in raised.value.violations} == {"account_number", "bank_code", "name"}


def test_fingerprints_ignore_key_order() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_settled_payments_and_payouts_never_move_again() -> None:
    for moves, finals in (
        (domain.PAYMENT_MOVES, {PaymentStatus.FAILED, PaymentStatus.ABANDONED, PaymentStatus.REFUNDED}),
        (domain.PAYOUT_MOVES, {domain.PayoutStatus.FAILED, domain.PayoutStatus.REVERSED}),
    ):
        leaving = {source for move in moves.values() for source in move.sources}
        assert leaving.isdisjoint(finals)
        assert all(move.target not in move.sources for move in moves.values())


def test_a_captured_payment_only_moves_to_statuses_that_keep_its_capture() -> None:
    # The capture is in the ledger from SUCCESS on: no move may make the ledger's money uncounted.
    for move in domain.PAYMENT_MOVES.values():
        if move.sources & domain.CAPTURED:
            assert move.target in domain.CAPTURED
    assert {move.target for move in domain.TRANSFER_SETTLES.values()} == {
        domain.PayoutStatus.SUCCESS,
        domain.PayoutStatus.FAILED,
        domain.PayoutStatus.REVERSED,
    }
