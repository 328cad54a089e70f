"""Payments benchmarks: webhooks end to end through Envoy, beside the ledger alone. Asserts nothing.

Runs the whole platform (`Stack`, durable PostgreSQL) on free ports in a
temporary directory. Contributions are made through Envoy and paid at the
simulator's checkout; the simulator's own webhook deliveries go to a closed
port, so this script delivers each signed `charge.success` itself and times
it. Prints one line per figure: `name: value (target ...)`.

- webhook_end_to_end_per_s: events delivered by 8 clients through Envoy until
  every one is processed (signature, store, verify at the simulator, ledger
  capture, goals told), divided into the wall time;
- post_transaction_per_s: the same ledger capture posted directly by 8 clients;
- first_delivery_p50_ms: one event at a time, from POST to its capture in the
  ledger; duplicate_delivery_p50_ms: the same bodies again, POST to answer.

  make bench                         # 300 events
  make bench BENCH_FLAGS=--quick     # 60 events
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from benchkit import line, stack_overrides, user
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc
from pymongo import MongoClient

from services.common.config import Settings
from services.common.headers import SERVICE_CREDENTIAL_HEADER
from services.payments.domain import capture_transaction_id, sign
from services.stack import embedded
from services.stack.stack import Stack

CLIENTS = 8
CREDENTIAL = ((SERVICE_CREDENTIAL_HEADER, Settings.model_fields["service_token"].default),)


def environment(root: Path) -> dict[str, str]:
    return stack_overrides(
        root,
        # The simulator's deliveries fail (nothing listens) and wait an hour to
        # retry: this script delivers every event itself.
        GOFUND_WEBHOOK_URL=f"http://127.0.0.1:{embedded.free_port()}/nowhere",
        GOFUND_PAYSTACK_SIM_RETRY_BASE_MS="3600000",
        GOFUND_PAYSTACK_SIM_SETTLE_MS="0",
    )


def paid_events(stack: Stack, http: httpx.Client, count: int) -> list[tuple[str, bytes]]:
    """`count` contributions paid at checkout: (payment id, signed-ready charge.success body)."""
    edge = f"http://127.0.0.1:{stack.settings.envoy_port}"
    _, owner = user(stack)
    _, payer = user(stack)
    deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    goal = http.post(
        f"{edge}/v1/goals",
        json={"title": "Bench goal", "target_amount": str(10**12), "currency": "NGN", "deadline": deadline},
        headers={"authorization": f"Bearer {owner}"},
    ).json()["goal"]

    def one(_: int) -> tuple[str, bytes]:
        started = http.post(
            f"{edge}/v1/goals/{goal['id']}/contributions",
            json={"amount": 1000, "currency": "NGN", "idempotency_key": uuid.uuid4().hex},
            headers={"authorization": f"Bearer {payer}"},
        ).json()
        http.post(f"{started['authorization_url']}/pay", json={"outcome": "success"}).raise_for_status()
        events = http.get(
            f"{stack.settings.paystack_url}/_sim/events",
            params={"event": "charge.success", "reference": started["payment_reference"]},
        ).json()["data"]
        return started["contribution"]["payment_id"], json.dumps(events[0]["payload"]).encode()

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(count)))


def deliver(http: httpx.Client, stack: Stack, body: bytes) -> None:
    response = http.post(
        f"http://127.0.0.1:{stack.settings.envoy_port}/v1/webhooks/paystack",
        content=body,
        headers={
            "content-type": "application/json",
            "x-paystack-signature": sign(stack.settings.paystack_secret_key, body),
        },
    )
    response.raise_for_status()


def webhook_throughput(stack: Stack, http: httpx.Client, events: list[tuple[str, bytes]]) -> float:
    with MongoClient(stack.settings.mongodb_url) as mongo:
        collection = mongo[stack.settings.mongodb_database]["webhook_events"]
        already = collection.count_documents({"status": "PROCESSED"})
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda event: deliver(http, stack, event[1]), events))
        while collection.count_documents({"status": "PROCESSED"}) < already + len(events):
            time.sleep(0.01)
        return len(events) / (time.perf_counter() - started)


def captured(ledger: Any, payment_id: str) -> bool:
    try:
        ledger.GetTransaction(
            ledger_service_pb2.GetTransactionRequest(transaction_id=capture_transaction_id(payment_id)),
            metadata=CREDENTIAL,
        )
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def delivery_latencies(stack: Stack, http: httpx.Client, events: list[tuple[str, bytes]]) -> tuple[float, float]:
    """p50 of POST → capture in the ledger (first delivery) and of POST → answer (duplicate)."""
    first, duplicate = [], []
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.ledger_port}") as channel:
        ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        for payment_id, body in events:
            started = time.perf_counter()
            deliver(http, stack, body)
            while not captured(ledger, payment_id):
                time.sleep(0.002)
            first.append(time.perf_counter() - started)
        for _, body in events:
            started = time.perf_counter()
            deliver(http, stack, body)
            duplicate.append(time.perf_counter() - started)
    return statistics.median(first) * 1000, statistics.median(duplicate) * 1000


def post_transaction_rate(stack: Stack, seconds: float) -> float:
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.ledger_port}") as channel:
        ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)

        def account(kind: int, entity: str) -> str:
            request = ledger_service_pb2.OpenAccountRequest(account_type=kind, entity_id=entity, currency="NGN")
            return str(ledger.OpenAccount(request, metadata=CREDENTIAL).account.id)

        escrow = account(ledger_pb2.ACCOUNT_TYPE_ESCROW, "platform")
        goal = account(ledger_pb2.ACCOUNT_TYPE_GOAL, str(uuid.uuid4()))
        stop_at = time.perf_counter() + seconds

        def client(_: int) -> int:
            posted = 0
            while time.perf_counter() < stop_at:
                ledger.PostTransaction(
                    ledger_service_pb2.PostTransactionRequest(
                        transaction_id=f"payment:{uuid.uuid4()}:capture",
                        postings=[
                            ledger_pb2.Posting(account_id=escrow, entry_type=ledger_pb2.ENTRY_TYPE_DEBIT, amount=1000,
                                               currency="NGN"),
                            ledger_pb2.Posting(account_id=goal, entry_type=ledger_pb2.ENTRY_TYPE_CREDIT, amount=1000,
                                               currency="NGN"),
                        ],
                        description="bench capture",
                    ),
                    metadata=CREDENTIAL,
                )  # fmt: skip
                posted += 1
            return posted

        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            total = sum(pool.map(client, range(CLIENTS)))
        return total / (time.perf_counter() - started)


def main(quick: bool) -> None:
    count = 60 if quick else 300
    sample = 20 if quick else 50
    root = Path(tempfile.mkdtemp(prefix="gofund-bench-payments-"))
    stack = Stack(environment(root), durable=True)
    print(f"starting the platform in {root} ...", flush=True)
    stack.start()
    try:
        with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CLIENTS * 2)) as http:
            events = paid_events(stack, http, count + sample)
            throughput = webhook_throughput(stack, http, events[:count])
            first_p50, duplicate_p50 = delivery_latencies(stack, http, events[count:])
        direct = post_transaction_rate(stack, seconds=count / max(throughput, 1.0))
        line("webhook_end_to_end_per_s", f"{throughput:.0f}", "-")
        line("post_transaction_per_s", f"{direct:.0f}", "-")
        line("webhook_end_to_end_vs_post_transaction", f"{throughput / direct:.2f}", ">= 0.3")
        line("first_delivery_p50_ms", f"{first_p50:.1f}", "-")
        line("duplicate_delivery_p50_ms", f"{duplicate_p50:.1f}", "-")
        line("duplicate_vs_first_delivery_p50", f"{duplicate_p50 / first_p50:.2f}", "<= 0.5")
    finally:
        stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    main(parser.parse_args().quick)
