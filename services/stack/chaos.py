"""`make chaos`: the whole platform under crashes and real client traffic, then the audit.

A Stack starts on free ports in a temporary data directory (durable PostgreSQL),
with the simulator, the janitor and the scheduler sped up so the platform settles
in seconds. Owners open goals, payers contribute through Envoy and pay, decline
or abandon at the simulator's checkout, call `:verify`, have webhooks redelivered
or lost; funded goals are cancelled (refunds) or proven, voted on, released and
paid out. Meanwhile a killer SIGKILLs goals, payments, the ledger, the Paystack
simulator, PostgreSQL or the Mongo-wire server every 10-30 s and restarts it.
Clients behave as real ones: they retry 5xx, timeouts and refused connections
with the same idempotency key, and never change what a key means.

When the time is up everything is brought back up and `gofund reconcile` is
polled, changing nothing, until it finds no drift or the settle timeout passes;
the report lists kills, final statuses and the last reconciliation. Exit 0 only
if it ended clean.

Not part of `make test`: it takes minutes, its schedule is random (seeded, but
the interleavings are not reproducible), and it is a search for bugs rather
than a check of one behaviour. A drift it finds becomes a test of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
from pymongo import MongoClient
from pymongo.database import Database

from services.stack import embedded
from services.stack.envoy_config import SERVICES
from services.stack.stack import Stack, StackError, free_port_environment

# Settings that make the platform settle in seconds instead of minutes.
FAST = {
    "GOFUND_AUTH_RATE_PER_MINUTE": "100000",  # the run registers and logs in everyone at once
    "GOFUND_REGISTRATIONS_PER_CLIENT": "1000000",  # ... all from 127.0.0.1
    "GOFUND_PAYSTACK_SIM_SETTLE_MS": "1000",
    "GOFUND_PAYSTACK_SIM_RETRY_BASE_MS": "300",
    "GOFUND_WEBHOOK_RETRY_BASE_MS": "200",
    "GOFUND_JANITOR_FIRST_CHECK_MS": "3000",
    "GOFUND_JANITOR_INTERVAL_MS": "1000",
    "GOFUND_SCHEDULER_INTERVAL_MS": "200",
}
# What the killer picks from, by the name of its process in the Stack.
KILLABLE = {
    "goals": "goals service",
    "payments": "payments service",
    "ledger": "ledger service",
    "paystack-sim": "paystack simulator",
    "postgres": "postgres",
    "mongodb": "mongodb",
}
OWNER_DONE = frozenset({"WITHDRAWN", "REFUNDED", "EXPIRED", "RELEASED", "CANCELLED", "REFUNDING"})
CURRENCIES = ("NGN", "NGN", "NGN", "GHS")
TARGETS = (20_000, 50_000, 80_000, 150_000)
REQUEST_TIMEOUT_S = 20.0  # above Envoy's 15 s route deadline, so Envoy answers first
GIVE_UP_S = 120.0  # a client retrying longer than this has a bug to report, not an outage
DRAIN_S = 120.0
PASSWORD = "chaos password 123"  # noqa: S105 - throwaway users of a throwaway stack


def log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)


# -- what the clients saw ----------------------------------------------------------------------
@dataclass
class Stats:
    actions: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)  # "op: cause"
    refused: Counter[str] = field(default_factory=Counter)  # "op: status reason"
    gave_up: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)


@dataclass
class Kill:
    component: str
    at_s: float
    down_s: float = 0.0
    error: str = ""


def reason_of(response: httpx.Response) -> str:
    """The ErrorInfo reason of a GoFund error, or the simulator's message."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:60]
    if not isinstance(body, dict):
        return str(body)[:60]
    for detail in body.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo"):
            return str(detail.get("reason"))
    return str(body.get("message") or body.get("code"))[:60]


