"""Work due at a wall-clock moment: webhook retries and automatic settlements.

Each scheduled action is one task sleeping until its moment. Nothing here is
the record of what is due; the state is (an event's `next_attempt_at`, a
refund's `settle_at`), so closing simply cancels every task and the next start
schedules again whatever the state still says is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from services.paystack_sim.records import now_ms

log = logging.getLogger("gofund.paystack_sim")


class Timers:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def call_at(self, due_at_ms: int, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` at `due_at_ms` (at once if that has passed); after `close`, leave it to the next start."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._run(due_at_ms, action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, due_at_ms: int, action: Callable[[], Awaitable[None]]) -> None:
        delay_ms = due_at_ms - now_ms()
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        try:
            await action()
        except Exception:
            # A failing action must not vanish silently in a task nobody awaits.
            log.exception("paystack simulator: scheduled action failed")

    async def close(self) -> None:
        """Cancel everything still waiting or running, and wait until it has stopped."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
