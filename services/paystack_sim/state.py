"""The simulator's records in memory and on disk.

On disk the state is a snapshot, `<data dir>/paystack-sim.json`, plus a
journal beside it, `paystack-sim.journal`: one JSON line per change, holding
every record that change touched (whole, so replaying a line twice is
harmless), the id counter and the armed drops. A change costs one appended
line and one fsync, in proportion to what changed rather than to everything
the simulator remembers (rewriting a 2 MB file per change made webhooks lag
by seconds under load).

A line is written with one `write` and is either whole on disk or, after a
kill mid-write, a torn tail that loading drops: a change and the webhook
events it causes are one line (see `Paystack._commit`), so a kill can never
leave a paid charge without its queued `charge.success`. The journal is
folded into the snapshot (written to a temporary file, fsynced, renamed over
the old one) when the simulator starts, when it stops, and when the journal
grows past a few times the number of records; a kill between the rename and
emptying the journal only means those lines are replayed once more.

A hand-rolled journal rather than a database: the simulator must run with no
server and the records are a few dataclasses; SQLite would be a second format
for the same records.

One event loop owns the state and no await happens between a change and its
save, so no lock is needed.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from collections.abc import Callable, Sized
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
JOURNAL_SUFFIX = ".journal"
_FORMAT_VERSION = 1
# Paystack's ids are large integers; starting high keeps ours looking like theirs.
_FIRST_ID = 1_000_001
_CODE_ALPHABET = string.ascii_lowercase + string.digits
# The journal is folded into the snapshot once it holds this many lines more than records.
_COMPACT_SLACK_LINES = 5_000

Record = Customer | Transaction | Refund | Recipient | Transfer | Event
_KIND = {
    Customer: "customer",
    Transaction: "transaction",
    Refund: "refund",
    Recipient: "recipient",
    Transfer: "transfer",
    Event: "event",
}
# Where each kind of record lives in the state, its key there, and how it is read back.
_STORES: dict[str, tuple[str, str, Callable[[dict[str, Any]], Any]]] = {
    "customer": ("customers", "email", lambda values: Customer(**values)),
    "transaction": ("transactions", "reference", transaction_from_json),
    "refund": ("refunds", "id", refund_from_json),
    "recipient": ("recipients", "recipient_code", lambda values: Recipient(**values)),
    "transfer": ("transfers", "transfer_code", transfer_from_json),
}


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
        self._journal_lines = 0
        # The journal's whole lines (bytes); a torn tail after them is cut off before the first save appends.
        self._journal_bytes = 0
        self._journal: int | None = None  # the journal's file descriptor, opened on the first save

    @property
    def journal_path(self) -> Path:
        return self.path.with_suffix(JOURNAL_SUFFIX)

    @classmethod
    def load(cls, path: Path) -> State:
        """The state saved at `path` and its journal (empty if nothing was saved yet); reads only."""
        state = cls(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raw = None
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot read the simulator's state {path}: {exc}") from None
        if raw is not None:
            state._read_snapshot(raw)
        state._replay_journal()
        return state

    def save(self, *changed: Record) -> None:
        """Make a change durable: one journal line with the records it touched, fsynced.

        Every record the change created or modified must be named; the counter
        and the armed drops are always written.
        """
        line = {
            "last_id": self.last_id,
            "drops": [asdict(d) for d in self.drops],
            "put": [[_KIND[type(record)], asdict(record)] for record in changed],
        }
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.ftruncate(self._journal, self._journal_bytes)
        os.write(self._journal, json.dumps(line, separators=(",", ":")).encode() + b"\n")
        os.fsync(self._journal)
        self._journal_lines += 1
        if self._journal_lines > _COMPACT_SLACK_LINES + self._record_count():
            self.compact()

    def compact(self) -> None:
        """Fold the journal into a new snapshot and empty it."""
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
                json.dump(document, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.close()
        self.journal_path.unlink(missing_ok=True)
        self._journal_lines = self._journal_bytes = 0

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None

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

    def _record_count(self) -> int:
        stores: tuple[Sized, ...] = (self.customers, self.transactions, self.refunds, self.recipients, self.transfers)
        return sum(len(store) for store in stores) + len(self.events)

    def _read_snapshot(self, raw: dict[str, Any]) -> None:
        if raw.get("version") != _FORMAT_VERSION:
            raise StartupError(
                f"{self.path} has format version {raw.get('version')!r}, "
                f"this simulator reads {_FORMAT_VERSION}; move the file away to start afresh"
            )
        self.last_id = raw["last_id"]
        for kind in ("customer", "transaction", "refund", "recipient", "transfer"):
            for values in raw[f"{kind}s"]:
                self._put(kind, values)
        for values in raw["events"]:
            self._put("event", values)
        # Absent from files written before /_sim/webhooks/drop existed.
        self.drops = [Drop(**d) for d in raw.get("drops", [])]

    def _replay_journal(self) -> None:
        try:
            content = self.journal_path.read_bytes()
        except FileNotFoundError:
            return
        lines = content.split(b"\n")
        # The last piece is empty after a whole line; anything else is a write a kill tore, never acknowledged.
        for number, line in enumerate(lines[:-1], start=1):
            try:
                change = json.loads(line)
            except ValueError:
                raise StartupError(f"{self.journal_path} line {number} is not JSON; the journal is damaged") from None
            self.last_id = change["last_id"]
            self.drops = [Drop(**d) for d in change["drops"]]
            for kind, values in change["put"]:
                self._put(kind, values)
            self._journal_lines += 1
            self._journal_bytes += len(line) + 1

    def _put(self, kind: str, values: dict[str, Any]) -> None:
        """Store one record read from disk, replacing any earlier version of it."""
        if kind == "event":
            record = Event.from_json(dict(values))
            if record.index == len(self.events):
                self.events.append(record)
            else:
                self.events[record.index] = record
            return
        attribute, key, read = _STORES[kind]
        getattr(self, attribute)[values[key]] = read(dict(values))
