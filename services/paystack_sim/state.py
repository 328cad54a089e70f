"""The simulator's records in memory and on disk.

Everything lives in one JSON file, `<data dir>/paystack-sim.json`, rewritten
after every change: written to a temporary file in the same directory, flushed
to disk, then renamed over the old one (`os.replace` is atomic), so a crash or
a kill leaves either the old state or the new one, never half of each. The
file is small (a development stack makes tens of payments) and writes are
rare, so rewriting it whole is simpler than any journal.

A change and the webhook events it causes are one save: the caller records
both in memory, then saves once (see `Paystack._commit`), so a kill can never
leave a paid charge on disk without its `charge.success` queued.

One event loop owns the state and no await happens between a change and its
save, so no lock is needed.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.common.config import StartupError
from services.paystack_sim.records import (
    Customer,
    Drop,
    Event,
    Recipient,
    Refund,
    Transaction,
    Transfer,
    refund_from_json,
    transaction_from_json,
    transfer_from_json,
)

STATE_FILE = "paystack-sim.json"
_FORMAT_VERSION = 1
# Paystack's ids are large integers; starting high keeps ours looking like theirs.
_FIRST_ID = 1_000_001
_CODE_ALPHABET = string.ascii_lowercase + string.digits


def random_code(length: int) -> str:
    """Lower-case letters and digits, as in Paystack's codes (`RCP_t0ya41mp35flk40`)."""
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(length))


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_id = _FIRST_ID - 1
        self.customers: dict[str, Customer] = {}  # by e-mail: Paystack keeps one customer per e-mail
        self.transactions: dict[str, Transaction] = {}  # by reference
        self.refunds: dict[int, Refund] = {}
        self.recipients: dict[str, Recipient] = {}  # by recipient code
        self.transfers: dict[str, Transfer] = {}  # by transfer code
        self.events: list[Event] = []  # by index
        self.drops: list[Drop] = []  # armed by /_sim/webhooks/drop, oldest first

    @classmethod
    def load(cls, path: Path) -> State:
        """The state saved at `path`, or an empty one if nothing was saved yet."""
        state = cls(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot read the simulator's state {path}: {exc}") from None
        if raw.get("version") != _FORMAT_VERSION:
            raise StartupError(
                f"{path} has format version {raw.get('version')!r}, "
                f"this simulator reads {_FORMAT_VERSION}; move the file away to start afresh"
            )
        state.last_id = raw["last_id"]
        state.customers = {c["email"]: Customer(**c) for c in raw["customers"]}
        state.transactions = {t["reference"]: transaction_from_json(t) for t in raw["transactions"]}
        state.refunds = {r["id"]: refund_from_json(r) for r in raw["refunds"]}
        state.recipients = {r["recipient_code"]: Recipient(**r) for r in raw["recipients"]}
        state.transfers = {t["transfer_code"]: transfer_from_json(t) for t in raw["transfers"]}
        state.events = [Event.from_json(e) for e in raw["events"]]
        # Absent from files written before /_sim/webhooks/drop existed.
        state.drops = [Drop(**d) for d in raw.get("drops", [])]
        return state

    def save(self) -> None:
        document: dict[str, Any] = {
            "version": _FORMAT_VERSION,
            "last_id": self.last_id,
            "customers": [asdict(c) for c in self.customers.values()],
            "transactions": [asdict(t) for t in self.transactions.values()],
            "refunds": [asdict(r) for r in self.refunds.values()],
            "recipients": [asdict(r) for r in self.recipients.values()],
            "transfers": [asdict(t) for t in self.transfers.values()],
            "events": [asdict(e) for e in self.events],
            "drops": [asdict(d) for d in self.drops],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump(document, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def transaction_by_access_code(self, access_code: str) -> Transaction | None:
        return next((t for t in self.transactions.values() if t.access_code == access_code), None)

    def transaction_by_id(self, transaction_id: int) -> Transaction | None:
        return next((t for t in self.transactions.values() if t.id == transaction_id), None)

    def refunds_of(self, reference: str) -> list[Refund]:
        """The refunds of one transaction, oldest first."""
        return sorted((r for r in self.refunds.values() if r.transaction_reference == reference), key=lambda r: r.id)

    def transfer_by_reference(self, reference: str) -> Transfer | None:
        return next((t for t in self.transfers.values() if t.reference == reference), None)
