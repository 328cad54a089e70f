"""Reconciliation: goals, payments, the ledger and Paystack compared in one run.

`Reconciler.run` reads a snapshot of the four (every goal's books from goals;
payments, payouts and the events that wait for an operator from our store;
every ledger transaction, the balances involved and the ledger's own audit;
Paystack's transactions, refunds and transfers) and `find_drifts`, which is
pure, reports every place where money was lost or counted twice, or could be:
see `payments_pb2.DriftKind` for the list. Nothing is changed (the ESCROW accounts it reads are opened if a currency
has none yet).

The comparison reads everything each run: at this platform's scale that is
seconds; a larger one would page Paystack by time window from a checkpoint.
Work in flight (a webhook being processed) can show as drift for a moment, so
the scheduled run (`Schedule`) counts only drift that a second run an interval
later still finds; a one-off run (`gofund reconcile`) reports what it sees,
which is what a settled platform (the chaos run's end, the e2e suite's) must
show empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gofund.goals.v1 import goals_pb2
from gofund.ledger.v1 import ledger_pb2

from services.common.ledger_client import ESCROW, PLATFORM_ENTITY
from services.common.metrics import ReconciliationGauges
from services.payments import domain
from services.payments.domain import CAPTURED, EventStatus, PaymentStatus, PayoutStatus
from services.payments.paystack import Charge, Refund, Transfer
from services.payments.processor import raise_if_cancelling, report_recovered, report_transient, transient
from services.payments.store import Payment, Payout, RefundRequest, WebhookEvent, now
from services.payments.use_cases import Payments

log = logging.getLogger("gofund.payments.reconcile")

# Paystack's status of a charge for each of ours. A refunded charge reads
# `reversed` once its refunds cover it (or still `success` while they settle).
# A declined card (`failed`) sends no webhook: the payment stays PENDING until
# the janitor verifies it; no money moved, so that lag is not drift. A paid
# charge still PENDING here is (CHARGE_NOT_CAPTURED).
EXPECTED_AT_PAYSTACK: Mapping[PaymentStatus, frozenset[str]] = {
    PaymentStatus.PENDING: frozenset({"abandoned", "ongoing", "pending", "processing", "queued", "failed"}),
    PaymentStatus.SUCCESS: frozenset({"success"}),
    PaymentStatus.REFUND_PENDING: frozenset({"success", "reversed"}),
    PaymentStatus.REFUNDED: frozenset({"success", "reversed"}),
    PaymentStatus.FAILED: frozenset({"failed"}),
    PaymentStatus.ABANDONED: frozenset({"abandoned"}),
}
# A charge whose money reached Paystack (`reversed`: and went back out in refunds).
PAID = frozenset({"success", "reversed"})
SUCCEEDED_OR_REFUNDED = (goals_pb2.CONTRIBUTION_STATUS_SUCCEEDED, goals_pb2.CONTRIBUTION_STATUS_REFUNDED)
OUR_REFERENCE = "gf-"
# Goals' release posting (services.goals.domain.release_transaction_id; services never import each other).
RELEASE_TRANSACTION = "goal:{goal_id}:release"


@dataclass(frozen=True)
class Drift:
    kind: str  # a DriftKind name without its prefix
    detail: str
    ids: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What identifies the same drift in two runs."""
        return self.kind, tuple(sorted(self.ids.items()))


@dataclass
class Snapshot:
    """Everything one run compares, read from the four systems."""

    goals: list[goals_pb2.GoalBooks]
    payments: list[Payment]
    payouts: list[Payout]
    operator_events: list[WebhookEvent]
    transactions: dict[str, ledger_pb2.Transaction]
    balances: dict[str, ledger_pb2.Balance]
    escrow_accounts: dict[str, str]  # currency -> ESCROW account id
    ledger_differences: list[ledger_pb2.BalanceDifference]
    charges: list[Charge]
    refunds: list[Refund]
    transfers: list[Transfer]


@dataclass(frozen=True)
class Report:
    drifts: list[Drift]
    snapshot: Snapshot
    checked_at: datetime

    @property
    def paystack_records(self) -> int:
        return len(self.snapshot.charges) + len(self.snapshot.refunds) + len(self.snapshot.transfers)


