"""Goal progress fan-out for WatchGoal: one LISTEN connection per process, one feed per watched goal.

Every change of a goal's progress commits a NOTIFY on `goal_progress` carrying
the goal's new progress and `seq` (store.progress_changed). PostgreSQL delivers
it to the listener of every goals replica, so a change made by any process
reaches every watcher. When the listening connection drops, notifications sent
meanwhile are lost, so on reconnecting every watcher re-reads its goal from the
database.

Each watched goal has one `Feed` (services.common.feed), which paces and
coalesces its changes once for all its watchers.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.db import Database
from services.common.feed import Feed, Feeds
from services.common.listen import Listener
from services.goals.store import NOTIFY_CHANNEL, Progress

log = logging.getLogger("gofund.goals.streams")


class ProgressBroadcaster:
    def __init__(self, database: Database, *, min_interval_s: float, heartbeat_s: float) -> None:
        self._feeds: Feeds[Progress] = Feeds(min_interval_s=min_interval_s, heartbeat_s=heartbeat_s)
        self._listener = Listener(
            database,
            NOTIFY_CHANNEL,
            name="progress listener",
            dependency="goals database",
            # Anything committed while nobody listened is only in the database.
            on_connect=self._reread_all,
            dispatch=self._dispatch,
            logger=log,
        )

    @property
    def watcher_count(self) -> int:
        return self._feeds.watcher_count

    @property
    def listening(self) -> asyncio.Event:
        return self._listener.listening

    async def run(self) -> None:
        """Keep one LISTEN connection open for the life of the process (a background loop)."""
        await self._listener.run()

    def subscribe(self, goal_id: str) -> Feed[Progress]:
        """The goal's feed, which publishes every change committed from now on."""
        return self._feeds.join(goal_id)

    def unsubscribe(self, feed: Feed[Progress]) -> None:
        self._feeds.leave(feed)

    async def _dispatch(self, payload: str) -> None:
        try:
            progress = Progress.from_json(payload)
        except (ValueError, TypeError):
            log.error("ignored a malformed progress notification", extra={"payload": payload[:200]})
            return
        self._feeds.offer(progress.goal_id, progress)

    async def _reread_all(self) -> None:
        self._feeds.reread_all()
