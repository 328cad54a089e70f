"""Edge benchmark: GetGoal as JSON through Envoy beside native gRPC straight to goals. Asserts nothing.

Runs the platform (`Stack`) on free ports in a temporary directory, opens one
goal, then measures the same read two ways in one run:
- latency: one client, one call at a time: native gRPC straight to goals, the
  same gRPC client through Envoy (Envoy's own cost), and JSON through Envoy;
  the p50 of each and their differences;
- throughput: 32 calls in flight for a few seconds; the ratio of the rates.
Each load runs in a process of its own (aiohttp for JSON, grpc.aio for gRPC),
so the client's own CPU does not count against the server side it measures.
Prints one line per figure: `name: value (target ...)`.

  make bench                         # 8 s per load
  make bench BENCH_FLAGS=--quick     # 3 s per load
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import httpx
from benchkit import line, platform, stack_overrides, user
from gofund.goals.v1 import goals_service_pb2, goals_service_pb2_grpc

from services.stack.stack import Stack

CONCURRENCY = 32


async def _json_load(url: str, concurrency: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    assert response.status == 200
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies


async def _grpc_load(target: str, goal_id: str, concurrency: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = goals_service_pb2_grpc.GoalsServiceStub(channel)
        request = goals_service_pb2.GetGoalRequest(goal_id=goal_id)

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await stub.GetGoal(request)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies


def _run(kind: str, address: str, goal_id: str, concurrency: int, seconds: float, results: dict[str, object]) -> None:
    if kind == "json":
        count, latencies = asyncio.run(_json_load(f"http://{address}/v1/goals/{goal_id}", concurrency, seconds))
    else:
        count, latencies = asyncio.run(_grpc_load(address, goal_id, concurrency, seconds))
    results["rate"] = count / seconds
    results["p50_ms"] = statistics.median(latencies) * 1000


def measure(kind: str, address: str, goal_id: str, concurrency: int, seconds: float) -> tuple[float, float]:
    """(calls per second, p50 ms) of a load run in its own process."""
    with multiprocessing.Manager() as manager:
        results = manager.dict()
        process = multiprocessing.Process(target=_run, args=(kind, address, goal_id, concurrency, seconds, results))
        process.start()
        process.join()
        return float(results["rate"]), float(results["p50_ms"])


def open_goal(stack: Stack) -> str:
    _, token = user(stack)
    deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    response = httpx.post(
        f"http://127.0.0.1:{stack.settings.envoy_port}/v1/goals",
        json={"title": "Bench goal", "target_amount": "100000", "currency": "NGN", "deadline": deadline},
        headers={"authorization": f"Bearer {token}"},
        timeout=20,
    )
    response.raise_for_status()
    return str(response.json()["goal"]["id"])


def main(quick: bool) -> None:
    seconds = 3.0 if quick else 8.0
    with platform("edge", stack_overrides, durable=False) as stack:
        goal_id = open_goal(stack)
        envoy = f"127.0.0.1:{stack.settings.envoy_port}"
        goals = f"127.0.0.1:{stack.settings.goals_port}"
        measure("grpc", goals, goal_id, 4, 1.0)  # warm every path (connections, caches)
        measure("grpc", envoy, goal_id, 4, 1.0)
        measure("json", envoy, goal_id, 4, 1.0)
        _, grpc_p50 = measure("grpc", goals, goal_id, 1, seconds)
        _, grpc_envoy_p50 = measure("grpc", envoy, goal_id, 1, seconds)
        _, json_p50 = measure("json", envoy, goal_id, 1, seconds)
        grpc_rate, _ = measure("grpc", goals, goal_id, CONCURRENCY, seconds)
        json_rate, _ = measure("json", envoy, goal_id, CONCURRENCY, seconds)
        line("get_goal_grpc_direct_p50_ms", f"{grpc_p50:.3f}", "-")
        line("get_goal_grpc_envoy_p50_ms", f"{grpc_envoy_p50:.3f}", "-")
        line("get_goal_json_envoy_p50_ms", f"{json_p50:.3f}", "-")
        # The same gRPC client either side of Envoy: Envoy's own proxying cost.
        line("grpc_envoy_minus_grpc_direct_p50_ms", f"{grpc_envoy_p50 - grpc_p50:.3f}", "-")
        # Through Envoy both: transcoding plus the HTTP/1.1 JSON client's cost against gRPC's.
        line("json_envoy_minus_grpc_envoy_p50_ms", f"{json_p50 - grpc_envoy_p50:.3f}", "-")
        line("json_envoy_minus_grpc_direct_p50_ms", f"{json_p50 - grpc_p50:.3f}", "<= 0.5")
        line("get_goal_grpc_direct_per_s_32", f"{grpc_rate:.0f}", "-")
        line("get_goal_json_envoy_per_s_32", f"{json_rate:.0f}", "-")
        line("json_envoy_vs_grpc_direct_throughput_32", f"{json_rate / grpc_rate:.2f}", ">= 0.7")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    main(parser.parse_args().quick)
