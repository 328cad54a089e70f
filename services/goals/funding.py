"""Funding from the ledger: the GOAL balance stream, applied to goals.

Every goals process follows LedgerInternalService.WatchBalances(account_types=
[GOAL], after_seq=<cursor>) with the `follower` loop and the `ledger_cursor`
table. Every goal remembers the ledger seq it last applied, so replays and
several replicas consuming the same stream never move a goal backwards.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.ids import canonical_id
from services.goals import lifecycle, store
from services.goals.follower import Stream
from services.goals.peers import BalanceChange, LedgerGateway


def balance_stream(ledger: LedgerGateway) -> Stream[BalanceChange]:
    # A balance change is the account's state at its seq: of several, the newest is what counts.
    return Stream(
        "goal balance stream",
        store.LedgerCursor,
        ledger.goal_balance_changes,
        apply_balance_change,
        key=lambda change: change.account_id,
    )


async def apply_balance_change(session: AsyncSession, change: BalanceChange, now: datetime) -> bool:
    goal_id = canonical_id(change.entity_id)
    goal = await store.get_goal(session, goal_id, lock=True) if goal_id else None
    if goal is not None and str(goal.account_id) == change.account_id:
        await lifecycle.apply_balance(session, goal, change.balance, change.seq, now)
    return False
