"""Helpers for e2e tests that move money: users, goals, contributions, Paystack checkout, ledger reads.

Everything a client does goes through Envoy as JSON. Users are made directly
over identity's gRPC port, because Envoy rate-limits registration and login
(which the identity tests exercise) and users are only the tests' fixtures.
Reads an operator would make (ledger transactions, payments' records, the
simulator's state) go to the services' internal APIs and stores.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from pymongo import MongoClient

from services.payments.domain import sign
from services.paystack_sim.state import STATE_FILE, State
from services.stack.stack import Stack
from tests.conftest import sync_service_channel
from tests.e2e.conftest import BIN, edge
from tests.helpers import eventually_sync

PASSWORD = "correct horse battery"


class User:
    def __init__(self, user_id: str, token: str, email: str) -> None:
        self.id, self.token, self.email = user_id, token, email

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def new_user(stack: Stack) -> User:
    name = "m" + uuid.uuid4().hex[:12]
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.identity_port}") as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        user = identity.CreateUser(
            identity_service_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD),
            timeout=10,
        ).user
        token = identity.CreateSession(
            identity_service_pb2.CreateSessionRequest(login=name, password=PASSWORD), timeout=10
        ).token
    return User(user.id, token, user.email)


def api(stack: Stack, method: str, path: str, user: User | None = None, **kwargs: Any) -> httpx.Response:
    headers = {**(user.auth if user else {}), **kwargs.pop("headers", {})}
    return httpx.request(method, f"{edge(stack)}{path}", headers=headers, timeout=20, **kwargs)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


# -- goals and contributions ---------------------------------------------------------------------
def open_goal(stack: Stack, owner: User, target: int, currency: str = "NGN", days: int = 30) -> dict[str, Any]:
    deadline = (datetime.now(UTC) + timedelta(days=days)).isoformat().replace("+00:00", "Z")
    body = {
        "title": "Borehole for Oke-Ado",
        "description": "A borehole and a pump for the primary school.",
        "target_amount": str(target),
        "currency": currency,
        "deadline": deadline,
    }
    goal: dict[str, Any] = ok(api(stack, "POST", "/v1/goals", owner, json=body))["goal"]
    return goal


def contribute(stack: Stack, payer: User, goal: dict[str, Any], amount: int) -> dict[str, Any]:
    """Start a contribution: {contribution, authorization_url, payment_reference}."""
    return ok(
        api(
            stack,
            "POST",
            f"/v1/goals/{goal['id']}/contributions",
            payer,
            json={"amount": amount, "currency": goal["currency"], "idempotency_key": uuid.uuid4().hex},
        )
    )


def pay(checkout_url: str, outcome: str = "success", amount: int | None = None) -> None:
    """The payer completes Paystack's checkout (the simulator's pay button)."""
    body: dict[str, Any] = {"outcome": outcome}
    if amount is not None:
        body["amount"] = amount
    response = httpx.post(f"{checkout_url}/pay", json=body, timeout=10)
    assert response.status_code == 200, response.text


def payment(stack: Stack, payer: User, payment_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(api(stack, "GET", f"/v1/payments/{payment_id}", payer))["payment"]
    return found


def payment_status(stack: Stack, payer: User, payment_id: str, status: str, timeout_s: float = 20.0) -> dict[str, Any]:
    return eventually_sync(
        lambda: (p := payment(stack, payer, payment_id))["status"] == f"PAYMENT_STATUS_{status}" and p,
        timeout_s,
        f"payment {payment_id} to be {status}",
    )


def contributed(stack: Stack, payer: User, goal: dict[str, Any], amount: int) -> dict[str, Any]:
    """A contribution paid at checkout and settled: the contribution, SUCCEEDED."""
    started = contribute(stack, payer, goal, amount)
    pay(started["authorization_url"])
    contribution_id = started["contribution"]["id"]
    return eventually_sync(
        lambda: (
            (c := ok(api(stack, "GET", f"/v1/contributions/{contribution_id}", payer))["contribution"])["status"]
            == "CONTRIBUTION_STATUS_SUCCEEDED"
            and c
        ),
        what=f"contribution {contribution_id} to succeed",
    )


def goal_status(stack: Stack, goal_id: str, status: str, timeout_s: float = 30.0) -> dict[str, Any]:
    return eventually_sync(
        lambda: (g := ok(api(stack, "GET", f"/v1/goals/{goal_id}"))["goal"])["status"] == f"GOAL_STATUS_{status}" and g,
        timeout_s,
        f"goal {goal_id} to be {status}",
    )


def register_recipient(stack: Stack, owner: User, currency: str) -> None:
    # A bank of the currency's country, picked as a client's bank picker would.
    bank = ok(api(stack, "GET", f"/v1/banks?currency={currency}"))["banks"][0]
    ok(
        api(
            stack,
            "POST",
            "/v1/payout-recipients",
            owner,
            json={
                "account_number": "0123456789",
                "bank_code": bank["code"],
                "name": "Ada Obi",
                "currency": currency,
                "idempotency_key": uuid.uuid4().hex,
            },
        )
    )


def settle_payout(stack: Stack, goal_id: str, outcome: str = "success") -> None:
    def payout() -> dict[str, Any] | None:
        with payments_db(stack) as db:
            found: dict[str, Any] | None = db.payouts.find_one(
                {"goalId": goal_id, "status": "PENDING", "requested": True}
            )
        return found

    reference = eventually_sync(payout, what="the payout to be requested")["reference"]
    settled = httpx.post(
        f"{stack.settings.paystack_url}/_sim/transfers/{reference}/settle", json={"outcome": outcome}, timeout=10
    )
    assert settled.status_code == 200, settled.text


# -- the ledger, the payments store, the simulator -------------------------------------------------
@contextlib.contextmanager
def ledger(stack: Stack) -> Iterator[ledger_service_pb2_grpc.LedgerInternalServiceStub]:
    with sync_service_channel(f"127.0.0.1:{stack.settings.ledger_port}") as channel:
        yield ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)


def transaction(stack: Stack, transaction_id: str) -> Any:
    """The ledger transaction with this id, or None."""
    with ledger(stack) as internal:
        try:
            return internal.GetTransaction(
                ledger_service_pb2.GetTransactionRequest(transaction_id=transaction_id), timeout=10
            ).transaction
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise


def entries(stack: Stack, account_id: str) -> list[dict[str, Any]]:
    """A (public) GOAL account's entries, newest first."""
    found: list[dict[str, Any]] = ok(api(stack, "GET", f"/v1/accounts/{account_id}/entries"))["entries"]
    return found


