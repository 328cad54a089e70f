"""`gofund demo`: the whole story against a running stack, step by step.

Three people register; one opens a goal; two pay for it at the Paystack
simulator's checkout while the goal's progress streams in live (WatchGoal,
NDJSON through Envoy); the owner registers a bank account and submits proof;
a contributor approves it; the escrow is released and paid out; the final
balances are read from the ledger. Everything a user does goes through Envoy
as JSON; the platform's own balances (ESCROW, REVENUE) are read the way an
operator would, from the ledger's internal API with the service credential.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import httpx
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.config import Settings
from services.common.headers import SERVICE_CREDENTIAL_HEADER

PASSWORD = "demo password 123"  # noqa: S105 - throwaway demo users
T = TypeVar("T")


class DemoFailed(Exception):
    pass


class Demo:
    def __init__(self, settings: Settings, out: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.edge = f"http://127.0.0.1:{settings.envoy_port}"
        self.http = httpx.Client(base_url=self.edge, timeout=20)
        self.out = out
        self.run_id = uuid.uuid4().hex[:6]

    # -- plumbing ---------------------------------------------------------------
    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code != 200:
            raise DemoFailed(f"{method} {path} answered {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def wait(self, what: str, check: Callable[[], T | None], timeout_s: float = 60.0) -> T:
        deadline = time.monotonic() + timeout_s
        while (result := check()) is None or result is False:
            if time.monotonic() > deadline:
                raise DemoFailed(f"gave up waiting for {what}")
            time.sleep(0.2)
        return result

    def step(self, text: str) -> None:
        self.out(f"==> {text}")

    # -- the story ----------------------------------------------------------------
    def user(self, first_name: str) -> tuple[str, str]:
        name = f"{first_name.lower()}_{self.run_id}"
        user = self.call(
            "POST",
            "/v1/users",
            json={"email": f"{name}@example.com", "username": name, "password": PASSWORD, "first_name": first_name},
        )["user"]
        token = self.call("POST", "/v1/sessions", json={"login": name, "password": PASSWORD})["token"]
        self.out(f"    {first_name}: user {user['id']}")
        return str(user["id"]), str(token)

    def goal_status(self, goal_id: str) -> str:
        return str(self.call("GET", f"/v1/goals/{goal_id}")["goal"]["status"]).removeprefix("GOAL_STATUS_")

    def watch(self, goal_id: str, stop: threading.Event) -> None:
        """Print each GoalProgress as it arrives (the NDJSON stream through Envoy)."""
        try:
            # A stream may be quiet for a long time: no read timeout, only Envoy's idle timeout.
            timeout = httpx.Timeout(10.0, read=None)
            with httpx.stream("GET", f"{self.edge}/v1/goals/{goal_id}:watch", timeout=timeout) as response:
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    if line.strip():
                        progress = json.loads(line)
                        if progress["heartbeat"]:
                            continue  # a quiet stream's keep-alive, not a change
                        self.out(
                            f"    [live] {progress['status'].removeprefix('GOAL_STATUS_'):<10} raised "
                            f"{money(int(progress['raised_amount']), progress['currency'])} of "
                            f"{money(int(progress['target_amount']), progress['currency'])}, "
                            f"{progress['contributor_count']} contributor(s), seq {progress['seq']}"
                        )
        except httpx.HTTPError as exc:
            self.out(f"    [live] stream ended: {exc}")

    def contribute(self, token: str, goal: dict[str, Any], amount: int) -> None:
        started = self.call(
            "POST",
            f"/v1/goals/{goal['id']}/contributions",
            token,
            json={"amount": str(amount), "currency": goal["currency"], "idempotency_key": uuid.uuid4().hex},
        )
        self.out(f"    checkout: {started['authorization_url']}")
        paid = httpx.post(f"{started['authorization_url']}/pay", json={"outcome": "success"}, timeout=20)
        if paid.status_code != 200:
            raise DemoFailed(f"the checkout answered {paid.status_code}: {paid.text}")
        contribution_id = started["contribution"]["id"]
        self.wait(
            "the payment to be confirmed",
            lambda: (
                self.call("GET", f"/v1/contributions/{contribution_id}", token)["contribution"]["status"]
                == "CONTRIBUTION_STATUS_SUCCEEDED"
            ),
        )
        self.out(f"    paid {money(amount, goal['currency'])}; contribution {contribution_id} SUCCEEDED")

    def balances(self, goal: dict[str, Any], owner_id: str) -> None:
        credential = ((SERVICE_CREDENTIAL_HEADER, self.settings.service_token),)
        currency = goal["currency"]
        with grpc.insecure_channel(self.settings.target("ledger")) as channel:
            ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)

            def account(kind: ledger_pb2.AccountType.ValueType, entity: str) -> str:
                request = ledger_service_pb2.OpenAccountRequest(account_type=kind, entity_id=entity, currency=currency)
                return str(ledger.OpenAccount(request, metadata=credential, timeout=10).account.id)

            accounts = {
                "goal (GOAL)": goal["account_id"],
                "owner (USER)": account(ledger_pb2.ACCOUNT_TYPE_USER, owner_id),
                "platform cash at Paystack (ESCROW)": account(ledger_pb2.ACCOUNT_TYPE_ESCROW, "platform"),
                "platform fees (REVENUE)": account(ledger_pb2.ACCOUNT_TYPE_REVENUE, "platform"),
            }
            found = ledger.BatchGetBalances(
                ledger_service_pb2.BatchGetBalancesRequest(account_ids=list(accounts.values())),
                metadata=credential,
                timeout=10,
            ).balances
        for (name, _), balance in zip(accounts.items(), found, strict=True):
            self.out(f"    {name:<36} {money(balance.balance, currency)}")
        self.out("    (ESCROW and REVENUE hold every goal's money in this currency, not only this one's)")

    def run(self) -> None:
        self.step("Three people register (identity, through Envoy)")
        owner_id, owner = self.user("Ngozi")
        _, alice = self.user("Alice")
        _, bob = self.user("Bob")

        self.step("Ngozi opens a goal for NGN 1,500.00 (goals; its GOAL account opens in the ledger)")
        deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
        goal = self.call(
            "POST",
            "/v1/goals",
            owner,
            json={"title": f"Borehole for Oke-Ado ({self.run_id})", "description": "A pump for the school.",
                  "target_amount": "150000", "currency": "NGN", "deadline": deadline},
        )["goal"]  # fmt: skip
        self.out(f"    goal {goal['id']}, GOAL account {goal['account_id']}")

        self.step("Watching the goal live (WatchGoal, newline-delimited JSON through Envoy)")
        stop = threading.Event()
        watcher = threading.Thread(target=self.watch, args=(goal["id"], stop), daemon=True)
        watcher.start()
        time.sleep(0.5)

        self.step("Alice pays NGN 900.00 at Paystack's checkout (payments, webhook, ledger)")
        self.contribute(alice, goal, 90_000)
        self.step("Bob pays NGN 600.00")
        self.contribute(bob, goal, 60_000)
        self.wait("the goal to be FUNDED", lambda: self.goal_status(goal["id"]) == "FUNDED")
        self.out("    the goal is FUNDED")

        self.step("Ngozi registers her bank account for the payout and submits proof")
        self.call(
            "POST",
            "/v1/payout-recipients",
            owner,
            json={"account_number": "0123456789", "bank_code": "058", "name": "Ngozi Okafor", "currency": "NGN",
                  "idempotency_key": uuid.uuid4().hex},
        )  # fmt: skip
        proof = self.call(
            "POST",
            f"/v1/goals/{goal['id']}/proofs",
            owner,
            json={"title": "The pump runs", "description": "Photos and receipts.",
                  "media_urls": ["https://example.org/pump.jpg"]},
        )["proof"]  # fmt: skip
        self.out(f"    proof {proof['id']}, voting until {proof['voting_ends_at']}")

        self.step("Alice approves (60% of the money raised: decided at once)")
        voted = self.call("POST", f"/v1/proofs/{proof['id']}/votes", alice, json={"is_approved": True})
        self.out(f"    vote weight {voted['vote']['weight']}; proof {voted['proof']['status']}")

        self.step("The escrow is released (fee to REVENUE) and paid out to Ngozi's bank")
        self.wait("the release", lambda: self.goal_status(goal["id"]) in ("RELEASED", "WITHDRAWN"))
        self.out(f"    goal {self.goal_status(goal['id'])}")
        if self.settings.paystack_sim_settle_ms == 0:
            raise DemoFailed(
                "the simulator settles transfers only by hand (GOFUND_PAYSTACK_SIM_SETTLE_MS=0): "
                f"POST {self.settings.paystack_url}/_sim/transfers/<transfer code>/settle"
            )
        self.wait("the payout", lambda: self.goal_status(goal["id"]) == "WITHDRAWN", timeout_s=120)
        self.out("    the transfer settled: goal WITHDRAWN")
        stop.set()

        self.step("Final balances (ledger)")
        self.balances(goal, owner_id)
        self.step("Done")


def money(amount: int, currency: str) -> str:
    return f"{currency} {amount / 100:,.2f}"


def main(settings: Settings) -> None:
    demo = Demo(settings)
    try:
        demo.run()
    except (DemoFailed, httpx.HTTPError, grpc.RpcError) as exc:
        print(f"gofund demo: {exc}", file=sys.stderr)
        sys.exit(1)
