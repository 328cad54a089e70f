"""Goals under test: identity + ledger + goals in this process on real PostgreSQL and real gRPC.

Goals gets an injected clock (`FakeClock`) so tests move time instead of
sleeping. Payments is not running yet: its address is a closed port, so every
call goals makes to it fails UNAVAILABLE, which the tests use as "payments is
down". Succeeded contributions are made the way payments makes them: the
ledger capture "payment:<payment_id>:capture" (ESCROW -> GOAL) and then
GoalsInternalService.ConfirmContribution with the service credential.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.config import Settings
from services.common.db import psycopg_dsn
from services.common.errors import error_info
from services.common.server import ServiceRunner
from services.goals import main as goals_main
from services.identity import main as identity_main
from services.ledger import main as ledger_main
from services.stack import embedded
from tests.conftest import migrated_database, service_channel, settings_with
from tests.integration.ledger_helpers import CREDIT, DEBIT, open_account, posting

PASSWORD = "correct horse battery"


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

    async def start_goals(self, clock: FakeClock | None = None, **overrides: object) -> GoalsUnderTest:
        """Another goals process on the same database (a replica, or a restart)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        clock = clock or self.clock
        runner = ServiceRunner(functools.partial(goals_main.build, clock=clock), settings, port=0)
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
        for runner in reversed(self.runners):
            await runner.stop()

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
        async with asyncio.timeout(timeout_s):
            while True:
                goal = await self.get(goal_id)
                if check(goal):
                    return goal
                await asyncio.sleep(0.02)

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
        escrow = await self.escrow_account(goal.currency)
        await self.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=f"payment:{payment_id}:refund",
                postings=[
                    posting(goal.account_id, DEBIT, amount, goal.currency),
                    posting(escrow, CREDIT, amount, goal.currency),
                ],
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


async def rejected(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(error)
    assert info is not None, error
    assert info.domain == "goals.gofund"
    return str(info.reason)


async def start_platform(postgres_port: int, mongodb_port: int, data_dir: Path, **overrides: object) -> Platform:
    identity_port, ledger_port, payments_port = (embedded.free_port() for _ in range(3))
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
        # Nothing listens here: payments is "down" for these tests.
        "payments_target": f"127.0.0.1:{payments_port}",
        "scheduler_interval_ms": 50,
        "call_timeout_ms": 2000,
    }
    values.update(overrides)
    settings = settings_with(postgres_port, mongodb_port, data_dir, **values)
    platform = Platform(settings, goals_url, ledger_url)
    for build, port in ((identity_main.build, identity_port), (ledger_main.build, ledger_port)):
        runner = ServiceRunner(build, settings, port=port)
        await runner.start()
        platform.runners.append(runner)
    platform.goals = await platform.start_goals()
    return platform


@pytest_asyncio.fixture(scope="module")
async def platform(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    running = await start_platform(postgres_port, mongodb_port, tmp_path_factory.mktemp("goals"))
    yield running
    await running.close()


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    """Poll `check` (state another task or process changes) until it returns something truthy."""
    async with asyncio.timeout(timeout_s):
        while not (result := await check()):  # noqa: ASYNC110 - polling state the service owns
            await asyncio.sleep(0.02)
    return result


async def take(stream: Any, count: int, timeout_s: float = 10.0) -> list[Any]:
    received = []
    async with asyncio.timeout(timeout_s):
        async for message in stream:
            received.append(message)
            if len(received) == count:
                break
    return received
