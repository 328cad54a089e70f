"""The payments use cases, one module per flow, over one store:

- `charges`: a contribution's payment, from checkout to captured (or failed, abandoned);
- `refunds`: a captured payment's money back to its payer;
- `payouts`: a released goal's money to its owner's bank, and its recipients;
- `webhooks`: Paystack's events in, and the processor's (and janitor's) work out;
- `reconcile`: the books against Paystack's and the ledger's.

Money safety (DESIGN.md section 10), in every flow: money out is reserved in
the ledger before Paystack is asked, a webhook is a claim that makes us ask
Paystack, only Paystack's answer moves money, and every money step has a
deterministic ledger id, so a crash anywhere is repaired by running the same
step again. Outcomes for the goals service (`outcomes`, followed by goals on
WatchOutcomes) are published once by their stable ids; payments never calls
goals. What an RPC starts and must finish (a payer's verify, a transfer
Paystack refused) is handed to the processor as an outbox entry before it is
done, so its outcome is published even if the RPC is cut short. What must
happen once at Paystack is asked under a lease (`leases`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from services.payments.charges import Charges
from services.payments.leases import Leases
from services.payments.outcomes import Outcomes
from services.payments.parts import Parts
from services.payments.payouts import Payouts
from services.payments.paystack import Paystack
from services.payments.peers import Peers
from services.payments.refunds import Refunds
from services.payments.store import PaymentsStore
from services.payments.webhooks import Webhooks


class Payments:
    """The flows, wired over one store, Paystack client and set of peers."""

    def __init__(
        self,
        records: PaymentsStore,
        paystack: Paystack,
        peers: Peers,
        outcomes: Outcomes,
        *,
        secret_key: str,
        default_callback_url: str,
        paystack_timeout_s: float,
        first_check_after: timedelta = timedelta(minutes=5),
    ) -> None:
        # `first_check_after`: when the janitor first looks at a payment, refund or payout nobody settled.
        self.records = records
        self.paystack = paystack
        self.peers = peers
        self.outcomes = outcomes
        # Set by main once the processor exists: work handed to the outbox starts now.
        self.wake_processor: Callable[[str | None], None] = lambda event_id: None
        parts = Parts(
            records, paystack, peers, outcomes, Leases(records, paystack_timeout_s=paystack_timeout_s),
            first_check_after=first_check_after, wake_processor=self._wake,
        )  # fmt: skip
        self.charges = Charges(parts, default_callback_url=default_callback_url)
        self.refunds = Refunds(parts, charges=self.charges)
        self.payouts = Payouts(parts, secret_key=secret_key)
        self.webhooks = Webhooks(
            records, self.charges, self.refunds, self.payouts, secret_key=secret_key, wake_processor=self._wake
        )

    def _wake(self, event_id: str | None) -> None:
        self.wake_processor(event_id)
