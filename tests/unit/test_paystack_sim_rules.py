"""The Paystack simulator's pure rules: retry schedule, amounts, formats, lists, and its state file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.config import StartupError
from services.paystack_sim import listing
from services.paystack_sim.checkout import callback_location, display_amount
from services.paystack_sim.domain import Paystack, fees, parse_amount, transfer_fee
from services.paystack_sim.errors import PaystackError
from services.paystack_sim.records import (
    Attempt,
    Card,
    Customer,
    DeliveryStatus,
    Drop,
    Event,
    Refund,
    RefundOrigin,
    RefundStatus,
    Transaction,
    TransactionStatus,
    iso,
)
from services.paystack_sim.state import Record, State
from services.paystack_sim.timers import Timers
from services.paystack_sim.webhooks import MAX_ATTEMPTS, WebhookDispatcher, encode, retry_delay_ms, sign


def test_retries_come_three_minutes_apart_four_times_then_hourly_for_72_hours() -> None:
    base = 1000
    delays = [retry_delay_ms(failed, base) for failed in range(1, MAX_ATTEMPTS)]
    assert delays[:3] == [base] * 3
    assert delays[3:] == [20 * base] * 72
    assert retry_delay_ms(MAX_ATTEMPTS, base) is None
    assert MAX_ATTEMPTS == 76


def test_the_signature_is_hmac_sha512_of_the_exact_body() -> None:
    body = encode("charge.success", {"reference": "r1", "amount": 100}).encode()
    assert body == b'{"event":"charge.success","data":{"reference":"r1","amount":100}}'
    assert sign("sk_test_x", body) == hmac.new(b"sk_test_x", body, hashlib.sha512).hexdigest()


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (5000, 5000),
        ("5000", 5000),
        (" 12 ", 12),
        (0, 0),
        ("-3", -3),
        (12.5, None),
        ("1e3", None),
        (True, None),
        (None, None),
    ],
)
def test_amounts_are_integers_or_digit_strings(value: object, parsed: int | None) -> None:
    assert parse_amount(value) == parsed


def test_naira_fees_add_a_flat_fee_from_2500_naira_and_stop_at_2000_naira() -> None:
    assert fees(100_000, "NGN") == 1_500
    assert fees(250_000, "NGN") == 3_750 + 10_000
    assert fees(100_000_000, "NGN") == 200_000
    assert fees(100_000, "GHS") == 1_500


def test_times_print_as_paystack_prints_them() -> None:
    assert iso(1_660_054_892_007) == "2022-08-09T14:21:32.007Z"


def test_the_checkout_shows_amounts_in_major_units() -> None:
    assert display_amount(750_050, "NGN") == "NGN 7,500.50"
    assert display_amount(5, "USD") == "USD 0.05"


def _transaction(callback_url: str | None) -> Transaction:
    return Transaction(
        id=1,
        reference="ref-1",
        access_code="code",
        customer_email="ada@example.com",
        requested_amount=100,
        amount=100,
        currency="NGN",
        callback_url=callback_url,
        metadata={"goal_id": "g1"},
        status=TransactionStatus.SUCCESS,
        gateway_response="Successful",
        created_at=1,
        paid_at=2,
        fees=1,
        card=Card(authorization_code="AUTH_x", signature="SIG_x"),
    )


def test_the_callback_url_gets_paystacks_query_parameters() -> None:
    assert callback_location(_transaction(None)) is None
    assert (
        callback_location(_transaction("https://app.test/back")) == "https://app.test/back?trxref=ref-1&reference=ref-1"
    )
    assert callback_location(_transaction("https://app.test/back?x=1")) == (
        "https://app.test/back?x=1&trxref=ref-1&reference=ref-1"
    )


def _refund(refund_id: int = 7, status: RefundStatus = RefundStatus.PENDING) -> Refund:
    return Refund(
        id=refund_id,
        transaction_reference="ref-1",
        amount=100,
        currency="NGN",
        status=status,
        merchant_note="m",
        customer_note="c",
        created_at=3,
        updated_at=3,
        settle_at=9,
    )


def _filled_state(path: Path) -> State:
    state = State(path)
    state.next_id()
    state.customers["ada@example.com"] = Customer(id=5, customer_code="CUS_x", email="ada@example.com")
    state.transactions["ref-1"] = _transaction("https://app.test/back")
    state.refunds[7] = _refund()
    state.events.append(
        Event(
            index=0,
            event="charge.success",
            reference="ref-1",
            body="{}",
            created_at=4,
            next_attempt_at=8,
            attempts=[Attempt(at=5, http_status=500, error=None), Attempt(at=6, http_status=None, error="timeout")],
        )
    )
    state.drops.append(Drop(reference="ref-1", armed_at=2))
    return state


def _assert_same(loaded: State, state: State) -> None:
    assert loaded.last_id == state.last_id
    assert loaded.customers == state.customers
    assert loaded.transactions == state.transactions
    assert loaded.refunds == state.refunds
    assert loaded.events == state.events
    assert loaded.drops == state.drops


def test_a_snapshot_loads_back_equal_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "paystack-sim.json"
    state = _filled_state(path)
    state.compact()

    loaded = State.load(path)
    _assert_same(loaded, state)
    assert loaded.events[0].status is DeliveryStatus.PENDING
    assert [p.name for p in tmp_path.iterdir()] == ["paystack-sim.json"]
    assert json.loads(path.read_text())["version"] == 1


def test_each_save_appends_one_journal_line_with_only_the_records_it_names(tmp_path: Path) -> None:
    path = tmp_path / "paystack-sim.json"
    state = _filled_state(path)
    state.compact()
    refund = state.refunds[7]
    refund.status = RefundStatus.PROCESSED
    state.save(refund)
    state.refunds[8] = _refund(8)
    state.save(state.refunds[8])

    lines = state.journal_path.read_bytes().splitlines()
    assert [[kind for kind, _ in json.loads(line)["put"]] for line in lines] == [["refund"], ["refund"]]
    # The snapshot is untouched by a save; the journal on top of it holds the changes.
    assert json.loads(path.read_text())["refunds"][0]["status"] == "pending"
    _assert_same(State.load(path), state)


def test_a_torn_last_line_is_a_change_never_made_and_is_cut_off_before_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "paystack-sim.json"
    state = _filled_state(path)
    state.compact()
    state.save(_refund(8))
    state.close()
    whole = state.journal_path.read_bytes()
    # A kill in the middle of the next line's write.
    state.journal_path.write_bytes(whole + b'{"last_id": 99, "dro')

    loaded = State.load(path)
    assert loaded.last_id == state.last_id
    assert 8 in loaded.refunds
    loaded.save(_refund(9))
    assert State.load(path).refunds.keys() == {7, 8, 9}
    assert state.journal_path.read_bytes().startswith(whole)


def test_a_journal_replayed_over_the_snapshot_that_already_holds_it_changes_nothing(tmp_path: Path) -> None:
    # A kill between writing the snapshot and emptying the journal leaves both.
    path = tmp_path / "paystack-sim.json"
    state = _filled_state(path)
    state.compact()
    state.refunds[7].status = RefundStatus.PROCESSED
    state.save(state.refunds[7], state.events[0])
    journal = state.journal_path.read_bytes()
    state.compact()
    state.journal_path.write_bytes(journal)

    _assert_same(State.load(path), state)


def test_a_damaged_line_inside_the_journal_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "paystack-sim.json"
    state = _filled_state(path)
    state.save(state.refunds[7])
    state.close()
    state.journal_path.write_bytes(b"not json\n" + state.journal_path.read_bytes())
    with pytest.raises(StartupError, match="line 1"):
        State.load(path)


def test_a_missing_state_file_is_an_empty_state(tmp_path: Path) -> None:
    state = State.load(tmp_path / "absent.json")
    assert (state.transactions, state.events) == ({}, [])


def test_transfer_fees_follow_the_nigerian_bands() -> None:
    # Paystack's Verify Transfer sample: 1000 kobo charged on a 100000 kobo transfer.
    assert transfer_fee(100_000, "NGN") == 1_000
    assert transfer_fee(500_000, "NGN") == 1_000
    assert transfer_fee(500_001, "NGN") == 2_500
    assert transfer_fee(5_000_001, "NGN") == 5_000
    assert transfer_fee(100_000, "GHS") == 0


def test_a_state_file_from_before_drops_and_dashboard_refunds_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "paystack-sim.json"
    refund = {
        "id": 7,
        "transaction_reference": "ref-1",
        "amount": 100,
        "currency": "NGN",
        "status": "pending",
        "merchant_note": "m",
        "customer_note": "c",
        "created_at": 3,
        "updated_at": 3,
        "refund_reference": None,
        "refunded_at": None,
        "settle_at": None,
    }
    event = {
        "index": 0,
        "event": "charge.success",
        "reference": "ref-1",
        "body": "{}",
        "created_at": 4,
        "status": "delivered",
        "next_attempt_at": None,
        "attempts": [],
        "redelivery_of": None,
    }
    document = {
        "version": 1,
        "last_id": 10,
        "customers": [],
        "transactions": [],
        "refunds": [refund],
        "recipients": [],
        "transfers": [],
        "events": [event],
    }
    path.write_text(json.dumps(document))

    loaded = State.load(path)
    assert loaded.refunds[7].origin is RefundOrigin.API
    assert loaded.events[0].dropped_at is None
    assert loaded.drops == []


# Listing.


def test_list_windows_default_to_paystacks_50_per_page_from_page_1() -> None:
    assert listing.window({}) == listing.Window(per_page=50, page=1)
    assert listing.window({"perPage": "10", "page": "3"}) == listing.Window(per_page=10, page=3)
    # Paystack's OpenAPI spec spells it per_page for transactions and transfers; perPage wins when both come.
    assert listing.window({"per_page": "7"}).per_page == 7
    assert listing.window({"perPage": "5", "per_page": "7"}).per_page == 5
    for bad in ({"perPage": "0"}, {"page": "x"}, {"page": "-2"}, {"perPage": "1.5"}):
        with pytest.raises(PaystackError):
            listing.window(bad)


def test_a_page_carries_paystacks_meta() -> None:
    items, meta = listing.paginate(list(range(51)), listing.Window(per_page=50, page=2))
    assert items == [50]
    assert meta == {"total": 51, "skipped": 50, "perPage": 50, "page": 2, "pageCount": 2}
    assert listing.paginate([], listing.window({}))[1]["pageCount"] == 0


def test_a_bare_date_bounds_a_whole_utc_day() -> None:
    day = listing.period({"from": "2024-08-22", "to": "2024-08-22"})
    assert (day.since, day.until) == (1_724_284_800_000, 1_724_371_199_999)
    assert day.holds(1_724_284_800_000)
    assert day.holds(1_724_371_199_999)
    assert not day.holds(1_724_371_200_000)
    exact = listing.period({"from": "2024-08-22T09:14:24.000Z"})
    assert (exact.since, exact.until) == (1_724_318_064_000, None)
    with pytest.raises(PaystackError):
        listing.period({"to": "last week"})


# One write per change, and drops, with the state and the dispatcher but no HTTP and no timers running.


class _RecordedSaves(State):
    """A state that keeps what every save wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.saved: list[dict[str, Any]] = []

    def save(self, *changed: Record) -> None:
        super().save(*changed)
        # What the journal's new line holds, by kind of record.
        line = json.loads(self.journal_path.read_bytes().splitlines()[-1])
        written: dict[str, Any] = {"drops": line["drops"]}
        for kind, values in line["put"]:
            written.setdefault(f"{kind}s", []).append(values)
        self.saved.append(written)