class Reconciler:
    def __init__(self, payments: Payments) -> None:
        self._payments = payments

    async def run(self) -> Report:
        checked_at = now()
        snapshot = await self.read()
        return Report(find_drifts(snapshot), snapshot, checked_at)

    async def read(self) -> Snapshot:
        payments, peers, paystack = self._payments.records, self._payments.peers, self._payments.paystack
        # Our own records first, Paystack's last: what Paystack did after our read
        # shows as Paystack ahead of us (in flight), never as us ahead of Paystack.
        goals = [books async for books in peers.goal_books()]
        ours = await payments.all_payments()
        payouts = await payments.all_payouts()
        operator_events = await payments.events_in([EventStatus.PARKED, EventStatus.FLAGGED])
        transactions = {t.id: t async for t in peers.ledger.transactions()}
        currencies = sorted({g.currency for g in goals} | {p.currency for p in ours} | {p.currency for p in payouts})
        escrow = {c: await peers.ledger.account(ESCROW, PLATFORM_ENTITY, c) for c in currencies}
        accounts = [g.account_id for g in goals if g.account_id] + list(escrow.values())
        balances = await peers.ledger.balances(accounts)
        differences = await peers.ledger.differences()
        charges = [c async for c in paystack.transactions()]
        refunds = [r async for r in paystack.refunds()]
        transfers = [t async for t in paystack.transfers()]
        return Snapshot(
            goals, ours, payouts, operator_events, transactions, balances, escrow, differences,
            charges, refunds, transfers,
        )  # fmt: skip


# -- the checks (pure) ----------------------------------------------------------------------
def find_drifts(s: Snapshot) -> list[Drift]:
    drifts: list[Drift] = []
    drifts += _ledger_itself(s)
    drifts += _payments_against_paystack(s)
    drifts += _refunds(s)
    drifts += _transfers(s)
    drifts += _reservations(s)
    drifts += _goals(s)
    drifts += _contributions_against_payments(s)
    drifts += _escrow(s)
    drifts += _operator(s)
    return drifts


def _ledger_itself(s: Snapshot) -> Iterable[Drift]:
    for d in s.ledger_differences:
        yield Drift(
            "LEDGER_UNBALANCED",
            f"stored debits {d.stored_debits} vs entries {d.computed_debits}, "
            f"stored credits {d.stored_credits} vs entries {d.computed_credits}",
            {"account_id": d.account_id},
        )


def _by_reference(s: Snapshot) -> dict[str, Payment]:
    found: dict[str, Payment] = {}
    for payment in s.payments:
        found[payment.reference] = payment
        for earlier in payment.earlier_references:
            found.setdefault(earlier, payment)
    return found


def _charge_ids(s: Snapshot) -> dict[str, Charge]:
    """Paystack's charges by their Paystack id (what refunds name)."""
    return {str(c.data.get("id")): c for c in s.charges if c.data.get("id") is not None}


def _payments_against_paystack(s: Snapshot) -> Iterable[Drift]:
    charges = {c.reference: c for c in s.charges}
    ours = _by_reference(s)
    for payment in s.payments:
        ids = {"payment_id": payment.payment_id, "reference": payment.reference}
        captured = domain.capture_transaction_id(payment.payment_id) in s.transactions
        charge = charges.get(payment.reference)
        if charge is None:
            if payment.status in CAPTURED:
                yield Drift("STATUS_DIFFERS", f"Paystack does not know a {payment.status} payment", ids)
            continue
        if charge.status not in EXPECTED_AT_PAYSTACK[payment.status] and not payment.flagged:
            yield Drift("STATUS_DIFFERS", f"ours {payment.status}, Paystack {charge.status!r}", ids)
        if payment.status in CAPTURED and not captured:
            yield Drift("CHARGE_NOT_CAPTURED", f"a {payment.status} payment without its capture", ids)
    for paid in s.charges:
        owner = ours.get(paid.reference)
        if paid.status not in PAID or not paid.reference.startswith(OUR_REFERENCE):
            continue
        if owner is None:
            yield Drift(
                "CHARGE_NOT_CAPTURED",
                f"Paystack holds {paid.amount} {paid.currency} under a reference no payment of ours has",
                {"reference": paid.reference},
            )
        elif domain.capture_transaction_id(owner.payment_id) not in s.transactions and owner.status not in CAPTURED:
            yield Drift(
                "CHARGE_NOT_CAPTURED",
                f"Paystack holds {paid.amount} {paid.currency} ({paid.status}); the ledger has no capture"
                + (f"; the payment is flagged: {owner.flag_reason}" if owner.flagged else ""),
                {"payment_id": owner.payment_id, "reference": paid.reference},
            )


