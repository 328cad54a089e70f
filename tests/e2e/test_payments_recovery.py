"""Crashes and outages around a webhook, on a stack of their own (they stop its processes).

A webhook arriving while the ledger is down is acknowledged, kept, retried and
credited once when the ledger is back; a payments process killed (SIGKILL)
after storing an event and before processing it finishes the event after its
restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.payments.domain import capture_transaction_id
from services.stack.stack import Stack
from tests.e2e.conftest import stack_environment
from tests.e2e.money import (
    balance,
    contribute,
    entries,
    eventually,
    new_user,
    open_goal,
    pay,
    payment_status,
    payments_db,
    sim_events,
)


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    platform = Stack(stack_environment(tmp_path_factory.mktemp("fragile")), durable=False)
    platform.start()
    yield platform
    platform.stop()


def stored_event(stack: Stack, reference: str) -> dict[str, object] | None:
    with payments_db(stack) as db:
        found: dict[str, object] | None = db.webhook_events.find_one({"eventId": f"charge.success:{reference}"})
    return found


def test_a_webhook_arriving_while_the_ledger_is_down_is_credited_once_it_returns(fragile: Stack) -> None:
    owner, payer = new_user(fragile), new_user(fragile)
    goal = open_goal(fragile, owner, target=1_000_000)
    started = contribute(fragile, payer, goal, 55_000)
    reference, payment_id = started["payment_reference"], started["contribution"]["payment_id"]

    fragile.services["ledger"].stop()
    try:
        pay(started["authorization_url"])
        # Acknowledged to Paystack (200), stored, and retried while the ledger is away.
        eventually(lambda: [e for e in sim_events(fragile, reference=reference) if e["last_http_status"] == 200])
        retried = eventually(
            lambda: (e := stored_event(fragile, reference)) and int(str(e["attempts"])) >= 2 and e,
            what="the processor to retry",
        )
        assert retried["status"] == "PENDING"
        assert "UNAVAILABLE" in str(retried["lastError"])
    finally:
        fragile.start_service("ledger")
        fragile.wait_edge_healthy()
    payment_status(fragile, payer, payment_id, "SUCCESS", timeout_s=60)
    assert [e["transaction_id"] for e in entries(fragile, goal["account_id"])] == [capture_transaction_id(payment_id)]
    assert balance(fragile, goal["account_id"]) == 55_000


def test_payments_killed_between_storing_and_processing_finishes_after_restart(fragile: Stack) -> None:
    owner, payer = new_user(fragile), new_user(fragile)
    goal = open_goal(fragile, owner, target=1_000_000)
    started = contribute(fragile, payer, goal, 21_000)
    reference, payment_id = started["payment_reference"], started["contribution"]["payment_id"]

    # With the ledger away the event is stored but cannot be processed, which
    # holds the process in the window between the two.
    fragile.services["ledger"].stop()
    try:
        pay(started["authorization_url"])
        eventually(lambda: stored_event(fragile, reference), what="the event to be stored")
        fragile.services["payments"].kill()
    finally:
        fragile.start_service("ledger")
    assert (stored_event(fragile, reference) or {})["status"] == "PENDING"
    fragile.start_service("payments")
    fragile.wait_edge_healthy()
    payment_status(fragile, payer, payment_id, "SUCCESS", timeout_s=60)
    assert [e["transaction_id"] for e in entries(fragile, goal["account_id"])] == [capture_transaction_id(payment_id)]
    assert (stored_event(fragile, reference) or {})["status"] == "PROCESSED"
