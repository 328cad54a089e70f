"""Goals under test: identity + ledger + goals in this process on real PostgreSQL and real gRPC.

Goals gets an injected clock (`FakeClock`) so tests move time instead of
sleeping.

`platform` runs without payments: its address is a closed port, so every call
goals makes to it fails UNAVAILABLE ("payments is down"), and succeeded
contributions are made the way payments makes them: the ledger capture
"payment:<payment_id>:capture" (ESCROW -> GOAL), then
GoalsInternalService.ConfirmContribution with the service credential.

`paying_platform` adds the real payments service (on the session's Mongo-wire
server) and the Paystack simulator, whose webhooks reach payments through
`WebhookRelay`: what Envoy's webhook route does, the raw body and the
signature header passed to HandlePaystackWebhook over gRPC.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from aiohttp import web
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from gofund.payments.v1 import payments_service_pb2, payments_service_pb2_grpc
from google.api import httpbody_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.config import Settings
from services.common.db import psycopg_dsn
from services.common.server import ServiceRunner
from services.goals import main as goals_main
from services.identity import main as identity_main
from services.ledger import main as ledger_main
from services.payments import main as payments_main
from services.payments.domain import refund_key, refund_reserve_id, refund_settle_id
from services.paystack_sim import main as paystack_sim
from services.stack import embedded
from tests.conftest import migrated_database, service_channel, settings_with
from tests.helpers import eventually
from tests.integration.ledger_helpers import CREDIT, DEBIT, open_account, posting

PASSWORD = "correct horse battery"
# The domain every refusal read in a goals test must come from.
GOALS = "goals.gofund"


class FakeClock:
    """The goals service's clock: stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class User:
    id: str
    token: str

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.token}"),)


class GoalsUnderTest:
    """One goals process (there may be several on one database) and its clients."""

    def __init__(self, runner: ServiceRunner, port: int, clock: FakeClock) -> None:
        self.runner, self.port, self.clock = runner, port, clock
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.public = goals_service_pb2_grpc.GoalsServiceStub(self.channel)
        self.service_channel = service_channel(f"127.0.0.1:{port}")
        self.internal = goals_service_pb2_grpc.GoalsInternalServiceStub(self.service_channel)

    def background(self, index: int) -> Any:
        assert self.runner.service is not None
        return self.runner.service.background[index].__self__  # type: ignore[attr-defined]

    @property
    def broadcaster(self) -> Any:
        return self.background(0)

    @property
    def follower(self) -> Any:
        return self.background(1)

    @property
    def scheduler(self) -> Any:
        return self.background(2)

    async def close(self) -> None:
        await self.channel.close()
        await self.service_channel.close()
        await self.runner.stop()


