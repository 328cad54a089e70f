"""A paced feed of one thing's state (a goal's progress, an account's balance) that all its watchers share.

A page watching a goal or an account needs its latest state, not every state
in between, and a viral goal has thousands of watchers, so pacing is done once
per watched thing, not once per watcher: a `Feed` publishes the newest state
offered at most once every `min_interval_s` (the first after a pause at once,
the newest at the end of each pause, so the last one always goes out), and a
heartbeat after `heartbeat_s` without one. Every watcher wakes on the same
frame and sends the feed's newest state; one that was still writing the last
frame when the next came sends the newest when it is done, so a slow client is
coalesced, never reordered, and never slows the writer or the other watchers.
A frame costs one wakeup per watcher: no timer, lock or queue of its own (with
a timer, a timeout and an event per watcher, 2,000 watchers of one goal cost
goals twice the CPU per message; see README, *Viral goal benchmark*).

A feed can also tell its watchers to read the state from the database again
(`reread`: notifications were lost while the listener reconnected) or that it
ended (`end`: the watchers must close their streams and let clients resume).
"""

from __future__ import annotations

import asyncio
import math
from typing import Generic, Protocol, TypeVar


class Sequenced(Protocol):
    """A state or message that carries its place in commit order."""

    @property
    def seq(self) -> int: ...


S = TypeVar("S", bound=Sequenced)


class Feed(Generic[S]):
    def __init__(self, key: str, *, min_interval_s: float, heartbeat_s: float | None) -> None:
        self.key = key
        self.watchers = 0
        # The newest state published to watchers (the one waiting for the pause to end is _pending).
        self.published: S | None = None
        self._pending: S | None = None
        # Counts frames; a watcher remembers the last one it handled.
        self.frame = 0
        # The last frames that told watchers to read the state again, and to send a heartbeat.
        self.reread_frame = 0
        self.heartbeat_frame = 0
        # Why the feed ended, once it has.
        self.ended: str | None = None
        self._min_interval_s = min_interval_s
        self._heartbeat_s = heartbeat_s
        self._loop = asyncio.get_running_loop()
        self._last_published_at = -math.inf
        self._flush: asyncio.TimerHandle | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._beat_later()
        # One future per waiting watcher, each its own, so a watcher that goes away
        # (its task cancelled) cancels only its own; set at the next frame.
        self._waiting: list[asyncio.Future[None]] = []

    def offer(self, state: S) -> None:
        newest = self._pending or self.published
        if self.ended is not None or (newest is not None and state.seq <= newest.seq):
            return
        self._pending = state
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

    def end(self, reason: str) -> None:
        self.ended = reason
        self.close()
        self._wake()

    async def wait(self, after_frame: int) -> None:
        """Until a frame later than `after_frame` is out (at once if one is)."""
        while self.frame <= after_frame:
            waiter = self._loop.create_future()
            self._waiting.append(waiter)
            await waiter

    def close(self) -> None:
        """Stop its timers (the last watcher went away, or it ended)."""
        for timer in (self._heartbeat, self._flush):
            if timer is not None:
                timer.cancel()
        self._heartbeat = self._flush = None

    def _publish(self) -> None:
        self._flush = None
        self.published, self._pending = self._pending, None
        self._last_published_at = self._loop.time()
        self._wake()

    def _beat(self) -> None:
        # Quiet for heartbeat_s: a frame with nothing new, which watchers send as a heartbeat.
        self.heartbeat_frame = self.frame + 1
        self._wake()

    def _beat_later(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._heartbeat_s is not None and self.ended is None:
            self._heartbeat = self._loop.call_later(self._heartbeat_s, self._beat)

    def _wake(self) -> None:
        self.frame += 1
        self._beat_later()
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)


class Feeds(Generic[S]):
    """The feeds of one process's watched things, by key: a feed lives while it has watchers."""

    def __init__(self, *, min_interval_s: float, heartbeat_s: float | None) -> None:
        self._feeds: dict[str, Feed[S]] = {}
        self._min_interval_s = min_interval_s
        self._heartbeat_s = heartbeat_s

    @property
    def watcher_count(self) -> int:
        return sum(feed.watchers for feed in self._feeds.values())

    def join(self, key: str) -> Feed[S]:
        """The feed of `key` (a new one if nobody watches it), with one more watcher."""
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = Feed(key, min_interval_s=self._min_interval_s, heartbeat_s=self._heartbeat_s)
        feed.watchers += 1
        return feed

    def leave(self, feed: Feed[S]) -> None:
        """One watcher fewer; the last one takes the feed's timers with it."""
        feed.watchers -= 1
        if feed.watchers == 0 and self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
            feed.close()

    def offer(self, key: str, state: S) -> None:
        """`state` to the feed of `key`, if anyone watches it."""
        if (feed := self._feeds.get(key)) is not None:
            feed.offer(state)

    def reread_all(self) -> None:
        for feed in self._feeds.values():
            feed.reread()

    def end_all(self, reason: str) -> None:
        """End every feed (its watchers close their streams); watchers who join later get new ones."""
        feeds, self._feeds = self._feeds, {}
        for feed in feeds.values():
            feed.end(reason)
