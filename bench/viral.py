"""A viral goal: thousands watching one goal live while contributions land through the webhook path.

Runs the platform (`Stack`, durable PostgreSQL) on free ports in a temporary
directory and measures two runs side by side, each on a goal of its own:
contributions paid at the simulator's checkout beforehand, their signed
`charge.success` delivered through Envoy at `RATE` per second (payments
verifies each, captures it in the ledger, goals learns it from the ledger's
stream and tells its watchers) — once with nobody watching, once with
`WATCHERS` `WatchGoal` streams on the goal (native gRPC to goals, from a
process of their own). Asserts nothing; prints one line per figure:

- viral_goal_final_seen_after_last_capture_max_ms: the last watcher to see the
  goal's final raised amount, after the ledger committed the last capture
  (the ledger's own stream tells the bench when); a contribution counts in the
  raised amount once goals has both the capture and payments' outcome;
- goals_cpu_per_contribution_watched_vs_unwatched: the goals process's CPU
  time per contribution with the watchers ÷ without;
- crowded_goal_final_seen_after_last_capture_ms: the same contributions on a
  goal that already holds CROWDED succeeded contributions (planted in goals'
  database as goals stores them, their money posted to the goal's account),
  one watcher: whether a change of progress costs more as a goal grows (the
  goals process's CPU alone would not tell: work it waits for in PostgreSQL
  is not its CPU, so PostgreSQL's CPU per contribution is printed beside);
- viral_contributions_per_s: the delivery rate achieved with the watchers.

  make bench                         # 300 contributions per run
  make bench BENCH_FLAGS=--quick     # 150
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import psycopg
from benchkit import (
    AMOUNT,
    CREDENTIAL,
    GoalBalance,
    cpu_s,
    deliver,
    ledger_account,
    line,
    open_goal,
    paid_events,
    platform,
    platform_cpu_s,
    webhook_environment,
)
from gofund.goals.v1 import goals_service_pb2, goals_service_pb2_grpc
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.stack.stack import Stack

RATE = 100.0  # contributions per second
CROWDED = 100_000  # contributions a crowded goal already holds
WATCHERS = 2000
CHANNELS = 32  # the watchers' connections to goals
SETTLE_S = 60.0  # how long watchers may take to see the final amount before they count as never


def watcher_process(target: str, goal_id: str, final: int, count: int, ready: Any, stop: Any, results: Any) -> None:
    """`count` WatchGoal streams; sends back when each first saw `final` raised (or None)."""

    async def run() -> None:
        channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
        seen: list[float | None] = [None] * count
        started, refused = [0], [0]

        async def follow(index: int) -> None:
            stub = goals_service_pb2_grpc.GoalsServiceStub(channels[index % CHANNELS])
            first = True
            while not stop.is_set():
                stream = stub.WatchGoal(goals_service_pb2.WatchGoalRequest(goal_id=goal_id))
                try:
                    async for message in stream:
                        if first:
                            first, started[0] = False, started[0] + 1
                        if message.raised_amount >= final and seen[index] is None:
                            seen[index] = time.monotonic()
                except grpc.aio.AioRpcError:
                    if stop.is_set():
                        return  # cancelled at the end
                    # As a page would: connect again (counted and printed).
                    refused[0] += 1
                    await asyncio.sleep(0.2)

        followers = [asyncio.create_task(follow(i)) for i in range(count)]
        while started[0] < count:
            await asyncio.sleep(0.05)
        print(f"{count} watchers following ({refused[0]} streams ended at once and were opened again)", flush=True)
        ready.set()
        # Until every watcher has seen the final amount, or the bench gives up on them.
        while not stop.is_set() and not all(seen):
            await asyncio.sleep(0.01)
        stop.set()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for channel in channels:
            await channel.close()
        results.put(seen)

    asyncio.run(run())


def paced_delivery(stack: Stack, http: httpx.Client, events: list[tuple[str, bytes]]) -> float:
    """Deliver the events through Envoy at RATE per second; the rate achieved."""
    began = time.monotonic()

    def one(index: int) -> None:
        due = began + index / RATE
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        deliver(http, stack, events[index][1])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(len(events))))
    return len(events) / (time.monotonic() - began)


def goals_cpu_s(stack: Stack) -> float:
    process = stack.services["goals"].process
    assert process is not None
    return cpu_s(process.pid)


def plant_contributions(stack: Stack, goal_id: str, count: int) -> None:
    """`count` succeeded contributions of AMOUNT on the goal, each from a contributor of its own,
    stored (and counted on the goal) as goals stores a confirmed one, and their money in the
    goal's ledger account, so the goal shows them once goals has the balance."""
    url = stack.settings.database_url("goals").replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO contributions (id, goal_id, user_id, payment_id, payment_reference, idempotency_key, amount,"
            " currency, status, created_at, updated_at, paid_at, failure_reason, refund_on_confirm)"
            " SELECT gen_random_uuid(), %s, gen_random_uuid(), gen_random_uuid()::text, md5(n::text), md5(n::text),"
            " %s, 'NGN', 'SUCCEEDED', now(), now(), now(), '', false FROM generate_series(1, %s) AS n",
            (goal_id, AMOUNT, count),
        )
        connection.execute(
            "UPDATE goals SET counted_amount = counted_amount + %s, counted_contributors = counted_contributors + %s"
            " WHERE id = %s",
            (AMOUNT * count, count, goal_id),
        )
        connection.execute("ANALYZE contributions")
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.ledger_port}") as channel:
        ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        escrow = ledger_account(ledger, ledger_pb2.ACCOUNT_TYPE_ESCROW, "platform")
        goal = ledger_account(ledger, ledger_pb2.ACCOUNT_TYPE_GOAL, goal_id)
        ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=f"bench:{goal_id}:planted",
                postings=[
                    ledger_pb2.Posting(account_id=escrow, entry_type=ledger_pb2.ENTRY_TYPE_DEBIT,
                                       amount=AMOUNT * count, currency="NGN"),
                    ledger_pb2.Posting(account_id=goal, entry_type=ledger_pb2.ENTRY_TYPE_CREDIT,
                                       amount=AMOUNT * count, currency="NGN"),
                ],
                description="bench: the planted contributions' money",
            ),
            metadata=CREDENTIAL,
        )  # fmt: skip


