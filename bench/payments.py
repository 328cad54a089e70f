"""Payments benchmarks: webhooks end to end through Envoy, beside the ledger alone. Asserts nothing.

Runs the whole platform (`Stack`, durable PostgreSQL) on free ports in a
temporary directory. Contributions are made through Envoy and paid at the
simulator's checkout; the simulator's own webhook deliveries go to a closed
port, so this script delivers each signed `charge.success` itself and times
it. Prints one line per figure: `name: value (target ...)`.

- webhook_end_to_end_per_s: events delivered by 8 clients through Envoy until
  every one is captured in the ledger (signature, store, verify at the
  simulator, ledger capture), divided into the wall time; the bench learns of
  captures from the ledger's balance stream, never by polling the platform;
- post_transaction_per_s: the same ledger capture posted directly by 8 clients;
- first_delivery_p50_ms: one event at a time, from POST to its capture in the
  ledger; duplicate_delivery_p50_ms: the same bodies again, POST to answer;
- webhook_cpu_ms_per_event_<process>: each process's CPU time over the
  throughput run per event, and their total, which with the machine's cores
  bounds the rate (webhook_events_per_s_the_cores_allow; the bench's own
  clients, not counted, take more): where the time goes, measured, and how
  far the path is from its target on this machine.

  make bench                         # 300 events
  make bench BENCH_FLAGS=--quick     # 60 events
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import psutil
from benchkit import (
    AMOUNT,
    CREDENTIAL,
    GoalBalance,
    deliver,
    ledger_account,
    line,
    open_goal,
    paid_events,
    platform,
    platform_cpu_s,
    webhook_environment,
)
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.stack.stack import Stack

CLIENTS = 8


def webhook_throughput(
    stack: Stack, http: httpx.Client, goal: GoalBalance, events: list[tuple[str, bytes]]
) -> tuple[float, dict[str, float]]:
    """Events delivered by CLIENTS clients until every one is captured in the ledger, per
    second; and each platform process's CPU ms per event meanwhile."""
    target = goal.balance + AMOUNT * len(events)
    cpu_before = platform_cpu_s(stack)
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda event: deliver(http, stack, event[1]), events))
    goal.wait_for(target)
    rate = len(events) / (time.perf_counter() - started)
    cpu_after = platform_cpu_s(stack)
    per_event = {name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / len(events) for name in cpu_after}
    return rate, per_event


def delivery_latencies(
    stack: Stack, http: httpx.Client, goal: GoalBalance, events: list[tuple[str, bytes]]
) -> tuple[float, float]:
    """p50 of POST → capture in the ledger (first delivery) and of POST → answer (duplicate)."""
    first, duplicate = [], []
    for _, body in events:
        target = goal.balance + AMOUNT
        started = time.perf_counter()
        deliver(http, stack, body)
        goal.wait_for(target)
        first.append(time.perf_counter() - started)
    for _, body in events:
        started = time.perf_counter()
        deliver(http, stack, body)
        duplicate.append(time.perf_counter() - started)
    return statistics.median(first) * 1000, statistics.median(duplicate) * 1000


def post_transaction_rate(stack: Stack, seconds: float) -> float:
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.ledger_port}") as channel:
        ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        escrow = ledger_account(ledger, ledger_pb2.ACCOUNT_TYPE_ESCROW, "platform")
        goal = ledger_account(ledger, ledger_pb2.ACCOUNT_TYPE_GOAL, str(uuid.uuid4()))
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
    with platform("payments", webhook_environment, durable=True) as stack:
        with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CLIENTS * 2)) as http:
            goal_id, payer = open_goal(stack, http)
            events = paid_events(stack, http, goal_id, payer, count + sample)
            goal = GoalBalance(stack, goal_id)
            try:
                throughput, cpu_ms = webhook_throughput(stack, http, goal, events[:count])
                first_p50, duplicate_p50 = delivery_latencies(stack, http, goal, events[count:])
            finally:
                goal.close()
        direct = post_transaction_rate(stack, seconds=count / max(throughput, 1.0))
        line("webhook_end_to_end_per_s", f"{throughput:.0f}", "-")
        line("post_transaction_per_s", f"{direct:.0f}", "-")
        line("webhook_end_to_end_vs_post_transaction", f"{throughput / direct:.2f}", ">= 0.5")
        line("first_delivery_p50_ms", f"{first_p50:.1f}", "-")
        line("duplicate_delivery_p50_ms", f"{duplicate_p50:.1f}", "-")
        line("duplicate_vs_first_delivery_p50", f"{duplicate_p50 / first_p50:.2f}", "<= 0.5")
        for name, ms in sorted(cpu_ms.items(), key=lambda item: -item[1]):
            if ms >= 0.05:
                process = re.sub(r"\W+", "_", name.removesuffix(" service"))
                line(f"webhook_cpu_ms_per_event_{process}", f"{ms:.2f}", "-")
        total = sum(cpu_ms.values())
        cores = psutil.cpu_count() or 1
        line("webhook_cpu_ms_per_event_total", f"{total:.1f}", "-")
        # At the target the path would run at half the direct rate, so every process together
        # may spend at most cores / (0.5 * direct) seconds per event.
        line(f"webhook_events_per_s_the_{cores}_cores_allow", f"{cores * 1000 / total:.0f}", f">= {direct * 0.5:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    main(parser.parse_args().quick)
