"""A feed (here of a goal's progress) publishes the newest state at its pace, never goes back,
wakes every watcher on one frame, tells them to reread after a lost feed, and ends."""

import asyncio

from services.common.feed import Feed
from services.goals.domain import GoalStatus
from services.goals.store import Progress

HOUR_S = 3600.0


def progress(seq: int, raised: int, status: GoalStatus = GoalStatus.OPEN) -> Progress:
    return Progress("g", seq, status, raised, 1000, 1, "NGN")


def feed(min_interval_s: float = 0.05, heartbeat_s: float = HOUR_S) -> Feed[Progress]:
    return Feed("g", min_interval_s=min_interval_s, heartbeat_s=heartbeat_s)


def test_the_first_change_goes_out_at_once_and_the_rest_of_a_pause_as_its_newest() -> None:
    async def run() -> tuple[list[Progress | None], int]:
        goal = feed(min_interval_s=0.05)
        goal.offer(progress(2, 100))
        published = [goal.published]
        for seq, raised in ((3, 200), (4, 300), (5, 400)):
            goal.offer(progress(seq, raised))
        published.append(goal.published)  # still the first: the pause has not ended
        await goal.wait(goal.frame)
        published.append(goal.published)
        frames = goal.frame
        goal.close()
        return published, frames

    published, frames = asyncio.run(run())
    assert published == [progress(2, 100), progress(2, 100), progress(5, 400)]
    assert frames == 2


def test_an_older_progress_never_replaces_a_newer_one() -> None:
    async def run() -> Progress | None:
        goal = feed(min_interval_s=0)
        goal.offer(progress(5, 500))
        goal.offer(progress(4, 400))  # a notification that arrived late
        goal.close()
        return goal.published

    assert asyncio.run(run()) == progress(5, 500)


def test_one_frame_wakes_every_watcher_and_one_going_away_takes_nobody_with_it() -> None:
    async def run() -> tuple[list[int], bool]:
        goal = feed(min_interval_s=0)
        woken: list[int] = []

        async def watcher(index: int) -> None:
            await goal.wait(goal.frame)
            woken.append(index)

        watchers = [asyncio.create_task(watcher(i)) for i in range(5)]
        await asyncio.sleep(0)  # every watcher is waiting
        watchers[0].cancel()  # a client that went away
        await asyncio.sleep(0)
        goal.offer(progress(2, 100))
        await asyncio.gather(*watchers[1:])
        goal.close()
        return sorted(woken), watchers[0].cancelled()

    assert asyncio.run(run()) == ([1, 2, 3, 4], True)


def test_a_watcher_behind_the_feed_does_not_wait_for_the_next_frame() -> None:
    async def run() -> Progress | None:
        goal = feed(min_interval_s=0)
        seen = goal.frame
        goal.offer(progress(2, 100))
        goal.offer(progress(3, 200))  # published while the watcher was busy writing
        async with asyncio.timeout(1):
            await goal.wait(seen)
        goal.close()
        return goal.published

    assert asyncio.run(run()) == progress(3, 200)


def test_a_quiet_feed_beats_and_a_lost_feed_asks_watchers_to_read_the_goal_again() -> None:
    async def run() -> tuple[bool, bool, bool]:
        goal = feed(heartbeat_s=0.01)
        seen = goal.frame
        await goal.wait(seen)
        beat = goal.heartbeat_frame > seen and goal.reread_frame <= seen
        seen = goal.frame
        goal.reread()
        await goal.wait(seen)
        reread = goal.reread_frame > seen
        goal.close()
        return beat, reread, goal.published is None

    assert asyncio.run(run()) == (True, True, True)


def test_an_ended_feed_wakes_its_watchers_and_takes_nothing_more() -> None:
    async def run() -> tuple[str | None, Progress | None]:
        goal = feed(min_interval_s=0)
        seen = goal.frame
        waiting = asyncio.create_task(goal.wait(seen))
        await asyncio.sleep(0)
        goal.end("the listener lost its connection")
        await waiting
        goal.offer(progress(2, 100))
        return goal.ended, goal.published

    assert asyncio.run(run()) == ("the listener lost its connection", None)


def test_progress_travels_as_json_unchanged() -> None:
    sent = progress(7, 1000, GoalStatus.FUNDED)
    assert Progress.from_json(sent.to_json()) == sent