def _refund_of(payment: Payment, paystack_id: str) -> RefundRequest | None:
    """Our refund of the payment that Paystack knows by `paystack_id` (the current one or a failed one)."""
    for refund in [payment.refund, *payment.failed_refunds]:
        if refund is not None and refund.paystack_refund_id == paystack_id:
            return refund
    return None


def _refunds(s: Snapshot) -> Iterable[Drift]:
    by_reference = _by_reference(s)
    charges = _charge_ids(s)
    settled_at_paystack: set[str] = set()  # our refund keys Paystack shows processed
    for refund in s.refunds:
        charge = charges.get(refund.transaction_id)
        payment = by_reference.get(charge.reference) if charge else None
        if payment is None:
            continue  # not a charge of ours (or one our charges list does not show)
        ids = {"payment_id": payment.payment_id, "refund_id": refund.id}
        ours = _refund_of(payment, refund.id)
        if refund.status == "processed":
            in_flight = payment.refund
            if ours is None and in_flight is not None and in_flight.requested and not in_flight.paystack_refund_id:
                continue  # ours, most likely, whose answer was lost: the next review adopts it
            if ours is None:
                yield Drift(
                    "OUTFLOW_NOT_IN_LEDGER",
                    f"Paystack processed a refund we did not ask for: {refund.amount} {refund.currency}",
                    ids,
                )
                continue
            key = ours.key
            settled_at_paystack.add(key)
            if domain.refund_settle_id(key) not in s.transactions:
                yield Drift("OUTFLOW_NOT_IN_LEDGER", f"refund of {refund.amount} processed; not posted", ids)
        elif refund.status == "failed" and ours is not None:
            key = ours.key
            if domain.refund_settle_id(key) in s.transactions:
                yield Drift("LEDGER_WITHOUT_PAYSTACK", "a refund Paystack failed is posted as paid out", ids)
    for transaction_id in s.transactions:
        if transaction_id.startswith("refund:") and transaction_id.endswith(":settle"):
            key = transaction_id.removeprefix("refund:").removesuffix(":settle")
            if key not in settled_at_paystack:
                yield Drift(
                    "LEDGER_WITHOUT_PAYSTACK",
                    "a refund is posted that Paystack does not show processed",
                    {"transaction_id": transaction_id},
                )


def _transfers(s: Snapshot) -> Iterable[Drift]:
    payouts = {p.reference: p for p in s.payouts}
    sent: set[str] = set()
    for transfer in s.transfers:
        payout = payouts.get(transfer.reference)
        if payout is None and transfer.status == "success":
            yield Drift(
                "OUTFLOW_NOT_IN_LEDGER",
                f"Paystack sent {transfer.amount} {transfer.currency} in a transfer no payout of ours has",
                {"reference": transfer.reference},
            )
        if payout is None or transfer.status not in ("success", "reversed"):
            continue
        ids = {"payout_id": payout.payout_id, "reference": transfer.reference, "goal_id": payout.goal_id}
        sent.add(payout.payout_id)
        if domain.payout_transaction_id(payout.payout_id) not in s.transactions:
            yield Drift("OUTFLOW_NOT_IN_LEDGER", f"transfer of {transfer.amount} {transfer.status}; not posted", ids)
        if transfer.status == "reversed" and domain.payout_reversal_transaction_id(payout.payout_id) not in (
            s.transactions
        ):
            yield Drift("OUTFLOW_NOT_IN_LEDGER", "transfer reversed at Paystack; the reversal is not posted", ids)
    for payout in s.payouts:
        if domain.payout_transaction_id(payout.payout_id) in s.transactions and payout.payout_id not in sent:
            yield Drift(
                "LEDGER_WITHOUT_PAYSTACK",
                "a payout is posted as sent that Paystack does not show sent",
                {"payout_id": payout.payout_id, "goal_id": payout.goal_id},
            )