def balance(stack: Stack, account_id: str) -> int:
    with ledger(stack) as internal:
        response = internal.BatchGetBalances(
            ledger_service_pb2.BatchGetBalancesRequest(account_ids=[account_id]), timeout=10
        )
    return int(response.balances[0].balance)


def platform_account(stack: Stack, kind: str, currency: str = "NGN") -> str:
    from gofund.ledger.v1 import ledger_pb2

    with ledger(stack) as internal:
        response = internal.OpenAccount(
            ledger_service_pb2.OpenAccountRequest(
                account_type=ledger_pb2.AccountType.Value(f"ACCOUNT_TYPE_{kind}"), entity_id="platform",
                currency=currency,
            ),
            timeout=10,
        )  # fmt: skip
    return str(response.account.id)


@contextlib.contextmanager
def payments_db(stack: Stack) -> Iterator[Any]:
    with MongoClient(stack.settings.mongodb_url, tz_aware=True) as client:
        yield client[stack.settings.mongodb_database]


def simulator(stack: Stack) -> str:
    return stack.settings.paystack_url


def sim_events(stack: Stack, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{simulator(stack)}/_sim/events", params=query, timeout=10)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


def sim_transactions(stack: Stack) -> list[dict[str, Any]]:
    """What the simulator holds (its state file), as Paystack's own records would show."""
    state = State.load(stack.data_dir / STATE_FILE)
    return [asdict(t) for t in state.transactions.values()]


def deliver(stack: Stack, body: bytes, signature: str | None = None) -> httpx.Response:
    """POST a webhook to Envoy's Paystack route as Paystack does (signed unless told otherwise)."""
    headers = {"content-type": "application/json"}
    signature = sign(stack.settings.paystack_secret_key, body) if signature is None else signature
    if signature:
        headers["x-paystack-signature"] = signature
    return httpx.post(f"{edge(stack)}/v1/webhooks/paystack", content=body, headers=headers, timeout=20)


def reconcile(stack: Stack) -> subprocess.CompletedProcess[str]:
    """`gofund reconcile` against the stack, as an operator runs it."""
    return subprocess.run(
        [str(BIN / "gofund"), "reconcile"],
        check=False,
        env={**os.environ, **stack.overrides},
        capture_output=True,
        text=True,
        timeout=300,
    )


def reconciled_clean(stack: Stack, timeout_s: float = 60.0) -> str:
    """Poll reconciliation until it finds no drift (work in flight settles first); its report."""
    reports: list[subprocess.CompletedProcess[str]] = []

    def clean() -> bool:
        reports.append(reconcile(stack))
        return reports[-1].returncode == 0

    # On a timeout the last report, which names what drifted, is the better failure.
    with contextlib.suppress(AssertionError):
        eventually_sync(clean, timeout_s, "reconciliation to be clean", interval_s=0.5)
    report = reports[-1]
    assert report.returncode == 0, f"reconciliation is not clean:\n{report.stdout}{report.stderr}"
    return report.stdout


def make_admin(stack: Stack, user: User) -> None:
    subprocess.run(
        [str(BIN / "gofund"), "admin", "create", "--email", user.email],
        env={**os.environ, **stack.overrides},
        capture_output=True,
        timeout=60,
        check=True,
    )
