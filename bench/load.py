"""`make load`: a viral goal, driven through Envoy against a running `make up`.

One goal; `--watchers` people keep its page open (`GET /v1/goals/{id}:watch`,
NDJSON through Envoy); contributions are made and paid at the Paystack
simulator's checkout at `--rate` per second, so each one lands the way a real
one does: the simulator's signed `charge.success` webhook through Envoy to
payments, which verifies it, captures it in the ledger and tells goals, which
tells every watcher. Every second it prints contributions paid and seen
captured per second, the p50 and p99 of pay → seen by the watchers, errors and
watchers connected; at the end it writes a PNG of throughput and p99 over time.

  make up                                      # in another terminal
  make load                                    # 200 watchers, 10 contributions/s, 30 s
  make load LOAD_FLAGS="--watchers 1000 --rate 40 --duration-s 60 --plot viral.png"

"Seen" is the first watcher's view: the k-th contribution paid counts as seen
when a raised amount covering k contributions reaches it (captures may land out
of order; the k-th paid and the k-th captured are paired). The other watchers
are load, and each one's last raised amount is checked at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from benchkit import percentile

from services.common.config import Settings

AMOUNT = 100_00  # minor units per contribution
PASSWORD = "load test password 1"  # noqa: S105 - throwaway users on a development stack


@dataclass
class Run:
    paid_at: list[float] = field(default_factory=list)  # when each pay was acknowledged, in order
    seen_at: list[float] = field(default_factory=list)  # when the first watcher saw the k-th capture
    errors: int = 0
    connected: int = 0
    last_raised: dict[int, int] = field(default_factory=dict)  # watcher -> raised amount last seen


async def signed_in(http: aiohttp.ClientSession, edge: str) -> tuple[str, str]:
    name = "load" + uuid.uuid4().hex[:10]
    async with http.post(
        f"{edge}/v1/users", json={"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    ) as created:
        user = (await created.json())["user"]
    async with http.post(f"{edge}/v1/sessions", json={"login": name, "password": PASSWORD}) as session:
        return user["id"], (await session.json())["token"]


async def watch(http: aiohttp.ClientSession, edge: str, goal_id: str, index: int, run: Run) -> None:
    try:
        async with http.get(f"{edge}/v1/goals/{goal_id}:watch", timeout=aiohttp.ClientTimeout(total=None)) as stream:
            stream.raise_for_status()
            run.connected += 1
            async for line in stream.content:
                if not line.strip():
                    continue
                message = json.loads(line)
                message = message.get("result", message)
                raised = int(message.get("raised_amount", 0))
                run.last_raised[index] = raised
                if index == 0:
                    now = time.monotonic()
                    while len(run.seen_at) < raised // AMOUNT:
                        run.seen_at.append(now)
    except (TimeoutError, aiohttp.ClientError):
        run.errors += 1
    finally:
        run.connected -= 1


async def contribute(http: aiohttp.ClientSession, edge: str, goal_id: str, token: str, run: Run) -> None:
    try:
        async with http.post(
            f"{edge}/v1/goals/{goal_id}/contributions",
            json={"amount": str(AMOUNT), "currency": "NGN", "idempotency_key": uuid.uuid4().hex},
            headers={"authorization": f"Bearer {token}"},
        ) as started:
            started.raise_for_status()
            checkout = (await started.json())["authorization_url"]
        async with http.post(f"{checkout}/pay", json={"outcome": "success"}) as paid:
            paid.raise_for_status()
        run.paid_at.append(time.monotonic())
    except (TimeoutError, aiohttp.ClientError, KeyError):
        run.errors += 1


def window(run: Run, start: float, end: float) -> tuple[int, int, list[float]]:
    """Paid and seen in [start, end), and the pay → seen latencies of the ones seen then."""
    paid = sum(1 for t in run.paid_at if start <= t < end)
    seen = [k for k, t in enumerate(run.seen_at) if start <= t < end]
    latencies = [run.seen_at[k] - run.paid_at[k] for k in seen if k < len(run.paid_at)]
    return paid, len(seen), latencies


def plot(rows: list[tuple[float, int, int, float, float]], path: Path) -> None:
    import matplotlib  # here, not at the top: the backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r[0] for r in rows]
    figure, (rate, latency) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    rate.plot(seconds, [r[1] for r in rows], label="paid per s")
    rate.plot(seconds, [r[2] for r in rows], label="seen captured per s")
    rate.set_ylabel("contributions / s")
    rate.legend()
    latency.plot(seconds, [r[4] * 1000 for r in rows], label="p99", color="tab:red")
    latency.plot(seconds, [r[3] * 1000 for r in rows], label="p50", color="tab:green")
    latency.set_ylabel("pay → seen by watchers (ms)")
    latency.set_xlabel("seconds")
    latency.legend()
    figure.suptitle("GoFund viral goal through Envoy")
    figure.tight_layout()
    figure.savefig(path)


async def main(args: argparse.Namespace) -> None:
    edge = args.edge.rstrip("/")
    run = Run()
    connector = aiohttp.TCPConnector(limit=0)  # every watcher holds a connection of its own
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        _, owner = await signed_in(http, edge)
        _, payer = await signed_in(http, edge)
        deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
        async with http.post(
            f"{edge}/v1/goals",
            json={"title": "A viral goal", "target_amount": str(10**12), "currency": "NGN", "deadline": deadline},
            headers={"authorization": f"Bearer {owner}"},
        ) as created:
            goal_id = (await created.json())["goal"]["id"]
        watchers = [asyncio.create_task(watch(http, edge, goal_id, i, run)) for i in range(args.watchers)]
        while run.connected < args.watchers and run.errors < args.watchers:
            await asyncio.sleep(0.1)
        print(f"goal {goal_id}: {run.connected} watchers connected; paying {args.rate}/s for {args.duration_s} s")
        print(f"{'s':>4} {'paid/s':>7} {'seen/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'watchers':>8}")
        began = time.monotonic()
        payments: list[asyncio.Task[None]] = []
        rows: list[tuple[float, int, int, float, float]] = []
        second = 0
        while (now := time.monotonic()) < began + args.duration_s:
            due = int((now - began) * args.rate) + 1
            while len(payments) < due:
                payments.append(asyncio.create_task(contribute(http, edge, goal_id, payer, run)))
            if now >= began + second + 1:
                paid, seen, latencies = window(run, began + second, began + second + 1)
                p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
                rows.append((second + 1, paid, seen, p50, p99))
                print(
                    f"{second + 1:>4} {paid:>7} {seen:>7} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} "
                    f"{run.errors:>6} {run.connected:>8}",
                    flush=True,
                )
                second += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*payments)
        settle_until = time.monotonic() + 30
        while len(run.seen_at) < len(run.paid_at) and time.monotonic() < settle_until:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the other watchers' last messages
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    final = len(run.paid_at) * AMOUNT
    behind = sum(1 for raised in run.last_raised.values() if raised < final)
    latencies = [s - p for p, s in zip(run.paid_at, run.seen_at, strict=False)]
    print(
        f"paid {len(run.paid_at)}, seen captured {len(run.seen_at)}, errors {run.errors}; "
        f"pay → seen p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms; "
        f"watchers that ended below the final raised amount: {behind} of {len(run.last_raised)}"
    )
    if rows:
        print(f"mean throughput {statistics.mean(r[2] for r in rows):.1f} captured/s")
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(rows, Path(args.plot))
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_edge = f"http://127.0.0.1:{Settings.model_fields['envoy_port'].default}"
    parser.add_argument("--edge", default=default_edge, help=f"Envoy's address (default {default_edge})")
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="contributions paid per second")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--plot", default=".gofund/load.png", help="where to write the PNG (default .gofund/load.png)")
    asyncio.run(main(parser.parse_args()))
