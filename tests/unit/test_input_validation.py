"""The rules behind "input that cannot reach a 500": signed page tokens and control characters."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2
from gofund.payments.v1 import payments_service_pb2
from google.api import httpbody_pb2

from services.common import paging
from services.common.errors import ValidationFailed
from services.common.interceptors import control_character_violations

KEY = paging.paging_key("a deployment secret", "ledger")


def reason_of(token: str, schema: paging.Schema, key: bytes = KEY) -> str:
    with pytest.raises(ValidationFailed) as raised:
        paging.decode_token(token, schema, key=key)
    return raised.value.reason


def test_a_token_round_trips_with_its_types() -> None:
    at = datetime(2026, 12, 2, 6, 40, 27, 123456, tzinfo=UTC)
    token = paging.encode_token({"before": at, "id": "x", "n": 7, "scope": {"books": True}}, key=KEY)
    schema: paging.Schema = {"before": datetime, "id": str, "n": int, "scope": {"books": bool}}
    assert paging.decode_token(token, schema, key=KEY) == {"before": at, "id": "x", "n": 7, "scope": {"books": True}}
    assert paging.decode_token("", schema, key=KEY) is None


def test_keys_differ_by_secret_and_by_service() -> None:
    token = paging.encode_token({"before_seq": 5}, key=KEY)
    assert reason_of(token, {"before_seq": int}, paging.paging_key("another secret", "ledger")) == "INVALID_PAGE_TOKEN"
    assert reason_of(token, {"before_seq": int}, paging.paging_key("a deployment secret", "goals")) == (
        "INVALID_PAGE_TOKEN"
    )


@pytest.mark.parametrize(
    "cursor",
    [
        {"before_seq": True},
        {"before_seq": 1e30},
        {"before_seq": 2**63},
        {"before_seq": "5"},
        {"before_seq": None},
        {"before_seq": 5, "extra": 1},
        {},
        [5],
    ],
)
def test_a_signed_cursor_of_the_wrong_shape_is_refused(cursor: object) -> None:
    # Signed with the right key, as a token from an older release would be.
    payload = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
    token = f"{payload}.{paging._tag(KEY, payload)}"
    assert reason_of(token, {"before_seq": int}) == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    "value", ["x", "2026-01-01T00:00:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1" * 50]
)
def test_a_datetime_needs_an_offset_and_must_fit_the_calendar_in_utc(value: str) -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"before": value}).encode()).decode().rstrip("=")
    token = f"{payload}.{paging._tag(KEY, payload)}"
    assert reason_of(token, {"before": datetime}) == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("token", ["garbage!", "eyJiZWZvcmVfc2VxIjo1fQ", ".", "a.b", "x" * 5000])
def test_an_unsigned_or_malformed_token_is_refused(token: str) -> None:
    assert reason_of(token, {"before_seq": int}) == "INVALID_PAGE_TOKEN"


def test_a_changed_cursor_breaks_the_signature() -> None:
    tag = paging.encode_token({"before_seq": 5}, key=KEY).partition(".")[2]
    forged = base64.urlsafe_b64encode(b'{"before_seq":6}').decode().rstrip("=")
    assert reason_of(f"{forged}.{tag}", {"before_seq": int}) == "INVALID_PAGE_TOKEN"


def test_control_characters_are_found_in_nested_repeated_and_map_fields_by_path() -> None:
    request = ledger_service_pb2.PostTransactionRequest(
        transaction_id="t\x00",
        postings=[ledger_pb2.Posting(currency="NGN"), ledger_pb2.Posting(currency="N\x7fG")],
        description="two lines\r\n\tare fine",
        metadata={"k\x1b": "v", "note": "C1 \x85"},
    )
    found = {(v.field, v.reason) for v in control_character_violations(request)}
    assert found == {
        ("transaction_id", "INVALID_CHARACTERS"),
        ("postings[1].currency", "INVALID_CHARACTERS"),
        ("metadata", "INVALID_CHARACTERS"),  # the key
        ('metadata["note"]', "INVALID_CHARACTERS"),
    }


def test_raw_bytes_are_not_text() -> None:
    request = payments_service_pb2.HandlePaystackWebhookRequest(
        body=httpbody_pb2.HttpBody(content_type="application/json", data=b'{"a": "\x00\x01\x9f"}')
    )
    assert control_character_violations(request) == []
