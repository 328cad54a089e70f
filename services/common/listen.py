"""One PostgreSQL LISTEN connection kept open for the life of a process.

Goals (progress), the ledger (balances) and identity (revocations) each fan a
NOTIFY channel out to the streams of this process. They differ in what they do
with a notification and around a (re)connection, not in how the connection is
kept, so `Listener` keeps it and calls them back. (psycopg gives `notifies()` on
one connection; neither it nor psycopg_pool keeps a listening one alive.)

- `on_connect` runs once LISTEN is in place and before `listening` is set:
  notifications sent while nobody listened are lost, so this is where a feed
  catches up from its tables (or tells its watchers to re-read). Listening
  first, then catching up, means a change committed in between is both read and
  notified, so it is seen at least once and never missed.
- `dispatch` gets every notification's payload, in commit order.
- `housekeeping`, given with `wake_every_s`, runs whenever that long has passed
  on a live connection, however quiet the channel is.
- `on_disconnect` runs whenever the connection ends (an error, a cancellation),
  after `listening` is cleared, so a feed can end the streams it can no longer
  keep complete.

A lost connection is retried every `reconnect_delay_s`. A dependency being
away is reported to the process's one outage tracker of `dependency` (one line
when it starts, one when it ends); anything else is a bug or bad data and is
logged with its traceback. Either way the loop goes on; only a cancellation
ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from services.common import outage
from services.common.db import Database, psycopg_dsn

log = logging.getLogger("gofund.listen")

RECONNECT_DELAY_S = 0.5
# TCP keepalives: a listener whose server vanished without a word is noticed
# within ~30 s (and its feed's streams told to resume), not when the kernel gives up.
LISTENER_KEEPALIVES = "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3 connect_timeout=5"


async def _nothing() -> None:
    return None


class Listener:
    def __init__(
        self,
        database: Database,
        channel: str,
        *,
        name: str,
        dependency: str,
        dispatch: Callable[[str], Awaitable[None]],
        on_connect: Callable[[], Awaitable[None]] = _nothing,
        on_disconnect: Callable[[], None] = lambda: None,
        wake_every_s: float | None = None,
        housekeeping: Callable[[], Awaitable[None]] = _nothing,
        reconnect_delay_s: float = RECONNECT_DELAY_S,
        logger: logging.Logger = log,
    ) -> None:
        """`name` says which listener a log line is about ("progress listener");
        `dependency` names the outage it reports to ("goals database")."""
        self._dsn = psycopg.conninfo.make_conninfo(
            psycopg_dsn(database.url), **psycopg.conninfo.conninfo_to_dict(LISTENER_KEEPALIVES)
        )
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._name = name
        self._outage = outage.tracker(database, dependency)
        self._dispatch = dispatch
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._wake_every_s = wake_every_s
        self._housekeeping = housekeeping
        self._reconnect_delay_s = reconnect_delay_s
        self._log = logger
        # Set while notifications are being received and the feed has caught up.
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled (a background loop)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as connection:
                    await connection.execute(self._listen)
                    await self._on_connect()
                    self._outage.recovered()
                    self.listening.set()
                    await self._receive(connection)
            except Exception as exc:
                # Not only psycopg's errors: a catch-up or a dispatch may go through the
                # SQLAlchemy pool. Anything but a cancellation must leave the loop alive.
                if outage.dependency_down(exc):
                    # Retried every reconnect_delay_s: one line per outage, not per attempt.
                    self._outage.failed(exc, waiting=self._name)
                else:
                    self._log.exception(f"{self._name} failed")
            finally:
                self.listening.clear()
                self._on_disconnect()
            await asyncio.sleep(self._reconnect_delay_s)

    async def _receive(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if self._wake_every_s is None:
            async for notification in connection.notifies():
                await self._dispatch(notification.payload)
            return
        while True:
            # The timeout is a deadline for the whole iteration, not for each
            # notification: a busy channel still ends it after wake_every_s.
            async for notification in connection.notifies(timeout=self._wake_every_s):
                await self._dispatch(notification.payload)
            await self._housekeeping()
