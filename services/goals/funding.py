"""Funding from the ledger: the GOAL balance stream, applied to goals.

A background loop of every goals process reads LedgerInternalService.
WatchBalances(account_types=[GOAL], after_seq=<cursor>) and applies each change
in its own transaction together with the cursor (`ledger_cursor`), so a
restart resumes exactly where the last commit left off. A broken stream
(WATCH_INTERRUPTED, the ledger restarting, a network fault) is normal: the loop
reconnects with backoff from the stored cursor. Every goal remembers the ledger
seq it last applied, so replays and several replicas consuming the same stream
never move a goal backwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from services.common import outage
from services.common.db import Database
from services.common.errors import DomainError
from services.common.ids import canonical_id
from services.goals import lifecycle, store
from services.goals.peers import BalanceChange, LedgerGateway, Refused

log = logging.getLogger("gofund.goals.funding")

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0


class BalanceFollower:
    def __init__(self, database: Database, ledger: LedgerGateway, clock: Callable[[], datetime]) -> None:
        self.database = database
        self.ledger = ledger
        self.clock = clock
        self.connected = asyncio.Event()
        self._database_outage = outage.tracker(database, "goals database")

    async def run(self) -> None:
        attempt = 0  # reconnections since the last change applied
        interrupted = False
        while True:
            started = time.monotonic()
            try:
                async with self.database.transaction() as session:
                    after = await store.ledger_cursor(session)
                self._database_outage.recovered()
                self.connected.set()
                async for change in self.ledger.goal_balance_changes(after):
                    interrupted = False
                    await self.apply(change)
                    attempt = 0
            except (DomainError, Refused) as exc:
                # A broken stream is normal (the ledger restarting or dropping a slow
                # watcher): said once at INFO; reconnections failing fast after it are
                # DEBUG, since the ledger being down is the sagas' and scheduler's to report.
                quick = time.monotonic() - started < BACKOFF_MAX_S
                (log.debug if interrupted and quick else log.info)(
                    "goal balance stream interrupted; resuming", extra={"error": str(exc)[:300]}
                )
                interrupted = True
            except Exception as exc:
                if not outage.dependency_down(exc):
                    log.exception("goal balance stream failed; resuming")
                else:
                    self._database_outage.failed(exc, waiting="goal balance stream")
            finally:
                self.connected.clear()
            attempt += 1
            await asyncio.sleep(outage.backoff_s(attempt, BACKOFF_START_S, BACKOFF_MAX_S, jitter=False))

    async def apply(self, change: BalanceChange) -> None:
        now = self.clock()
        async with self.database.transaction() as session:
            goal_id = canonical_id(change.entity_id)
            goal = await store.get_goal(session, goal_id, lock=True) if goal_id else None
            if goal is not None and str(goal.account_id) == change.account_id:
                await lifecycle.apply_balance(session, goal, change.balance, change.seq, now)
            await store.advance_ledger_cursor(session, change.seq)
