"""Goal progress fan-out for WatchGoal: one LISTEN connection per process, one feed per watched goal.

Every change of a goal's progress commits a NOTIFY on `goal_progress` carrying
the goal's new progress and `seq` (store.progress_changed). PostgreSQL delivers
it to the listener of every goals replica, so a change made by any process
reaches every watcher. When the listening connection drops, notifications sent
meanwhile are lost, so on reconnecting every watcher re-reads its goal from the
database.

A goal page needs the goal's latest state, not every state in between, and a
viral goal has thousands of watchers, so the pacing is done once per goal, not
once per watcher: a `GoalFeed` publishes the newest change at most once every
`min_interval_s` (the first change after a pause at once, the last one always
at the end of the pause), and a heartbeat after `heartbeat_s` without a
change. Every watcher of the goal wakes on the same frame and sends the feed's
newest progress; one that was still writing the last frame when the next came
sends the newest when it is done, so a slow client is coalesced, never
reordered, and never slows the writer or the other watchers. One frame costs
one wakeup per watcher: no timer, lock or queue of its own (2,000 watchers with
a timer and an event each cost goals twice the CPU per message; see README,
*Viral goal benchmark*).
"""

from __future__ import annotations

import asyncio
import logging
import math

from services.common.db import Database
from services.common.listen import Listener
from services.goals.store import NOTIFY_CHANNEL, Progress

log = logging.getLogger("gofund.goals.streams")


class GoalFeed:
    """One goal's changes as paced frames that all its watchers share."""

    def __init__(self, goal_id: str, *, min_interval_s: float, heartbeat_s: float) -> None:
        self.goal_id = goal_id
        self.watchers = 0
        # The newest progress published to watchers, and the newest waiting for the pause to end.
        self.published: Progress | None = None
        self._pending: Progress | None = None
        # Counts frames; a watcher remembers the last one it handled.
        self.frame = 0
        # The last frames that told watchers to read the goal from the database, and to send a heartbeat.
        self.reread_frame = 0
        self.heartbeat_frame = 0
        self._min_interval_s = min_interval_s
        self._heartbeat_s = heartbeat_s
        self._loop = asyncio.get_running_loop()
        self._last_published_at = -math.inf
        self._flush: asyncio.TimerHandle | None = None
        self._heartbeat = self._loop.call_later(heartbeat_s, self._beat)
        # One future per waiting watcher, each its own, so a watcher that goes away
        # (its task cancelled) cancels only its own; set at the next frame.
        self._waiting: list[asyncio.Future[None]] = []

    def offer(self, progress: Progress) -> None:
        newest = self._pending or self.published
        if newest is not None and progress.seq <= newest.seq:
            return
        self._pending = progress
        if self._flush is not None:
            return  # the pause's end publishes the newest
        due = self._last_published_at + self._min_interval_s
        if due <= self._loop.time():
            self._publish()
        else:
            self._flush = self._loop.call_at(due, self._publish)

    def reread(self) -> None:
        self.reread_frame = self.frame + 1
        self._wake()

    async def wait(self, after_frame: int) -> None:
        """Until a frame later than `after_frame` is out (at once if one is)."""
        while self.frame <= after_frame:
            waiter = self._loop.create_future()
            self._waiting.append(waiter)
            await waiter

    def close(self) -> None:
        self._heartbeat.cancel()
        if self._flush is not None:
            self._flush.cancel()

    def _publish(self) -> None:
        self._flush = None
        self.published, self._pending = self._pending, None
        self._last_published_at = self._loop.time()
        self._wake()

    def _beat(self) -> None:
        # Quiet for heartbeat_s: a frame with nothing new, which watchers send as a heartbeat.
        self.heartbeat_frame = self.frame + 1
        self._wake()

    def _wake(self) -> None:
        self.frame += 1
        self._heartbeat.cancel()
        self._heartbeat = self._loop.call_later(self._heartbeat_s, self._beat)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)


class ProgressBroadcaster:
    def __init__(self, database: Database, *, min_interval_s: float, heartbeat_s: float) -> None:
        self._feeds: dict[str, GoalFeed] = {}
        self._min_interval_s = min_interval_s
        self._heartbeat_s = heartbeat_s
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
        return sum(feed.watchers for feed in self._feeds.values())

    @property
    def listening(self) -> asyncio.Event:
        return self._listener.listening

    async def run(self) -> None:
        """Keep one LISTEN connection open for the life of the process (a background loop)."""
        await self._listener.run()

    def subscribe(self, goal_id: str) -> GoalFeed:
        """The goal's feed, which publishes every change committed from now on."""
        feed = self._feeds.get(goal_id)
        if feed is None:
            feed = self._feeds[goal_id] = GoalFeed(
                goal_id, min_interval_s=self._min_interval_s, heartbeat_s=self._heartbeat_s
            )
        feed.watchers += 1
        return feed

    def unsubscribe(self, feed: GoalFeed) -> None:
        feed.watchers -= 1
        if feed.watchers == 0 and self._feeds.get(feed.goal_id) is feed:
            del self._feeds[feed.goal_id]
            feed.close()

    async def _dispatch(self, payload: str) -> None:
        try:
            progress = Progress.from_json(payload)
        except (ValueError, TypeError):
            log.error("ignored a malformed progress notification", extra={"payload": payload[:200]})
            return
        feed = self._feeds.get(progress.goal_id)
        if feed is not None:
            feed.offer(progress)

    async def _reread_all(self) -> None:
        for feed in self._feeds.values():
            feed.reread()
