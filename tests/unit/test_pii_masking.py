"""Bank account numbers are kept and logged as their last four digits only."""

from __future__ import annotations

import io
import json
import logging

from services.common import log as gofund_log
from services.payments.store import masked, masked_body

NUMBER = "0123456789"


def test_account_numbers_are_masked_at_any_depth_of_a_document() -> None:
    event = {
        "event": "transfer.success",
        "data": {
            "reference": "ref-1",
            "recipient": {"details": {"account_number": NUMBER, "bank_code": "058"}},
            "history": [{"accountNumber": int(NUMBER[1:])}],
        },
    }
    hidden = masked({"$set": {"transferData": event}})
    assert NUMBER[-6:] not in json.dumps(hidden)
    details = hidden["$set"]["transferData"]["data"]["recipient"]["details"]
    assert details == {"account_number": "******6789", "bank_code": "058"}
    assert hidden["$set"]["transferData"]["data"]["history"] == [{"accountNumber": "*****6789"}]
    assert masked(hidden) == hidden  # masking twice changes nothing


def test_a_webhook_body_without_an_account_number_is_stored_byte_for_byte() -> None:
    body = '{"event":"charge.success",  "data": {"reference": "r"}}'
    assert masked_body(body) is body
    with_number = json.dumps(
        {"event": "transfer.success", "data": {"recipient": {"details": {"account_number": NUMBER}}}}
    )
    stored = json.loads(masked_body(with_number))
    assert stored["data"]["recipient"]["details"]["account_number"] == "******6789"


def test_a_log_line_never_carries_a_full_account_number() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.pii")
    logger.propagate = False
    logger.addHandler(gofund_log.handler("payments", stream))
    logger.setLevel(logging.INFO)
    try:
        logger.info("HTTP Request: GET http://paystack/bank/resolve?account_number=%s&bank_code=058", NUMBER)
        logger.info("recipient created", extra={"details": f"{{'account_number': '{NUMBER}'}}"})
    finally:
        logger.handlers.clear()
    lines = stream.getvalue()
    assert NUMBER not in lines
    assert "******6789" in lines