class _StoppedClock(Timers):
    """Remembers what was scheduled, and after how many saves, without ever running it."""

    def __init__(self, state: _RecordedSaves) -> None:
        super().__init__()
        self._state = state
        self.scheduled_after_saves: list[int] = []

    def call_at(self, due_at_ms: int, action: Callable[[], Awaitable[None]]) -> None:
        self.scheduled_after_saves.append(len(self._state.saved))


@pytest.fixture
def client() -> Iterator[httpx.AsyncClient]:
    client = httpx.AsyncClient()
    yield client
    asyncio.run(client.aclose())


@pytest.fixture
def offline(tmp_path: Path, client: httpx.AsyncClient) -> tuple[_RecordedSaves, Paystack, _StoppedClock]:
    state = _RecordedSaves(tmp_path / "paystack-sim.json")
    clock = _StoppedClock(state)
    webhooks = WebhookDispatcher(state, clock, client, url="http://127.0.0.1:9/", secret_key="sk", retry_base_ms=1)
    paystack = Paystack(state, webhooks, clock, settle_ms=0, base_url="http://127.0.0.1:9")
    return state, paystack, clock


def _paid(paystack: Paystack, amount: int = 500_000) -> Transaction:
    started = paystack.initialize({"email": "ada@example.com", "amount": amount})
    return paystack.pay(started.access_code, "success")


