"""The Paystack simulator under load: checkout paid → webhook delivered. Asserts nothing.

Runs the simulator in its own process (as the stack does) with its webhooks
going to a receiver in this one that answers 200 and notes when each
`charge.success` arrived. The state is first filled with `--backlog` paid
transactions (a long-running dev stack's worth); then, side by side in one run,
for the journal the simulator keeps (one appended line per change) and for the
whole-state rewrite per change it used to do (the same class, compacting on
every save):

- delivery_idle_p50_ms: one pay at a time, POST pay → event received;
- delivery_loaded_p50_ms / _p99_ms: pays fired at RATE per second (open loop:
  each on its schedule, whether or not the last one was answered);
- loaded - idle for each, and whole rewrite ÷ journal under load.

  make bench                         # backlog 2000, 600 pays at 100/s
  make bench BENCH_FLAGS=--quick     # backlog 500, 200 pays at 100/s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from aiohttp import web
from benchkit import line

from services.common.config import Settings
from services.paystack_sim import main as simulator_main
from services.paystack_sim.state import Record, State
from services.stack import embedded

RATE_PER_S = 100
SECRET_KEY = Settings.model_fields["paystack_secret_key"].default


class WholeRewrite(State):
    """The cost model the simulator had: every change rewrites (and fsyncs) the whole state."""

    def save(self, *changed: Record) -> None:
        super().save(*changed)
        self.compact()


KINDS: dict[str, type[State]] = {"journal": State, "whole_rewrite": WholeRewrite}


def serve(kind: str) -> None:
    """The child process: the simulator with the given State class, until SIGTERM."""
    # The simulator builds its State itself; the comparison swaps the class for this process.
    with mock.patch.object(simulator_main, "State", KINDS[kind]):
        simulator_main.run(Settings())


class Receiver:
    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def expect(self, reference: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[reference] = future
        return future

    async def _receive(self, request: web.Request) -> web.Response:
        at = time.perf_counter()
        payload: dict[str, Any] = json.loads(await request.read())
        future = self._waiters.pop(str(payload["data"].get("reference")), None)
        if future is not None and not future.done():
            future.set_result(at)
        return web.Response(status=200)


class Simulator:
    """A simulator process of one kind, with clients for its API and its checkout."""

    def __init__(self, root: Path, kind: str, receiver: Receiver) -> None:
        port = embedded.free_port()
        environment = {
            **os.environ,
            "GOFUND_DATA_DIR": root,
            "GOFUND_PAYSTACK_SIM_PORT": str(port),
            "GOFUND_WEBHOOK_URL": receiver.url,
            "GOFUND_PAYSTACK_SIM_SETTLE_MS": "0",
            "GOFUND_PAYSTACK_SIM_RETRY_BASE_MS": "3600000",
            "GOFUND_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, __file__, "--serve", kind]
        self._process = subprocess.Popen(command, env={k: str(v) for k, v in environment.items()})
        base_url = f"http://127.0.0.1:{port}"
        self.api = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=300)
        self.browser = httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(max_connections=200), timeout=300)
        self._receiver = receiver
        self._count = 0

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.browser.get("/checkout/none")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.api.aclose()
        await self.browser.aclose()
        self._process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self._process.wait, 60)

    async def started(self) -> dict[str, Any]:
        self._count += 1
        body = {"email": f"payer{self._count % 50}@example.com", "amount": 500_000, "currency": "NGN"}
        response = await self.api.post("/transaction/initialize", json=body)
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    async def pay(self, started: dict[str, Any]) -> float:
        """Milliseconds from POST pay to its charge.success at the receiver."""
        arrived = self._receiver.expect(started["reference"])
        sent = time.perf_counter()
        response = await self.browser.post(f"/checkout/{started['access_code']}/pay", json={"outcome": "success"})
        response.raise_for_status()
        return (await asyncio.wait_for(arrived, 300) - sent) * 1000


async def backlog(root: Path, receiver: Receiver, count: int) -> None:
    """Fill the state with `count` paid transactions and their delivered events."""
    simulator = Simulator(root, "journal", receiver)
    await simulator.ready()

    async def one() -> None:
        await simulator.pay(await simulator.started())

    for _ in range(count // 10):
        await asyncio.gather(*(one() for _ in range(10)))
    await simulator.stop()


async def measure(root: Path, receiver: Receiver, kind: str, idle_count: int, loaded_count: int) -> dict[str, float]:
    simulator = Simulator(root, kind, receiver)
    await simulator.ready()
    try:
        idle = [await simulator.pay(await simulator.started()) for _ in range(idle_count)]
        started = [await simulator.started() for _ in range(loaded_count)]
        begin = time.perf_counter()

        async def on_schedule(index: int, transaction: dict[str, Any]) -> float:
            await asyncio.sleep(max(0.0, begin + index / RATE_PER_S - time.perf_counter()))
            return await simulator.pay(transaction)

        loaded = await asyncio.gather(*(on_schedule(i, t) for i, t in enumerate(started)))
    finally:
        await simulator.stop()
    return {
        "idle_p50": statistics.median(idle),
        "loaded_p50": statistics.median(loaded),
        "loaded_p99": statistics.quantiles(loaded, n=100)[98],
    }


async def main(quick: bool) -> None:
    backlog_count, idle_count, loaded_count = (500, 30, 200) if quick else (2000, 60, 600)
    receiver = Receiver()
    await receiver.start()
    try:
        with tempfile.TemporaryDirectory(prefix="gofund-bench-sim-") as directory:
            root = Path(directory)
            await backlog(root, receiver, backlog_count)
            size_kib = (root / simulator_main.STATE_FILE).stat().st_size / 1024
            print(f"state: {backlog_count} paid transactions, {size_kib:.0f} KiB snapshot", flush=True)
            results = {kind: await measure(root, receiver, kind, idle_count, loaded_count) for kind in KINDS}
    finally:
        await receiver.stop()
    for kind, figures in results.items():
        line(f"{kind}_delivery_idle_p50_ms", f"{figures['idle_p50']:.2f}", "-")
        line(f"{kind}_delivery_loaded_p50_ms", f"{figures['loaded_p50']:.2f}", f"{RATE_PER_S} pays/s")
        line(f"{kind}_delivery_loaded_p99_ms", f"{figures['loaded_p99']:.2f}", f"{RATE_PER_S} pays/s")
        line(f"{kind}_loaded_minus_idle_p50_ms", f"{figures['loaded_p50'] - figures['idle_p50']:+.2f}", "a few ms")
    journal, rewrite = results["journal"], results["whole_rewrite"]
    line("whole_rewrite_vs_journal_loaded_p50", f"{rewrite['loaded_p50'] / journal['loaded_p50']:.1f}x", "-")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller backlog and fewer pays")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.serve)
    else:
        asyncio.run(main(arguments.quick))