class WebhookRelay:
    """Envoy's webhook route in miniature: POST /v1/webhooks/paystack, raw body and
    x-paystack-signature to PaymentsService.HandlePaystackWebhook; 200 only if payments took it."""

    def __init__(self, payments_target: str) -> None:
        self._channel = grpc.aio.insecure_channel(payments_target)
        self._payments = payments_service_pb2_grpc.PaymentsServiceStub(self._channel)
        self._runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/v1/webhooks/paystack", self._relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def _relay(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            await self._payments.HandlePaystackWebhook(
                payments_service_pb2.HandlePaystackWebhookRequest(
                    body=httpbody_pb2.HttpBody(content_type=request.content_type, data=body)
                ),
                metadata=(("x-paystack-signature", request.headers.get("x-paystack-signature", "")),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            return web.json_response({"code": exc.code().value[0]}, status=503)
        return web.json_response({})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._channel.close()


class Platform:
    def __init__(self, settings: Settings, goals_url: str, ledger_url: str) -> None:
        self.settings = settings
        self.goals_url = goals_url
        self.ledger_url = ledger_url
        self.runners: list[ServiceRunner] = []
        self.processes: list[GoalsUnderTest] = []
        self.clock = FakeClock()
        self.goals: GoalsUnderTest
        self._identity_channel = grpc.aio.insecure_channel(settings.target("identity"))
        self.identity = identity_service_pb2_grpc.IdentityServiceStub(self._identity_channel)
        self._ledger_channel = service_channel(settings.target("ledger"))
        self.ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(self._ledger_channel)
        self.escrow: dict[str, str] = {}
        self._pool: list[User] = []
        # With payments (paying_platform): the simulator, the relay and payments' clients.
        self.simulator: paystack_sim.Simulator | None = None
        self.relay: WebhookRelay | None = None
        self.payment_channels: list[grpc.aio.Channel] = []
        self.payments: payments_service_pb2_grpc.PaymentsServiceStub
        self.payments_internal: payments_service_pb2_grpc.PaymentsInternalServiceStub

    async def start_goals(
        self, clock: FakeClock | None = None, *, port: int = 0, **overrides: object
    ) -> GoalsUnderTest:
        """Another goals process on the same database (a replica, or a restart). Payments reaches
        the one on `settings.goals_port`; the others take any free port."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        clock = clock or self.clock
        runner = ServiceRunner(functools.partial(goals_main.build, clock=clock), settings, port=port)
        port = await runner.start()
        process = GoalsUnderTest(runner, port, clock)
        self.processes.append(process)
        return process

    async def stop_goals(self, process: GoalsUnderTest) -> None:
        self.processes.remove(process)
        await process.close()

    async def close(self) -> None:
        for process in list(self.processes):
            await self.stop_goals(process)
        await self._identity_channel.close()
        await self._ledger_channel.close()
        for channel in self.payment_channels:
            await channel.close()
        if self.relay is not None:
            await self.relay.stop()
        for runner in reversed(self.runners):
            await runner.stop()
        if self.simulator is not None:
            await self.simulator.stop()

    # -- users ------------------------------------------------------------------------
    async def user(self) -> User:
        """One of the module's users (see `users`)."""
        return (await self.users(1))[0]

    async def users(self, count: int) -> list[User]:
        """`count` distinct users, the same ones for every test of the module: registering
        costs two argon2 hashes, and what a test checks is per goal, proof or key anyway."""
        missing = count - len(self._pool)
        if missing > 0:
            self._pool.extend(await asyncio.gather(*(self.fresh_user() for _ in range(missing))))
        return self._pool[:count]

    async def fresh_user(self) -> User:
        """A user no other test has seen (for checks that span all of a user's goals)."""
        name = "g" + uuid.uuid4().hex[:12]
        created = await self.identity.CreateUser(
            identity_service_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD)
        )
        session = await self.identity.CreateSession(
            identity_service_pb2.CreateSessionRequest(login=name, password=PASSWORD)
        )
        return User(created.user.id, session.token)

    # -- goals ------------------------------------------------------------------------
    def deadline(self, **delta: float) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(self.clock.now + timedelta(**(delta or {"days": 30})))
        return stamp

    async def goal(self, owner: User, target: int = 10_000, currency: str = "NGN", **fields: Any) -> Any:
        request = goals_service_pb2.CreateGoalRequest(
            title=fields.pop("title", "School books for Ikeja"),
            description=fields.pop("description", "Books for forty pupils."),
            target_amount=target,
            currency=currency,
            deadline=fields.pop("deadline", None) or self.deadline(),
            **fields,
        )
        return (await self.goals.public.CreateGoal(request, metadata=owner.auth)).goal

    async def get(self, goal_id: str) -> Any:
        return (await self.goals.public.GetGoal(goals_service_pb2.GetGoalRequest(goal_id=goal_id))).goal

    async def until(
        self, goal_id: str, check: Callable[[Any], bool], timeout_s: float = 10.0, what: str = "condition"
    ) -> Any:
        """Poll the goal until `check` holds (an asynchronous effect: stream, scheduler)."""

        async def checked() -> Any:
            goal = await self.get(goal_id)
            return goal if check(goal) else None

        return await eventually(checked, timeout_s, f"goal {goal_id}: {what}")

    async def status(self, goal_id: str, status: int, timeout_s: float = 10.0) -> Any:
        return await self.until(goal_id, lambda g: g.status == status, timeout_s)

    # -- money, as payments moves it -----------------------------------------------------
    async def escrow_account(self, currency: str) -> str:
        if currency not in self.escrow:
            self.escrow[currency] = await open_account(self.ledger, "ESCROW", currency)
        return self.escrow[currency]

    async def capture(self, goal: Any, amount: int, payment_id: str) -> None:
        escrow = await self.escrow_account(goal.currency)
        await self.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=f"payment:{payment_id}:capture",
                postings=[
                    posting(escrow, DEBIT, amount, goal.currency),
                    posting(goal.account_id, CREDIT, amount, goal.currency),
                ],
                description="contribution captured",
            )
        )

    async def refund_posting(self, goal: Any, amount: int, payment_id: str) -> None:
        """A refund as payments moves it: reserved (GOAL -> ESCROW, pending), then posted."""
        escrow = await self.escrow_account(goal.currency)
        key = refund_key(payment_id, "test-refund")
        await self.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=refund_reserve_id(key),
                postings=[
                    posting(goal.account_id, DEBIT, amount, goal.currency),
                    posting(escrow, CREDIT, amount, goal.currency),
                ],
                description="refund reserved",
                pending=True,
            )
        )
        await self.ledger.PostPendingTransaction(
            ledger_service_pb2.PostPendingTransactionRequest(
                transaction_id=refund_settle_id(key),
                pending_transaction_id=refund_reserve_id(key),
                description="contribution refunded",
            )
        )

    async def pending_contribution(self, goal: Any, user: User, amount: int) -> str:
        """A contribution as CreateContribution records it before payments answers."""
        contribution_id = str(uuid.uuid4())
        await self.goals_sql(
            "INSERT INTO contributions (id, goal_id, user_id, payment_reference, idempotency_key, amount, currency, "
            "status, created_at, updated_at) VALUES (%s, %s, %s, '', %s, %s, %s, 'PENDING', now(), now())",
            contribution_id, goal.id, user.id, uuid.uuid4().hex, amount, goal.currency,
        )  # fmt: skip
        return contribution_id

    async def contribute(self, goal: Any, user: User, amount: int) -> tuple[str, str]:
        """A succeeded contribution: (contribution id, payment id), captured and confirmed."""
        contribution_id = await self.pending_contribution(goal, user, amount)
        payment_id = str(uuid.uuid4())
        await self.capture(goal, amount, payment_id)
        await self.confirm(contribution_id, payment_id, amount, goal.currency)
        return contribution_id, payment_id

    async def confirm(self, contribution_id: str, payment_id: str, amount: int, currency: str) -> Any:
        return await self.goals.internal.ConfirmContribution(
            goals_service_pb2.ConfirmContributionRequest(
                contribution_id=contribution_id, payment_id=payment_id, amount=amount, currency=currency
            )
        )

    async def funded_goal(self, owner: User, backers: list[tuple[User, int]], target: int | None = None) -> Any:
        goal = await self.goal(owner, target=target or sum(amount for _, amount in backers))
        for user, amount in backers:
            await self.contribute(goal, user, amount)
        return await self.status(goal.id, goals_pb2.GOAL_STATUS_FUNDED)

    async def balance(self, account_id: str) -> int:
        response = await self.ledger.BatchGetBalances(
            ledger_service_pb2.BatchGetBalancesRequest(account_ids=[account_id])
        )
        return int(response.balances[0].balance)

    # -- the goals database -------------------------------------------------------------
    async def goals_sql(self, statement: str, *params: Any) -> list[Any]:
        return await self.sql(self.goals_url, statement, *params)

    @staticmethod
    async def sql(url: str, statement: str, *params: Any) -> list[Any]:
        # Asynchronous: the services under test run in this event loop, and a
        # statement waiting for one of their row locks must not block it.
        async with await psycopg.AsyncConnection.connect(psycopg_dsn(url), autocommit=True) as connection:
            cursor = await connection.execute(statement, params)
            return await cursor.fetchall() if cursor.description else []