def _reservations(s: Snapshot) -> Iterable[Drift]:
    refunding = {
        p.refund.key: p for p in s.payments if p.status is PaymentStatus.REFUND_PENDING and p.refund is not None
    }
    paying = {p.payout_id for p in s.payouts if p.status is PayoutStatus.PENDING}
    for transaction in s.transactions.values():
        if transaction.kind != ledger_pb2.TRANSACTION_KIND_PENDING or transaction.resolved_by_transaction_id:
            continue
        transaction_id = transaction.id
        if (
            transaction_id.startswith("refund:")
            and transaction_id.removeprefix("refund:").removesuffix(":reserve") in refunding
        ):
            continue
        if transaction_id.startswith("payout:") and transaction_id.split(":")[1] in paying:
            continue
        yield Drift(
            "RESERVATION_UNRESOLVED",
            "a reservation is pending while its refund or payout is no longer in flight",
            {"transaction_id": transaction_id},
        )


def _goals(s: Snapshot) -> Iterable[Drift]:
    payments = {p.payment_id: p for p in s.payments}
    charges = {c.reference: c for c in s.charges}
    refunded = _refunded_at_paystack(s)
    sent = _sent_for_goals(s)
    for books in s.goals:
        goal_ids = {"goal_id": books.goal_id}
        late_captured = 0
        refunded_counted = False
        inflow, outflow = 0, sent.get(books.goal_id, 0)
        for c in books.contributions:
            captured = domain.capture_transaction_id(c.payment_id) in s.transactions
            if c.status in SUCCEEDED_OR_REFUNDED and not captured:
                yield Drift(
                    "CONTRIBUTION_WITHOUT_CAPTURE",
                    f"a {_status(c.status)} contribution",
                    {**goal_ids, "contribution_id": c.contribution_id, "payment_id": c.payment_id},
                )
            late_captured += c.amount if c.late and captured else 0
            payment = payments.get(c.payment_id)
            if payment is None:
                continue
            key = payment.refund.key if payment.refund is not None else ""
            refunded_counted |= not c.late and bool(key) and domain.refund_settle_id(key) in s.transactions
            paid = charges.get(payment.reference)
            inflow += paid.amount if paid is not None and paid.status in PAID else 0
            outflow += refunded.get(payment.payment_id, 0)
        if refunded_counted and RELEASE_TRANSACTION.format(goal_id=books.goal_id) in s.transactions:
            yield Drift(
                "RELEASED_AND_REFUNDED", "the goal's release and a counted contribution's refund are posted", goal_ids
            )
        if outflow > inflow:
            yield Drift(
                "OUTFLOW_ABOVE_INFLOW",
                f"{outflow} {books.currency} left the goal at Paystack; {inflow} came in",
                goal_ids,
            )
        balance = s.balances.get(books.account_id)
        if balance is not None and (differs := _raised_differs(books, balance, late_captured)):
            yield Drift("RAISED_DIFFERS", differs, {**goal_ids, "account_id": books.account_id})
    yield from _captures_without_contribution(s)


def _raised_differs(books: goals_pb2.GoalBooks, balance: ledger_pb2.Balance, late_captured: int) -> str:
    """While a goal takes money its raised amount is its GOAL balance; once its outflow is
    decided it is what counted, so with the late payments it refunds it is every credit the
    GOAL account took (its balance plus what has left it). Empty if they agree."""
    if books.outflow == goals_pb2.GOAL_OUTFLOW_UNSPECIFIED:
        if books.raised_amount != balance.balance:
            return f"raised {books.raised_amount} vs the GOAL balance {balance.balance}"
        return ""
    if books.raised_amount + late_captured != balance.credits:
        return (
            f"raised {books.raised_amount} + late payments {late_captured} vs the GOAL account's credits "
            f"{balance.credits} (balance {balance.balance})"
        )
    return ""


