"""The goals process's scheduler: expiry, vote closing and saga steps, every interval.

Each tick, with `now` from the injected clock:
1. OPEN goals past their deadline: their GOAL balances are read from the
   ledger (a lagging stream must not expire a goal that reached its target),
   applied like a stream message, and a goal still below target EXPIRES and
   starts refunding.
2. Proofs whose voting window has ended are decided (lifecycle.settle_proof).
3. Due refund and release steps are driven (sagas).

Several goals processes may tick at once: every decision is taken again
under the goal's row lock, taken with SKIP LOCKED, so a goal or saga row
being handled by one process is skipped by the others; never by luck.
A tick also runs at start-up (resuming whatever a crash interrupted) and
whenever `wake` is called after a commit that started a saga.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from services.common import outage
from services.common.db import Database
from services.common.errors import DomainError
from services.goals import domain, lifecycle, store
from services.goals.domain import GoalStatus, LedgerUnavailable, ProofStatus
from services.goals.peers import LedgerGateway, Refused
from services.goals.sagas import Sagas

log = logging.getLogger("gofund.goals.scheduler")

BATCH = 100


class Scheduler:
    def __init__(
        self,
        *,
        database: Database,
        ledger: LedgerGateway,
        sagas: Sagas,
        rules: lifecycle.Rules,
        clock: Callable[[], datetime],
        interval_s: float,
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.sagas = sagas
        self.rules = rules
        self.clock = clock
        self.interval_s = interval_s
        self._wakeup = asyncio.Event()
        self._database_outage = outage.tracker(database, "goals database")
        self._ledger_outage = outage.tracker(ledger, "ledger")

    def wake(self) -> None:
        """Tick soon (a saga was started): no need to wait for the interval."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:
                if not outage.dependency_down(exc):
                    log.exception("scheduler tick failed")
                else:
                    # The next tick retries; the outage is logged once, not per tick.
                    self._database_outage.failed(exc)
            else:
                self._database_outage.recovered()
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()

    async def tick(self) -> None:
        await self.expire_goals()
        await self.close_votes()
        await self.drive_sagas()

    # -- expiry ---------------------------------------------------------------------
    async def expire_goals(self) -> None:
        now = self.clock()
        async with self.database.transaction() as session:
            due = await store.goals_due_to_expire(session, now, BATCH)
        if not due:
            return
        try:
            balances = await self.ledger.balances([str(g.account_id) for g in due if g.account_id])
        except (DomainError, Refused) as exc:
            if isinstance(exc, LedgerUnavailable):
                self._ledger_outage.failed(exc, waiting="goal expiry")
            else:
                log.warning("cannot read GOAL balances; expiry waits", extra={"error": str(exc)[:300]})
            return
        self._ledger_outage.recovered()
        for candidate in due:
            try:
                async with self.database.transaction() as session:
                    goal = await store.get_goal(session, str(candidate.id), lock=True, skip_locked=True)
                    if goal is None or goal.status != GoalStatus.OPEN or goal.deadline > now:
                        continue
                    balance = balances.get(str(goal.account_id))
                    if balance is not None:
                        await lifecycle.apply_balance(session, goal, balance.balance, balance.seq, now)
                    if await lifecycle.expire(session, goal, now):
                        log.info("goal expired", extra={"goal_id": str(goal.id)})
            except Exception as exc:
                _raise_if_dependency_down(exc)
                log.exception("expiring a goal failed", extra={"goal_id": str(candidate.id)})

    # -- votes ----------------------------------------------------------------------
    async def close_votes(self) -> None:
        now = self.clock()
        async with self.database.transaction() as session:
            due = await store.proofs_due_to_close(session, now, BATCH)
        for proof_id, goal_id in due:
            try:
                async with self.database.transaction() as session:
                    goal = await store.get_goal(session, str(goal_id), lock=True, skip_locked=True)
                    proof = await store.get_proof(session, str(proof_id), lock=True) if goal else None
                    if goal is None or proof is None:
                        continue
                    if (
                        proof.status != ProofStatus.PENDING
                        or proof.voting_ends_at > now
                        or goal.status != GoalStatus.FUNDED
                        or goal.outflow is not None
                    ):
                        continue
                    tally = await lifecycle.tally(session, goal, proof)
                    decision = domain.decide_at_close(tally, self.rules.quorum_bps)
                    await lifecycle.settle_proof(session, goal, proof, decision, rules=self.rules, now=now)
                    log.info("voting closed", extra={"proof_id": str(proof_id), "decision": decision.value})
            except Exception as exc:
                _raise_if_dependency_down(exc)
                log.exception("closing a vote failed", extra={"proof_id": str(proof_id)})

    # -- sagas ----------------------------------------------------------------------
    async def drive_sagas(self) -> None:
        now = self.clock()
        async with self.database.transaction() as session:
            releases = await store.releases_due(session, now, BATCH)
            refunds = await store.refunds_due(session, now, BATCH)
        for goal_id, step in releases:
            try:
                await self.sagas.drive_release(goal_id)
            except Exception as exc:
                _raise_if_dependency_down(exc)
                log.exception("release step failed", extra={"goal_id": str(goal_id), "step": step})
        for contribution_id in refunds:
            try:
                await self.sagas.drive_refund(contribution_id)
            except Exception as exc:
                _raise_if_dependency_down(exc)
                log.exception("refund step failed", extra={"contribution_id": str(contribution_id)})


def _raise_if_dependency_down(exc: Exception) -> None:
    """A row's failure that is the database (or another dependency) being away ends the
    whole batch: every other row would fail the same way, each with its own line."""
    if outage.dependency_down(exc):
        raise exc
