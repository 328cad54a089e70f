"""A goal's progress watcher keeps the newest progress, never goes back, and rereads after a lost feed."""

import asyncio

from services.goals.domain import GoalStatus
from services.goals.store import Progress
from services.goals.streams import ProgressWatcher


def progress(seq: int, raised: int, status: GoalStatus = GoalStatus.OPEN) -> Progress:
    return Progress("g", seq, status, raised, 1000, 1, "NGN")


def test_a_slow_watcher_gets_only_the_newest_progress() -> None:
    watcher = ProgressWatcher("g")
    for seq, raised in ((2, 100), (3, 200), (4, 300)):
        watcher.offer(progress(seq, raised))
    assert asyncio.run(watcher.next()) == progress(4, 300)


def test_an_older_progress_never_replaces_a_newer_one() -> None:
    watcher = ProgressWatcher("g")
    watcher.offer(progress(5, 500))
    watcher.offer(progress(4, 400))  # a notification that arrived late
    assert asyncio.run(watcher.next()) == progress(5, 500)


def test_after_a_lost_feed_the_watcher_asks_to_read_the_goal_again() -> None:
    watcher = ProgressWatcher("g")
    watcher.reread()
    assert asyncio.run(watcher.next()) is None


def test_progress_travels_as_json_unchanged() -> None:
    sent = progress(7, 1000, GoalStatus.FUNDED)
    assert Progress.from_json(sent.to_json()) == sent