# The contribution statuses each payment status leaves goals in, once goals has been told.
CONTRIBUTION_FOR_PAYMENT: Mapping[PaymentStatus, frozenset[int]] = {
    PaymentStatus.PENDING: frozenset({goals_pb2.CONTRIBUTION_STATUS_PENDING}),
    PaymentStatus.SUCCESS: frozenset({goals_pb2.CONTRIBUTION_STATUS_SUCCEEDED}),
    PaymentStatus.REFUND_PENDING: frozenset({goals_pb2.CONTRIBUTION_STATUS_SUCCEEDED}),
    PaymentStatus.REFUNDED: frozenset({goals_pb2.CONTRIBUTION_STATUS_REFUNDED}),
    PaymentStatus.FAILED: frozenset({goals_pb2.CONTRIBUTION_STATUS_FAILED}),
    PaymentStatus.ABANDONED: frozenset({goals_pb2.CONTRIBUTION_STATUS_FAILED}),
}


def _contributions_against_payments(s: Snapshot) -> Iterable[Drift]:
    payments = {p.payment_id: p for p in s.payments}
    for books in s.goals:
        for c in books.contributions:
            payment = payments.get(c.payment_id)
            if payment is None or payment.flagged:
                continue  # a contribution whose payment was never created; a flagged one is an operator's
            if c.status not in CONTRIBUTION_FOR_PAYMENT[payment.status]:
                yield Drift(
                    "CONTRIBUTION_STATUS_DIFFERS",
                    f"the contribution is {_status(c.status)}, its payment {payment.status}",
                    {"goal_id": books.goal_id, "contribution_id": c.contribution_id, "payment_id": c.payment_id},
                )


def _refunded_at_paystack(s: Snapshot) -> dict[str, int]:
    """Processed refunds at Paystack, by our payment id."""
    by_reference = _by_reference(s)
    charge_ids = _charge_ids(s)
    refunded: dict[str, int] = defaultdict(int)
    for refund in s.refunds:
        charge = charge_ids.get(refund.transaction_id)
        payment = by_reference.get(charge.reference) if charge else None
        if payment is not None and refund.status == "processed":
            refunded[payment.payment_id] += refund.amount
    return refunded


def _sent_for_goals(s: Snapshot) -> dict[str, int]:
    """Transfers Paystack sent (and did not reverse), by goal id."""
    transfers = {t.reference: t for t in s.transfers}
    sent: dict[str, int] = defaultdict(int)
    for payout in s.payouts:
        transfer = transfers.get(payout.reference)
        if transfer is not None and transfer.status == "success":
            sent[payout.goal_id] += transfer.amount
    return sent


def _captures_without_contribution(s: Snapshot) -> Iterable[Drift]:
    contributions = {c.payment_id: c for g in s.goals for c in g.contributions if c.payment_id}
    for transaction_id in s.transactions:
        if not (transaction_id.startswith("payment:") and transaction_id.endswith(":capture")):
            continue
        payment_id = transaction_id.split(":")[1]
        found = contributions.get(payment_id)
        if found is None or found.status not in SUCCEEDED_OR_REFUNDED:
            yield Drift(
                "CAPTURE_WITHOUT_CONTRIBUTION",
                f"captured in the ledger; goals has {_status(found.status) if found else 'no'} contribution for it",
                {"payment_id": payment_id, "transaction_id": transaction_id},
            )


def _escrow(s: Snapshot) -> Iterable[Drift]:
    """ESCROW is the cash Paystack holds for us: what our charges brought in, less what
    our refunds and transfers sent out (amounts gross of Paystack's fees, as the
    ledger records them)."""
    held: dict[str, int] = defaultdict(int)
    ours = _by_reference(s)
    charge_ids = _charge_ids(s)
    for paid in s.charges:
        if paid.status in PAID and paid.reference in ours:
            held[paid.currency.upper()] += paid.amount
    for refund in s.refunds:
        charge = charge_ids.get(refund.transaction_id)
        if charge is not None and charge.reference in ours and refund.status == "processed":
            held[refund.currency] -= refund.amount
    payouts = {p.reference for p in s.payouts}
    for transfer in s.transfers:
        if transfer.reference in payouts and transfer.status == "success":
            held[transfer.currency] -= transfer.amount
    for currency, account_id in s.escrow_accounts.items():
        balance = s.balances.get(account_id)
        ledger_holds = balance.balance if balance is not None else 0
        if ledger_holds != held.get(currency, 0):
            yield Drift(
                "ESCROW_DIFFERS",
                f"the ledger's ESCROW holds {ledger_holds} {currency}; Paystack holds {held.get(currency, 0)} for us",
                {"currency": currency, "account_id": account_id},
            )