class Client:
    """HTTP as a careful client does it: a failure that may not have reached the server
    (5xx, 429, timeout, refused connection) is retried with the same request, so the
    same idempotency key; any other answer is final."""

    def __init__(self, http: httpx.AsyncClient, stats: Stats, rng: random.Random) -> None:
        self.http, self.stats, self.rng = http, stats, rng

    async def call(
        self, op: str, method: str, url: str, token: str = "", body: Mapping[str, Any] | None = None
    ) -> httpx.Response | None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        give_up_at = time.monotonic() + GIVE_UP_S
        delay_s = 0.2
        while True:
            try:
                response = await self.http.request(method, url, headers=headers, json=body)
            except httpx.TransportError as exc:
                self.stats.retried[f"{op}: {type(exc).__name__}"] += 1
            else:
                if response.status_code < 500 and response.status_code != 429:
                    if response.status_code != 200:
                        self.stats.refused[f"{op}: {response.status_code} {reason_of(response)}"] += 1
                    return response
                self.stats.retried[f"{op}: {response.status_code} {reason_of(response)}"] += 1
            if time.monotonic() + delay_s > give_up_at:
                self.stats.gave_up[op] += 1
                return None
            await asyncio.sleep(delay_s * (0.5 + self.rng.random()))
            delay_s = min(delay_s * 2, 3.0)


# -- the people -----------------------------------------------------------------------------------
@dataclass(eq=False)
class Actor:
    index: int
    name: str
    client: Client
    rng: random.Random
    user_id: str = ""
    token: str = ""


@dataclass(eq=False)
class Goal:
    id: str
    owner: Actor
    currency: str
    target: int
    fate: str  # "release", "cancel-open" or "cancel-funded"
    cancel_after_s: float
    created_at: float = field(default_factory=time.monotonic)
    status: str = "OPEN"
    proof_id: str = ""
    proofs: int = 0
    backers: set[int] = field(default_factory=set)  # actors whose checkout succeeded
    voted: set[tuple[int, str]] = field(default_factory=set)
    vote_tries: Counter[tuple[int, str]] = field(default_factory=Counter)


