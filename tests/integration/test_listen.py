"""The one LISTEN loop (services.common.listen) on the real PostgreSQL.

Every callback reports what it saw to a queue, so each test waits for the
events it expects (in their order) instead of sleeping. A test's listener has
a channel and an outage dependency of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from services.common.db import Database, ensure_database, psycopg_dsn
from services.common.listen import Listener
from tests.conftest import unique_name

pytestmark = pytest.mark.asyncio

OUTAGE_LOGGER = "gofund.outage"
WAIT_S = 10.0


@pytest_asyncio.fixture(scope="module")
async def database(postgres_port: int) -> AsyncIterator[Database]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres_port}/{unique_name('listen')}"
    ensure_database(url)
    database = Database("listen", url)
    yield database
    await database.engine.dispose()


class Feed:
    """A listener's callbacks, each recording (what happened, whether it was listening then)."""

    def __init__(
        self, database: Database, *, wake_every_s: float | None = None, reconnect_delay_s: float = 0.05
    ) -> None:
        self.database = database
        self.channel = unique_name("channel")
        self.dependency = unique_name("database")
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        # What the listener calls; a test swaps in its own.
        self.on_connect: Callable[[], Awaitable[None]] = self.connected
        self.dispatch: Callable[[str], Awaitable[None]] = self.dispatched
        self.housekeeping: Callable[[], Awaitable[None]] = self.housekept
        self.listener = Listener(
            database,
            self.channel,
            name="test listener",
            dependency=self.dependency,
            on_connect=self._on_connect,
            dispatch=self._dispatch,
            on_disconnect=lambda: self.events.put_nowait(("disconnected", self.listener.listening.is_set())),
            wake_every_s=wake_every_s,
            housekeeping=self._housekeeping,
            reconnect_delay_s=reconnect_delay_s,
        )

    async def _on_connect(self) -> None:
        await self.on_connect()

    async def _dispatch(self, payload: str) -> None:
        await self.dispatch(payload)

    async def _housekeeping(self) -> None:
        await self.housekeeping()

    async def connected(self) -> None:
        self.events.put_nowait(("connected", self.listener.listening.is_set()))

    async def dispatched(self, payload: str) -> None:
        self.events.put_nowait(("payload", payload))

    async def housekept(self) -> None:
        self.events.put_nowait(("housekeeping", self.listener.listening.is_set()))

    async def next(self) -> tuple[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return await self.events.get()

    async def next_of(self, kind: str) -> Any:
        """The next event of `kind`, skipping others (housekeeping rounds, say)."""
        while True:
            event, detail = await self.next()
            if event == kind:
                return detail

    async def listening(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.listener.listening.wait()

    async def notify(self, *payloads: str) -> None:
        """One transaction per payload, in this order."""
        async with await psycopg.AsyncConnection.connect(psycopg_dsn(self.database.url), autocommit=True) as conn:
            for payload in payloads:
                await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    async def drop_connection(self) -> None:
        """The server ends the listening session, as a restart or a failover does."""
        async with await psycopg.AsyncConnection.connect(psycopg_dsn(self.database.url), autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
                (f'LISTEN "{self.channel}"',),
            )
            assert [row[0] for row in await cursor.fetchall()] == [True]


@asynccontextmanager
async def running(feed: Feed) -> AsyncIterator[None]:
    task = asyncio.create_task(feed.listener.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT_S):  # a swallowed cancellation fails here, not at pytest's timeout
                await task


@pytest_asyncio.fixture
async def feed(database: Database) -> AsyncIterator[Feed]:
    feed = Feed(database)
    async with running(feed):
        yield feed


def outage_lines(caplog: pytest.LogCaptureFixture, dependency: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == OUTAGE_LOGGER and r.levelno >= logging.INFO and getattr(r, "dependency", "") == dependency
    ]


async def test_notifications_are_dispatched_in_commit_order_after_the_catch_up(feed: Feed) -> None:
    assert await feed.next() == ("connected", False)  # caught up before anyone is told it listens
    await feed.listening()
    await feed.notify("first", "second", "third")
    assert [await feed.next() for _ in range(3)] == [("payload", "first"), ("payload", "second"), ("payload", "third")]


async def test_a_dropped_connection_is_caught_up_again_and_logged_as_one_outage(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert await feed.next() == ("connected", False)
    await feed.listening()

    await feed.drop_connection()
    # Its streams are ended after it stopped claiming to listen, then it catches up again.
    assert await feed.next() == ("disconnected", False)
    assert await feed.next() == ("connected", False)
    await feed.listening()
    await feed.notify("after the drop")
    assert await feed.next() == ("payload", "after the drop")

    started, ended = outage_lines(caplog, feed.dependency)
    assert "unavailable" in started
    assert "available again" in ended
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_failing_catch_up_is_retried_and_logged_once_until_it_succeeds(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    feed = Feed(database)
    attempts = 0

    async def flaky_catch_up() -> None:
        nonlocal attempts
        attempts += 1
        await feed.connected()
        if attempts <= 3:
            raise psycopg.OperationalError("the server is starting up")

    feed.on_connect = flaky_catch_up
    async with running(feed):
        for _ in range(3):
            assert await feed.next() == ("connected", False)
            assert await feed.next() == ("disconnected", False)
        assert await feed.next() == ("connected", False)
        await feed.listening()
        await feed.notify("caught up")
        assert await feed.next() == ("payload", "caught up")

    started, ended = outage_lines(caplog, feed.dependency)
    assert "unavailable" in started
    assert "available again" in ended


async def test_a_failing_dispatch_is_logged_as_a_bug_and_the_loop_listens_again(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    async def dispatch(payload: str) -> None:
        if payload == "bad":
            raise ValueError("a bug")
        await feed.dispatched(payload)

    feed.dispatch = dispatch
    await feed.next_of("connected")
    await feed.listening()
    await feed.notify("bad")
    assert await feed.next() == ("disconnected", False)
    assert await feed.next() == ("connected", False)
    await feed.listening()
    await feed.notify("good")
    assert await feed.next() == ("payload", "good")

    (failure,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failure.getMessage() == "test listener failed"
    assert failure.exc_info is not None
    assert outage_lines(caplog, feed.dependency) == []


async def test_housekeeping_runs_every_wake_interval_on_a_quiet_channel_and_between_notifications(
    database: Database,
) -> None:
    feed = Feed(database, wake_every_s=0.05)
    async with running(feed):
        await feed.next_of("connected")
        for _ in range(3):
            assert await feed.next() == ("housekeeping", True)
        await feed.notify("between rounds")
        assert await feed.next_of("payload") == "between rounds"
        assert await feed.next_of("housekeeping") is True


@pytest.mark.parametrize("where", ["catch-up", "dispatch", "housekeeping", "waiting", "reconnect delay"])
async def test_a_cancellation_ends_the_loop_wherever_it_is(database: Database, where: str) -> None:
    entered = asyncio.Event()

    async def stuck(*_: object) -> None:
        entered.set()
        await asyncio.Event().wait()

    async def unreachable(*_: object) -> None:
        entered.set()
        raise OSError("connection refused")

    feed = Feed(
        database,
        wake_every_s=0.05 if where == "housekeeping" else None,
        reconnect_delay_s=3600 if where == "reconnect delay" else 0.05,
    )
    if where == "catch-up":
        feed.on_connect = stuck
    elif where == "dispatch":
        feed.dispatch = stuck
    elif where == "housekeeping":
        feed.housekeeping = stuck
    elif where == "reconnect delay":
        feed.on_connect = unreachable

    task = asyncio.create_task(feed.listener.run())
    if where in ("dispatch", "waiting"):
        await feed.listening()
        if where == "dispatch":
            await feed.notify("stuck here")
    if where == "waiting":
        entered.set()
    async with asyncio.timeout(WAIT_S):
        await entered.wait()
    if where == "reconnect delay":
        await feed.next_of("disconnected")  # then it sleeps before the next attempt

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT_S):
            await task
    assert task.cancelled()
    assert not feed.listener.listening.is_set()
    if where != "reconnect delay":  # already reported above
        assert await feed.next_of("disconnected") is False
