"""What every payments flow works with, built once by `use_cases.Payments`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from services.payments.leases import Leases
from services.payments.outcomes import Outcomes
from services.payments.paystack import Paystack
from services.payments.peers import Peers
from services.payments.store import PaymentsStore


@dataclass(frozen=True)
class Parts:
    records: PaymentsStore
    paystack: Paystack
    peers: Peers
    outcomes: Outcomes
    leases: Leases
    # When the janitor first looks at a payment, refund or payout nobody has settled.
    first_check_after: timedelta
    # Work handed to the outbox starts now (the processor's wake-up, given the event's id
    # where there is one, else None: look at what is due).
    wake_processor: Callable[[str | None], None]