class World:
    def __init__(self, stack: Stack, stats: Stats) -> None:
        self.edge = f"http://127.0.0.1:{stack.settings.envoy_port}"
        self.simulator = stack.settings.paystack_url
        self.stats = stats
        self.goals: dict[str, Goal] = {}
        # Chosen once per owner and currency before the first attempt, as a client keeps it.
        self.recipient_keys: dict[tuple[int, str], str] = {}
        self.recipients: set[tuple[int, str]] = set()
        self.bank_codes: dict[str, str] = {}  # by currency: a bank from GET /v1/banks, as a bank picker shows

    async def register(self, actor: Actor, run_id: str) -> None:
        name = f"{actor.name}_{run_id}"
        user = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
        created = await actor.client.call("register", "POST", f"{self.edge}/v1/users", body=user)
        # 409: a retry of a registration whose answer was lost; the account is ours.
        if created is None or created.status_code not in (200, 409):
            raise RuntimeError(f"cannot register {name}: {created.text if created else 'gave up'}")
        login = {"login": name, "password": PASSWORD}
        session = await actor.client.call("login", "POST", f"{self.edge}/v1/sessions", body=login)
        if session is None or session.status_code != 200:
            raise RuntimeError(f"cannot log in {name}: {session.text if session else 'gave up'}")
        actor.token, actor.user_id = session.json()["token"], session.json()["user"]["id"]

    # -- owners --------------------------------------------------------------------------------
    async def owner_step(self, owner: Actor) -> None:
        mine = [g for g in self.goals.values() if g.owner is owner and g.status not in OWNER_DONE]
        if sum(g.status == "OPEN" for g in mine) < 2:
            await self.create_goal(owner)
        for goal in mine:
            await self.tend(owner, goal)

    async def create_goal(self, owner: Actor) -> None:
        rng = owner.rng
        deadline = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
        currency, target = rng.choice(CURRENCIES), rng.choice(TARGETS)
        body = {
            "title": f"Chaos goal of {owner.name}",
            "description": "Raised while the platform is being crashed on purpose.",
            "target_amount": str(target),
            "currency": currency,
            "deadline": deadline,
            "request_id": uuid.uuid4().hex,
        }
        response = await owner.client.call("create goal", "POST", f"{self.edge}/v1/goals", owner.token, body)
        if response is None or response.status_code != 200:
            return
        fate = rng.choices(["release", "cancel-open", "cancel-funded"], weights=[65, 15, 20])[0]
        found = response.json()["goal"]
        self.goals[found["id"]] = Goal(found["id"], owner, currency, target, fate, rng.uniform(20, 60))
        self.stats.actions[f"goal created ({fate})"] += 1

    async def tend(self, owner: Actor, goal: Goal) -> None:
        response = await owner.client.call("get goal", "GET", f"{self.edge}/v1/goals/{goal.id}")
        if response is None or response.status_code != 200:
            return
        goal.status = str(response.json()["goal"]["status"]).removeprefix("GOAL_STATUS_")
        if goal.status == "OPEN" and goal.fate == "cancel-open":
            if time.monotonic() - goal.created_at > goal.cancel_after_s:
                await self.cancel(owner, goal)
        elif goal.status == "FUNDED" and goal.fate == "cancel-funded":
            await self.cancel(owner, goal)
        elif goal.status == "FUNDED" and not goal.proof_id:
            await self.submit_proof(owner, goal)
        elif goal.status == "FUNDED":
            proof = await owner.client.call("get proof", "GET", f"{self.edge}/v1/proofs/{goal.proof_id}")
            if proof is not None and proof.status_code == 200:
                status = str(proof.json()["proof"]["status"]).removeprefix("PROOF_STATUS_")
                if status == "REJECTED" and goal.proofs < 3:
                    goal.proof_id = ""  # the owner tries again (a third rejection refunds everyone)

    async def cancel(self, owner: Actor, goal: Goal) -> None:
        url = f"{self.edge}/v1/goals/{goal.id}:cancel"
        response = await owner.client.call("cancel goal", "POST", url, owner.token, {"reason": "Plans changed."})
        if response is not None and response.status_code == 200:
            goal.status = str(response.json()["goal"]["status"]).removeprefix("GOAL_STATUS_")
            self.stats.actions[f"goal cancelled while {'open' if goal.fate == 'cancel-open' else 'funded'}"] += 1

    async def submit_proof(self, owner: Actor, goal: Goal) -> None:
        # The payout needs somewhere to go: the owner registers an account first.
        if (owner.index, goal.currency) not in self.recipients:
            key = self.recipient_keys.setdefault((owner.index, goal.currency), uuid.uuid4().hex)
            if goal.currency not in self.bank_codes:
                url = f"{self.edge}/v1/banks?currency={goal.currency}"
                listed = await owner.client.call("list banks", "GET", url)
                if listed is None or listed.status_code != 200:
                    return
                self.bank_codes[goal.currency] = str(listed.json()["banks"][0]["code"])
            body = {
                "account_number": "0123456789",
                "bank_code": self.bank_codes[goal.currency],
                "name": f"Owner {owner.name}",
                "currency": goal.currency,
                "idempotency_key": key,
            }
            url = f"{self.edge}/v1/payout-recipients"
            response = await owner.client.call("payout recipient", "POST", url, owner.token, body)
            if response is None or response.status_code != 200:
                return
            self.recipients.add((owner.index, goal.currency))
            self.stats.actions["payout recipient registered"] += 1
        proof: dict[str, Any] = {
            "title": f"Proof {goal.proofs + 1}",
            "description": "Receipts and photos.",
            "media_urls": ["https://example.org/receipt.jpg"],
            # One key per proof the owner means to submit, kept across retries.
            "request_id": f"{goal.id}:proof:{goal.proofs + 1}",
        }
        response = await owner.client.call(
            "create proof", "POST", f"{self.edge}/v1/goals/{goal.id}/proofs", owner.token, proof
        )
        if response is not None and response.status_code == 200:
            goal.proof_id, goal.proofs = response.json()["proof"]["id"], goal.proofs + 1
            self.stats.actions["proof submitted"] += 1

    # -- payers --------------------------------------------------------------------------------
    async def payer_step(self, payer: Actor) -> None:
        for goal in list(self.goals.values()):
            ballot = (payer.index, goal.proof_id)
            if goal.proof_id and goal.status == "FUNDED" and payer.index in goal.backers and ballot not in goal.voted:
                await self.vote(payer, goal, ballot)
                return
        open_goals = [g for g in self.goals.values() if g.status == "OPEN"]
        if open_goals:
            await self.contribute(payer, payer.rng.choice(open_goals))

    async def vote(self, payer: Actor, goal: Goal, ballot: tuple[int, str]) -> None:
        approve = payer.rng.random() < 0.8
        url = f"{self.edge}/v1/proofs/{goal.proof_id}/votes"
        response = await payer.client.call("vote", "POST", url, payer.token, {"is_approved": approve})
        if response is None:
            return
        goal.vote_tries[ballot] += 1
        # 409: our earlier attempt counted; 400: the proof is decided. 403: our payment
        # is not confirmed yet (a lost webhook the janitor has still to find): try later.
        if response.status_code in (200, 409, 400) or goal.vote_tries[ballot] >= 5:
            goal.voted.add(ballot)
        if response.status_code == 200:
            self.stats.actions["vote to approve" if approve else "vote to reject"] += 1

    async def contribute(self, payer: Actor, goal: Goal) -> None:
        rng, client = payer.rng, payer.client
        amount = max(100, goal.target // rng.randint(2, 6) // 100 * 100)
        body = {"amount": str(amount), "currency": goal.currency, "idempotency_key": uuid.uuid4().hex}
        url = f"{self.edge}/v1/goals/{goal.id}/contributions"
        response = await client.call("contribute", "POST", url, payer.token, body)
        if response is None or response.status_code != 200:
            return
        started = response.json()
        self.stats.actions["contribution started"] += 1
        checkout, reference = str(started["authorization_url"]), str(started["payment_reference"])
        payment_id = str(started["contribution"]["payment_id"])
        if rng.random() < 0.08:
            await self.replay(payer, url, body, started)
        behaviour = rng.choices(["pay", "decline", "abandon"], weights=[72, 14, 14])[0]
        if behaviour == "abandon":
            self.stats.actions["checkout abandoned"] += 1
            return
        if behaviour == "pay" and rng.random() < 0.12:
            drop = await client.call(
                "drop webhook", "POST", f"{self.simulator}/_sim/webhooks/drop", body={"reference": reference}
            )
            if drop is not None and drop.status_code == 200:
                self.stats.actions["webhook to be lost"] += 1
        outcome = "success" if behaviour == "pay" else "failed"
        paid = await client.call("checkout", "POST", f"{checkout}/pay", body={"outcome": outcome})
        if paid is None:
            return
        # 400 "already completed": an earlier attempt whose answer was lost went through.
        if paid.status_code == 200 or "already been completed" in paid.text:
            self.stats.actions["paid" if behaviour == "pay" else "declined"] += 1
            if behaviour == "pay":
                goal.backers.add(payer.index)
        if rng.random() < (0.4 if behaviour == "pay" else 0.6):
            verify_url = f"{self.edge}/v1/payments/{payment_id}:verify"
            verified = await client.call("verify", "POST", verify_url, payer.token, {})
            if verified is not None and verified.status_code == 200:
                self.stats.actions["verified"] += 1
        if behaviour == "pay" and rng.random() < 0.12:
            await asyncio.sleep(rng.uniform(0.5, 3))
            url = f"{self.simulator}/_sim/webhooks/redeliver"
            again = await client.call("redeliver webhook", "POST", url, body={"reference": reference})
            if again is not None and again.status_code == 200:
                self.stats.actions["webhook redelivered"] += 1

    async def replay(self, payer: Actor, url: str, body: Mapping[str, Any], first: Mapping[str, Any]) -> None:
        """The same request again (a double submit): the same contribution must come back."""
        again = await payer.client.call("replay contribution", "POST", url, payer.token, body)
        if again is None or again.status_code != 200:
            return
        self.stats.actions["contribution replayed"] += 1
        second = again.json()
        if second["contribution"]["id"] != first["contribution"]["id"]:
            self.stats.anomalies.append(
                f"replay of key {body['idempotency_key']} returned contribution {second['contribution']['id']}, "
                f"first {first['contribution']['id']}"
            )


async def keep_acting(world: World, actor: Actor, owner: bool, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        try:
            await (world.owner_step(actor) if owner else world.payer_step(actor))
        except Exception:  # a bug in this script: reported, and the actor carries on
            world.stats.script_errors.append(traceback.format_exc())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), actor.rng.uniform(0.5, 2.0 if owner else 2.5))


