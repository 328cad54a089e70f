"""Goal progress fan-out for WatchGoal: one LISTEN connection per process.

Every change of a goal's progress commits a NOTIFY on `goal_progress` carrying
the goal's new progress and `seq` (store.progress_changed). PostgreSQL delivers
it to the listener of every goals replica, so a change made by any process
reaches every watcher. Each watcher keeps only the newest progress of its goal
(a slow client is coalesced, never reordered), and a watcher never slows the
writer. When the listening connection drops, notifications sent meanwhile are
lost, so on reconnecting every watcher re-reads its goal from the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from services.common.db import Database
from services.common.listen import Listener
from services.goals.store import NOTIFY_CHANNEL, Progress

log = logging.getLogger("gofund.goals.streams")


class ProgressWatcher:
    def __init__(self, goal_id: str) -> None:
        self.goal_id = goal_id
        self._latest: Progress | None = None
        # The goal must be read again: notifications may have been lost.
        self._reread = False
        self._wakeup = asyncio.Event()

    def offer(self, progress: Progress) -> None:
        if self._latest is None or progress.seq > self._latest.seq:
            self._latest = progress
        self._wakeup.set()

    def reread(self) -> None:
        self._reread = True
        self._wakeup.set()

    async def next(self) -> Progress | None:
        """The newest progress offered, or None when the goal must be read from the database."""
        while True:
            if self._reread:
                self._reread = False
                return None
            if self._latest is not None:
                latest, self._latest = self._latest, None
                return latest
            self._wakeup.clear()
            await self._wakeup.wait()


class ProgressBroadcaster:
    def __init__(self, database: Database) -> None:
        self._watchers: dict[str, set[ProgressWatcher]] = defaultdict(set)
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
        return sum(len(watchers) for watchers in self._watchers.values())

    @property
    def listening(self) -> asyncio.Event:
        return self._listener.listening

    async def run(self) -> None:
        """Keep one LISTEN connection open for the life of the process (a background loop)."""
        await self._listener.run()

    def subscribe(self, goal_id: str) -> ProgressWatcher:
        """A watcher that receives every change committed from now on."""
        watcher = ProgressWatcher(goal_id)
        self._watchers[goal_id].add(watcher)
        return watcher

    def unsubscribe(self, watcher: ProgressWatcher) -> None:
        watchers = self._watchers.get(watcher.goal_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[watcher.goal_id]

    async def _dispatch(self, payload: str) -> None:
        try:
            progress = Progress.from_json(payload)
        except (ValueError, TypeError):
            log.error("ignored a malformed progress notification", extra={"payload": payload[:200]})
            return
        for watcher in self._watchers.get(progress.goal_id, ()):
            watcher.offer(progress)

    async def _reread_all(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.reread()