def viral_run(
    stack: Stack, http: httpx.Client, count: int, watchers: int, planted: int = 0
) -> tuple[float, float, float, list[float | None]]:
    """One goal (holding `planted` contributions already), `count` contributions at RATE with
    `watchers` watching: (goals' and PostgreSQL's CPU s per contribution, delivery rate, per
    watcher the lateness of the final amount in s)."""
    goal_id, payer = open_goal(stack, http)
    events = paid_events(stack, http, goal_id, payer, count)
    if planted:
        plant_contributions(stack, goal_id, planted)
    final = AMOUNT * (planted + count)
    balance = GoalBalance(stack, goal_id)
    captured_at: list[float] = []
    # When the ledger committed the last capture: its stream's message reaching the bench.
    last_capture = threading.Thread(target=lambda: (balance.wait_for(final), captured_at.append(time.monotonic())))
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    process = None
    if watchers:
        target = f"127.0.0.1:{stack.settings.goals_port}"
        process = context.Process(target=watcher_process, args=(target, goal_id, final, watchers, ready, stop, results))
        process.start()
        ready.wait()
    try:
        last_capture.start()
        cpu_before, postgres_before = goals_cpu_s(stack), platform_cpu_s(stack)["postgres"]
        watchers_before = cpu_s(process.pid) if process is not None else 0.0
        began = time.monotonic()
        rate = paced_delivery(stack, http, events)
        last_capture.join()
        if process is not None:
            # Goals applies a contribution once both the capture (ledger) and the payment's
            # outcome (payments) reached it, so watchers see the final amount after both.
            stop.wait(timeout=SETTLE_S)
        time.sleep(1.0)  # goals' own work after the last change
        cpu = goals_cpu_s(stack) - cpu_before
        postgres = platform_cpu_s(stack)["postgres"] - postgres_before
        if process is not None:
            # The watchers' own process shares the 2 cores with the platform: said, so the
            # lateness can be read against it.
            share = (cpu_s(process.pid) - watchers_before) / (time.monotonic() - began)
            line(f"viral_{watchers}_watchers_process_cores_used", f"{share:.2f}", "-")
    finally:
        balance.close()
        stop.set()
    lateness: list[float | None] = []
    if process is not None:
        seen = results.get()
        process.join()
        lateness = [None if at is None else at - captured_at[0] for at in seen]
    return cpu / count, postgres / count, rate, lateness


def main(quick: bool) -> None:
    count = 150 if quick else 300
    with platform("viral", webhook_environment, durable=True) as stack:
        with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            unwatched_cpu, unwatched_postgres, unwatched_rate, _ = viral_run(stack, http, count, 0)
            watched_cpu, _, watched_rate, lateness = viral_run(stack, http, count, WATCHERS)
            crowded = viral_run(stack, http, count, 1, planted=CROWDED)
            crowded_cpu, crowded_postgres, crowded_rate, crowded_lateness = crowded
        missed = sum(1 for late in lateness if late is None)
        late_ms = [max(0.0, late) * 1000 for late in lateness if late is not None]
        line("viral_contributions_per_s_unwatched", f"{unwatched_rate:.0f}", f"{RATE:.0f}")
        line(f"viral_contributions_per_s_{WATCHERS}_watchers", f"{watched_rate:.0f}", f"{RATE:.0f}")
        line(f"viral_goal_watchers_that_never_saw_the_final_amount_of_{WATCHERS}", str(missed), "0")
        if late_ms:
            late_ms.sort()
            line("viral_goal_final_seen_after_last_capture_p50_ms", f"{late_ms[len(late_ms) // 2]:.0f}", "-")
            line("viral_goal_final_seen_after_last_capture_max_ms", f"{late_ms[-1]:.0f}", "<= 250")
        line("goals_cpu_ms_per_contribution_unwatched", f"{unwatched_cpu * 1000:.2f}", "-")
        line(f"goals_cpu_ms_per_contribution_{WATCHERS}_watchers", f"{watched_cpu * 1000:.2f}", "-")
        line("goals_cpu_per_contribution_watched_vs_unwatched", f"{watched_cpu / unwatched_cpu:.2f}", "<= 1.5")
        line(f"viral_contributions_per_s_goal_with_{CROWDED}_contributions", f"{crowded_rate:.0f}", f"{RATE:.0f}")
        (late,) = crowded_lateness
        seen = f"never (within {SETTLE_S:.0f} s)" if late is None else f"{max(0.0, late) * 1000:.0f}"
        line(f"goal_with_{CROWDED}_contributions_final_seen_after_last_capture_ms", seen, "-")
        line(f"goals_cpu_ms_per_contribution_goal_with_{CROWDED}_contributions", f"{crowded_cpu * 1000:.2f}", "-")
        line("postgres_cpu_ms_per_contribution_new_goal", f"{unwatched_postgres * 1000:.2f}", "-")
        crowded_postgres_ms = f"{crowded_postgres * 1000:.2f}"
        line(f"postgres_cpu_ms_per_contribution_goal_with_{CROWDED}_contributions", crowded_postgres_ms, "-")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    main(parser.parse_args().quick)