# -- the killer -----------------------------------------------------------------------------------
def process_of(stack: Stack, component: str) -> embedded.ManagedProcess:
    if component in SERVICES:
        return stack.services[component]
    return next(p for p in reversed(stack.processes) if p.name == KILLABLE[component])


def process_tree(pid: int) -> list[int]:
    """The process and its descendants: PostgreSQL's backends are in process groups of
    their own, so killing the postmaster's group would leave them holding its memory."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command name is in parentheses and may hold spaces: split after it.
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        tree += sorted(frontier)
    return tree


def sigkill(process: embedded.ManagedProcess) -> None:
    child = process.process
    if child is None or child.poll() is not None:
        return
    for pid in process_tree(child.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    child.wait()


def restart(stack: Stack, component: str, timeout_s: float = 120.0) -> None:
    """Start the component again; a port or a shared-memory segment may take a moment to
    be let go of, so a failed start is tried again."""
    if component not in SERVICES:
        try:
            process_of(stack, component).start_again(timeout_s)
        except embedded.EmbeddedError as exc:
            raise StackError(f"{component} does not start again: {exc}") from None
        return
    give_up_at = time.monotonic() + timeout_s
    while True:
        try:
            stack.start_service(component)
            break
        except (StackError, embedded.EmbeddedError) as exc:
            if time.monotonic() > give_up_at:
                raise StackError(f"{component} does not start again: {exc}") from None
            time.sleep(1.0)
    stack.wait_edge_healthy(timeout_s=60)


def ensure_up(stack: Stack, started: float) -> None:
    """Every process running, and Envoy routing to every service."""
    for name in SERVICES:
        if not stack.services[name].running():
            log(started, f"{name} is down; starting it")
            stack.start_service(name)
    for process in {p.name: p for p in stack.processes if not p.name.endswith(" service")}.values():
        if not process.running():
            log(started, f"{process.name} is down; starting it")
            process.start()
    stack.wait_edge_healthy(timeout_s=60)


async def killer(stack: Stack, rng: random.Random, until: float, kills: list[Kill], started: float) -> None:
    # Shuffled rounds over the components, so a short run still crashes each of them.
    order: list[str] = []
    while True:
        pause_s = rng.uniform(10, 30)
        if time.monotonic() + pause_s >= until:
            return
        await asyncio.sleep(pause_s)
        if not order:
            order = rng.sample(list(KILLABLE), len(KILLABLE))
        component = order.pop()
        kill = Kill(component, time.monotonic() - started)
        kills.append(kill)
        log(started, f"SIGKILL {component}")
        await asyncio.to_thread(sigkill, process_of(stack, component))
        await asyncio.sleep(rng.uniform(1, 5))
        try:
            await asyncio.to_thread(restart, stack, component)
        except StackError as exc:
            kill.error = str(exc)
            log(started, f"restarting {component} failed: {exc}")
        kill.down_s = time.monotonic() - started - kill.at_s
        log(started, f"{component} back after {kill.down_s:.1f}s")


async def progress(world: World, kills: list[Kill], started: float, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 30)
        a = world.stats.actions
        log(
            started,
            f"{len(world.goals)} goals, {a['contribution started']} contributions, {a['paid']} paid, "
            f"{a['declined']} declined, {sum(world.stats.retried.values())} retried calls, {len(kills)} kills",
        )


async def chaos(stack: Stack, args: argparse.Namespace, seed: int, started: float) -> tuple[World, list[Kill]]:
    stats = Stats()
    world = World(stack, stats)
    kills: list[Kill] = []
    run_id = uuid.uuid4().hex[:6]
    owners_count = max(2, args.payers // 4)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        actors = [
            Actor(i, f"{'owner' if i < owners_count else 'payer'}{i}", Client(http, stats, r), r)
            for i in range(owners_count + args.payers)
            for r in [random.Random(f"{seed}:{i}")]
        ]
        await asyncio.gather(*(world.register(actor, run_id) for actor in actors))
        log(started, f"{owners_count} owners and {args.payers} payers registered; chaos for {args.duration_s}s")
        until = time.monotonic() + args.duration_s
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(keep_acting(world, a, a.index < owners_count, stopping)) for a in actors]
        reporter = asyncio.create_task(progress(world, kills, started, stopping))
        try:
            await killer(stack, random.Random(seed), until, kills, started)
            await asyncio.sleep(max(0.0, until - time.monotonic()))
        finally:
            stopping.set()
        log(started, "time is up: clients finish what they are doing; checking every process is up")
        await asyncio.to_thread(ensure_up, stack, started)
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(reporter, *pending, return_exceptions=True)
        if pending:
            log(started, f"{len(pending)} clients were still busy after {DRAIN_S:.0f}s and were stopped")
    return world, kills


# -- settling and the report ---------------------------------------------------------------------
@dataclass
class Reconciliation:
    clean: bool
    output: str
    runs: int
    took_s: float


def reconcile(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(embedded.BIN / "gofund"), "reconcile"],
        check=False,
        env={**os.environ, **stack.overrides},
        capture_output=True,
        text=True,
        timeout=330,
    )


def settle(stack: Stack, timeout_s: float, started: float) -> Reconciliation:
    """Poll reconciliation, changing nothing, until it is clean or time runs out."""
    began = time.monotonic()
    runs = 0
    while True:
        runs += 1
        report = reconcile(stack)
        output = report.stdout + report.stderr
        took_s = time.monotonic() - began
        if report.returncode == 0:
            return Reconciliation(True, output, runs, took_s)
        if took_s >= timeout_s:
            return Reconciliation(False, output, runs, took_s)
        last = (output.strip().splitlines() or ["(no output)"])[-1]
        if runs == 1 or runs % 10 == 0:
            log(started, f"settling: {last}")
        time.sleep(2.0)


def count_by(rows: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(rows.items(), key=lambda kv: -kv[1])) or "none"


def goals_by_status(stack: Stack) -> Counter[str]:
    found: Counter[str] = Counter()
    token = ""
    while True:
        params = {"page_size": "500", **({"page_token": token} if token else {})}
        page = httpx.get(f"http://127.0.0.1:{stack.settings.envoy_port}/v1/goals", params=params, timeout=30).json()
        found.update(str(g["status"]).removeprefix("GOAL_STATUS_") for g in page["goals"])
        token = page.get("next_page_token", "")
        if not token:
            return found


def store_figures(stack: Stack) -> dict[str, str]:
    s = stack.settings
    figures: dict[str, str] = {}
    client: MongoClient[dict[str, Any]]
    with MongoClient(s.mongodb_url, serverSelectionTimeoutMS=10_000) as client:
        db: Database[dict[str, Any]] = client[s.mongodb_database]
        for collection in ("payments", "webhook_events", "payouts"):
            statuses = Counter(str(d.get("status")) for d in db[collection].find({}, {"status": 1}))
            figures[f"{collection.replace('_', ' ')} by status"] = count_by(statuses)
        paid = {
            str(d["contributionId"]): str(d["status"]) for d in db.payments.find({}, {"contributionId": 1, "status": 1})
        }
    url = f"postgresql://postgres@127.0.0.1:{s.postgres_port}"
    with psycopg.connect(f"{url}/goals") as goals:
        rows = goals.execute("SELECT id, status FROM contributions").fetchall()
        figures["contributions by status"] = count_by(Counter(str(status) for _, status in rows))
        # Reconciliation looks at money only: a payment that was settled while its
        # contribution still waits (goals never told) shows here and nowhere else.
        stuck = [
            f"{contribution_id} (payment {paid[str(contribution_id)]})"
            for contribution_id, status in rows
            if status == "PENDING" and paid.get(str(contribution_id), "PENDING") != "PENDING"
        ]
        figures["contributions PENDING whose payment is settled"] = f"{len(stuck)} " + " ".join(stuck[:10])
    with psycopg.connect(f"{url}/ledger") as ledger:
        row = ledger.execute("SELECT count(*) FROM ledger_transactions").fetchone()
        figures["ledger transactions"] = str(row[0] if row else 0)
    figures["goals by status"] = count_by(goals_by_status(stack))
    return figures


def print_report(
    stack: Stack, world: World, kills: list[Kill], result: Reconciliation, *, args: argparse.Namespace, seed: int
) -> None:
    stats = world.stats
    per_component = Counter(k.component for k in kills)
    downs = [k.down_s for k in kills]
    lines = [
        "",
        "== chaos report ==",
        f"seed {seed}, {args.payers} payers, {args.duration_s}s of chaos",
        f"kills survived: {len(kills)} ({count_by(per_component)})"
        + (f"; down {min(downs):.1f}-{max(downs):.1f}s each" if downs else ""),
        *(f"  restart failed: {k.component} at {k.at_s:.0f}s: {k.error}" for k in kills if k.error),
        f"client actions: {count_by(stats.actions)}",
        f"calls retried: {sum(stats.retried.values())} ({count_by(Counter(dict(stats.retried.most_common(8))))})",
        f"answers refused (4xx): {count_by(stats.refused)}",
        f"clients that gave up: {count_by(stats.gave_up)}",
    ]
    try:
        lines += [f"{name}: {value}" for name, value in store_figures(stack).items()]
    except Exception as exc:  # the report goes on with what the clients saw
        lines.append(f"store figures unavailable: {type(exc).__name__}: {exc}")
    lines += [
        f"settling: {result.took_s:.1f}s, {result.runs} reconciliation run(s), "
        + ("clean" if result.clean else "NOT clean"),
        "final reconciliation:",
        *(f"  {line}" for line in result.output.strip().splitlines()),
    ]
    if stats.anomalies:
        lines += ["anomalies clients saw:", *(f"  {a}" for a in stats.anomalies)]
    if stats.script_errors:
        lines += [f"errors in this script ({len(stats.script_errors)}), the first:", stats.script_errors[0]]
    print("\n".join(lines), flush=True)


# -- the run --------------------------------------------------------------------------------------
def environment(data_dir: Path) -> dict[str, str]:
    """Free ports, a private data directory and the fast settings."""
    return {**free_port_environment(data_dir), **FAST}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stack.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=int, default=240, help="how long the killer runs (default 240)")
    parser.add_argument("--payers", type=int, default=16, help="paying users (owners are a quarter of that, 2+)")
    parser.add_argument("--seed", type=int, default=None, help="seeds the kill schedule and the clients' choices")
    parser.add_argument("--settle-timeout-s", type=int, default=300, help="how long reconciliation may take to clean")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directory even after a clean run")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    data_dir = Path(tempfile.mkdtemp(prefix="gofund-chaos-"))
    started = time.monotonic()
    clean = False
    stack = Stack(environment(data_dir), durable=True)
    try:
        log(started, f"seed {seed}; starting the platform in {data_dir}")
        stack.start()
        world, kills = asyncio.run(chaos(stack, args, seed, started))
        log(started, "settling: polling `gofund reconcile`")
        result = settle(stack, args.settle_timeout_s, started)
        print_report(stack, world, kills, result, args=args, seed=seed)
        clean = result.clean and not world.stats.anomalies
    except KeyboardInterrupt:
        log(started, "interrupted")
    except StackError as exc:
        log(started, f"the platform failed: {exc}")
    finally:
        log(started, "stopping the platform")
        stack.stop()
        if clean and not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            log(started, f"data and logs kept in {data_dir} (logs/*.log)")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