def _operator(s: Snapshot) -> Iterable[Drift]:
    for payment in s.payments:
        if payment.flagged:
            yield Drift("NEEDS_OPERATOR", f"payment flagged: {payment.flag_reason}", {"payment_id": payment.payment_id})
    for payout in s.payouts:
        if payout.flagged:
            yield Drift("NEEDS_OPERATOR", f"payout flagged: {payout.flag_reason}", {"payout_id": payout.payout_id})
    for event in s.operator_events:
        yield Drift(
            "NEEDS_OPERATOR",
            f"webhook event {event.status.lower()}: {event.last_error}"[:300],
            {"event_id": event.event_id},
        )


def _status(status: goals_pb2.ContributionStatus.ValueType) -> str:
    return str(goals_pb2.ContributionStatus.Name(status)).removeprefix("CONTRIBUTION_STATUS_").lower()


# -- the scheduled run ------------------------------------------------------------------------


class Schedule:
    """Reconciliation every `interval`, run by one payments replica at a time.

    The replica that takes the job's lease (a document in `jobs`) runs it and
    stores the result; every replica's gauges are refreshed from that document,
    so all of them report the same, store-wide figures. Drift counts only when
    the previous run found it too (work in flight is not drift); a clean run
    is one that found none at all.
    """

    def __init__(self, payments: Payments, gauges: ReconciliationGauges, *, interval: timedelta) -> None:
        self._reconciler = Reconciler(payments)
        self._payments = payments
        self._gauges = gauges
        self._interval = interval

    async def run(self) -> None:
        # The first run waits an interval: a process just started (or restarted after a
        # crash) first catches up on its own work, and other replicas may have run lately.
        while True:
            await asyncio.sleep(self._interval.total_seconds())
            try:
                await self.run_once()
            except Exception as exc:
                raise_if_cancelling()
                if transient(exc):
                    report_transient(self._payments, exc)
                else:
                    log.exception("scheduled reconciliation failed; it runs again")
            else:
                report_recovered(self._payments)

    async def run_once(self) -> bool:
        """Run if it is this replica's turn; True if it ran."""
        records = self._payments.records
        turn = await records.take_reconciliation_turn(self._interval * 0.9)
        if turn is None:
            return False
        lease, previous = turn
        report = await self._reconciler.run()
        seen_before = previous.drifts if previous is not None else frozenset()
        persistent = [d for d in report.drifts if d.key in seen_before]
        counts: dict[str, int] = defaultdict(int)
        for drift in persistent:
            counts[drift.kind] += 1
        if persistent:
            log.error("reconciliation found drift", extra={"drifts": [f"{d.kind} {dict(d.ids)}" for d in persistent]})
        await self._nudge_janitor(report)
        await records.record_reconciliation(lease, report.checked_at, [d.key for d in report.drifts], counts)
        await self.refresh()
        return True

    async def _nudge_janitor(self, report: Report) -> None:
        """A charge Paystack holds that a still-pending payment has not captured (its webhook
        lost) is checked now rather than at the janitor's next, perhaps an hour away."""
        pending = {p.payment_id for p in report.snapshot.payments if p.status is PaymentStatus.PENDING}
        records = self._payments.records
        for drift in report.drifts:
            payment_id = drift.ids.get("payment_id", "")
            if drift.kind == "CHARGE_NOT_CAPTURED" and payment_id in pending:
                event_id = f"{domain.CHECK_PAYMENT}:{payment_id}"
                await records.arm_event(
                    event_id,
                    domain.CHECK_PAYMENT,
                    {
                        "payment_id": payment_id,
                        "abandon_before": (report.checked_at - timedelta(days=3650)).isoformat(),
                    },
                )
                self._payments.wake_processor(event_id)

    async def refresh(self) -> None:
        """The gauges from the last stored run (every replica, every few seconds)."""
        run = await self._payments.records.last_reconciliation()
        if run is None:
            return
        stamp = now()
        clean = run.last_clean_at
        self._gauges.set(
            drifts=dict(run.persistent_counts),
            last_run_age_s=max((stamp - run.last_run_at).total_seconds(), 0.0),
            last_clean_age_s=None if clean is None else max((stamp - clean).total_seconds(), 0.0),
        )
