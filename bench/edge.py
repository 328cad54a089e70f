"""Edge benchmark: GetGoal as JSON through Envoy beside native gRPC straight to goals. Asserts nothing.

Runs the platform (`Stack`) on free ports in a temporary directory, opens one
goal, then measures the same read two ways in one run:
- latency: one client, one call at a time: native gRPC straight to goals, the
  same gRPC client through Envoy (Envoy's own cost), and JSON through Envoy;
  the p50 of each and their differences;
- throughput: 32 calls in flight for a few seconds; the ratio of the rates;
- Envoy's own cost: the same three latencies against a bare upstream (a
  GetGoal that answers a fixed goal, no database), behind a second Envoy
  rendered from the same configuration. The difference there is Envoy's
  filters and hops alone; against goals, it also holds whatever goals' own CPU
  per call takes from Envoy and the client on a shared machine.
Each load runs in a process of its own (aiohttp for JSON, grpc.aio for gRPC),
so the client's own CPU does not count against the server side it measures.
Prints one line per figure: `name: value (target ...)`.

  make bench                         # 8 s per load
  make bench BENCH_FLAGS=--quick     # 3 s per load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx
from benchkit import line, platform, stack_overrides, user
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc

from services.stack import embedded
from services.stack.envoy_config import SERVICES, EdgeConfig, write
from services.stack.stack import Stack

CONCURRENCY = 32
BARE_GOAL = "00000000-0000-4000-8000-000000000001"


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


class _FixedGoals(goals_service_pb2_grpc.GoalsServiceServicer):
    async def GetGoal(self, request: Any, context: grpc.aio.ServicerContext) -> goals_service_pb2.GetGoalResponse:
        return goals_service_pb2.GetGoalResponse(goal=goals_pb2.Goal(id=request.goal_id, title="Bench goal"))


def _serve_fixed(port: int) -> None:
    asyncio.run(_fixed_server(port))


async def _fixed_server(port: int) -> None:
    server = grpc.aio.server()
    goals_service_pb2_grpc.add_GoalsServiceServicer_to_server(_FixedGoals(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # Envoy's health checks
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@contextlib.contextmanager
def bare_edge(root: Path) -> Iterator[tuple[str, str]]:
    """(bare upstream, an Envoy of the platform's configuration in front of it) addresses."""
    upstream_port, public_port, admin_port = embedded.free_port(), embedded.free_port(), embedded.free_port()
    upstream = multiprocessing.Process(target=_serve_fixed, args=(upstream_port,), daemon=True)
    upstream.start()
    config = EdgeConfig(
        public_port=public_port,
        admin_port=admin_port,
        upstreams={name: [("127.0.0.1", upstream_port)] for name in SERVICES},
    )
    envoy = embedded.envoy(write(config, root / "envoy.yaml"), admin_port, root / "envoy.log", base_id=admin_port)
    envoy.start()
    try:
        address = f"127.0.0.1:{public_port}"
        deadline = time.monotonic() + 30
        while httpx.get(f"http://{address}/v1/goals/{BARE_GOAL}", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the bare upstream never became healthy behind Envoy")
            time.sleep(0.2)  # Envoy's first health check of the new cluster
        yield f"127.0.0.1:{upstream_port}", address
    finally:
        envoy.stop()
        upstream.kill()


def latencies(direct: str, envoy: str, goal_id: str, seconds: float) -> tuple[float, float, float]:
    """p50 ms of one call at a time: gRPC direct, the same gRPC client through Envoy, JSON through Envoy."""
    measure("grpc", direct, goal_id, 4, 1.0)  # warm every path (connections, caches)
    measure("grpc", envoy, goal_id, 4, 1.0)
    measure("json", envoy, goal_id, 4, 1.0)
    _, grpc_p50 = measure("grpc", direct, goal_id, 1, seconds)
    _, grpc_envoy_p50 = measure("grpc", envoy, goal_id, 1, seconds)
    _, json_p50 = measure("json", envoy, goal_id, 1, seconds)
    return grpc_p50, grpc_envoy_p50, json_p50


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
        grpc_p50, grpc_envoy_p50, json_p50 = latencies(goals, envoy, goal_id, seconds)
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
    with tempfile.TemporaryDirectory(prefix="gofund-bench-edge-bare-") as root, bare_edge(Path(root)) as (bare, edge):
        grpc_p50, grpc_envoy_p50, json_p50 = latencies(bare, edge, BARE_GOAL, seconds)
        line("bare_upstream_grpc_direct_p50_ms", f"{grpc_p50:.3f}", "-")
        line("bare_upstream_grpc_envoy_minus_grpc_direct_p50_ms", f"{grpc_envoy_p50 - grpc_p50:.3f}", "-")
        line("bare_upstream_json_envoy_minus_grpc_direct_p50_ms", f"{json_p50 - grpc_p50:.3f}", "-")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    main(parser.parse_args().quick)