async def start_platform(
    postgres_port: int, mongodb_port: int, data_dir: Path, *, with_payments: bool = False, **overrides: object
) -> Platform:
    identity_port, ledger_port, goals_port, payments_port, simulator_port, relay_port = (
        embedded.free_port() for _ in range(6)
    )
    goals_url = migrated_database(postgres_port, "goals")
    ledger_url = migrated_database(postgres_port, "ledger")
    values: dict[str, object] = {
        "identity_database_url": migrated_database(postgres_port, "identity"),
        "ledger_database_url": ledger_url,
        "goals_database_url": goals_url,
        "identity_port": identity_port,
        "ledger_port": ledger_port,
        "identity_target": f"127.0.0.1:{identity_port}",
        "ledger_target": f"127.0.0.1:{ledger_port}",
        "goals_port": goals_port,
        "goals_target": f"127.0.0.1:{goals_port}",
        # Nothing listens here unless `with_payments`: payments is "down".
        "payments_port": payments_port,
        "payments_target": f"127.0.0.1:{payments_port}",
        "scheduler_interval_ms": 50,
        "call_timeout_ms": 2000,
        "paystack_simulator_port": simulator_port,
        "paystack_base_url": f"http://127.0.0.1:{simulator_port}",
        "webhook_url": f"http://127.0.0.1:{relay_port}/v1/webhooks/paystack",
        # Refunds and transfers settle only when a test says so; retries are quick.
        "paystack_sim_settle_ms": 0,
        "paystack_sim_retry_base_ms": 100,
        "webhook_retry_base_ms": 100,
    }
    values.update(overrides)
    settings = settings_with(postgres_port, mongodb_port, data_dir, **values)
    platform = Platform(settings, goals_url, ledger_url)
    services = [(identity_main.build, identity_port), (ledger_main.build, ledger_port)]
    if with_payments:
        platform.simulator = await paystack_sim.start(settings, port=simulator_port)
        services.append((payments_main.build, payments_port))
    for build, port in services:
        runner = ServiceRunner(build, settings, port=port)
        await runner.start()
        platform.runners.append(runner)
    if with_payments:
        platform.relay = WebhookRelay(settings.target("payments"))
        await platform.relay.start(relay_port)
        public = grpc.aio.insecure_channel(settings.target("payments"))
        internal = service_channel(settings.target("payments"))
        platform.payment_channels = [public, internal]
        platform.payments = payments_service_pb2_grpc.PaymentsServiceStub(public)
        platform.payments_internal = payments_service_pb2_grpc.PaymentsInternalServiceStub(internal)
    platform.goals = await platform.start_goals(port=goals_port)
    return platform


@pytest_asyncio.fixture(scope="module")
async def platform(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    running = await start_platform(postgres_port, mongodb_port, tmp_path_factory.mktemp("goals"))
    yield running
    await running.close()


@pytest_asyncio.fixture(scope="module")
async def paying_platform(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    running = await start_platform(
        postgres_port, mongodb_port, tmp_path_factory.mktemp("goals-payments"), with_payments=True
    )
    yield running
    await running.close()


async def take(stream: Any, count: int, timeout_s: float = 10.0) -> list[Any]:
    received = []
    async with asyncio.timeout(timeout_s):
        async for message in stream:
            received.append(message)
            if len(received) == count:
                break
    return received