def test_a_pay_saves_the_charge_and_its_charge_success_in_one_write(
    offline: tuple[_RecordedSaves, Paystack, _StoppedClock],
) -> None:
    state, paystack, clock = offline
    started = paystack.initialize({"email": "ada@example.com", "amount": 500_000})
    before = len(state.saved)

    paystack.pay(started.access_code, "success")

    [written] = state.saved[before:]
    [transaction] = written["transactions"]
    [event] = written["events"]
    assert transaction["status"] == "success"
    assert (event["event"], event["reference"], event["status"]) == ("charge.success", started.reference, "pending")
    # Delivery is scheduled only once that write is done.
    assert clock.scheduled_after_saves == [before + 1]


def test_settling_a_refund_or_a_transfer_saves_it_and_its_event_in_one_write(
    offline: tuple[_RecordedSaves, Paystack, _StoppedClock],
) -> None:
    state, paystack, _ = offline
    paid = _paid(paystack)
    refund = paystack.create_refund({"transaction": paid.reference, "amount": 100_000})
    before = len(state.saved)
    paystack.settle_refund(str(refund.id), "success")
    [written] = state.saved[before:]
    assert [r["status"] for r in written["refunds"]] == ["processed"]
    assert [e["event"] for e in written["events"]] == ["refund.processed"]

    recipient = paystack.create_recipient(
        {"type": "nuban", "name": "Ada Obi", "account_number": "0123456789", "bank_code": "058"}
    )
    transfer = paystack.initiate_transfer({"source": "balance", "amount": 1000, "recipient": recipient.recipient_code})
    before = len(state.saved)
    paystack.settle_transfer(transfer.transfer_code, "failed")
    [written] = state.saved[before:]
    assert [t["status"] for t in written["transfers"]] == ["failed"]
    assert written["events"][-1]["event"] == "transfer.failed"


def test_an_armed_drop_is_used_up_by_the_first_event_it_matches_in_the_same_write(
    offline: tuple[_RecordedSaves, Paystack, _StoppedClock],
) -> None:
    state, paystack, clock = offline
    state.drops = [Drop(reference="other", armed_at=1), Drop(reference=None, armed_at=2)]
    before = len(state.saved)

    paid = _paid(paystack)

    # The save that holds the charge holds its dropped event and the drop used up; nothing is scheduled.
    written = state.saved[-1]
    assert len(state.saved) == before + 2  # initialize, then pay
    assert [(e["reference"], e["status"]) for e in written["events"]] == [(paid.reference, "dropped")]
    assert written["drops"] == [{"reference": "other", "armed_at": 1}]
    assert clock.scheduled_after_saves == []
    assert state.events[0].status is DeliveryStatus.DROPPED
