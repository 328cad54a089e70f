"""Money-safety rules without I/O: locks go through one helper, the janitor's backoff,
when a checkout is given up, and the ledger ids of outflows."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.payments import domain
from services.payments.janitor import Janitor

SERVICES = Path(__file__).resolve().parents[2] / "services"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_every_row_lock_in_the_sql_services_goes_through_for_update() -> None:
    # A lock taken with a bare with_for_update() returns a row the session already
    # holds without re-reading it: the stale tally that released and refunded a goal.
    offenders = [
        f"{path.relative_to(SERVICES)}:{number}"
        for path in SERVICES.rglob("*.py")
        if path.name != "db.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.with_for_update\(", line)
    ]
    assert offenders == []


class _NoPayments:
    records: Any = None


def janitor(first: timedelta = timedelta(minutes=5), cap: timedelta = timedelta(hours=1)) -> Janitor:
    return Janitor(
        _NoPayments(),  # type: ignore[arg-type]
        interval=timedelta(seconds=30),
        first_check=first,
        max_backoff=cap,
        abandon_after=timedelta(hours=24),
    )


def test_the_janitor_looks_less_and_less_often_at_what_paystack_has_not_decided() -> None:
    waits = [janitor().next_check(NOW, checks) - NOW for checks in range(6)]
    assert waits == [timedelta(minutes=m) for m in (5, 10, 20, 40, 60, 60)]


def test_a_checkout_is_given_up_only_when_still_abandoned_after_the_window() -> None:
    created = NOW - timedelta(hours=25)
    window_end = NOW - timedelta(hours=24)
    assert domain.given_up("abandoned", created, window_end)
    assert not domain.given_up("abandoned", NOW - timedelta(hours=23), window_end)
    assert not domain.given_up("success", created, window_end)
    assert not domain.given_up("abandoned", created, None)


def test_each_refund_of_a_payment_has_its_own_short_ledger_ids() -> None:
    payment = str(uuid.uuid4())
    first, second = domain.refund_key(payment, "r1"), domain.refund_key(payment, "r2")
    assert first != second
    assert domain.refund_key(payment, "r1") == first  # a retry names the same refund
    long_id = "x" * 200  # a caller's refund id may be 200 characters; ledger ids stay within 200
    ids = [domain.refund_reserve_id(domain.refund_key(payment, long_id)), domain.payout_reserve_id(payment)]
    assert all(len(i) <= 200 for i in ids)
    assert domain.refund_settle_id(first) != domain.refund_void_id(first)
