"""What every test module does the same way: wait for something it can observe, read a refusal.

Waiting polls state the system under test owns (a row, an HTTP answer, a stream's counter):
nothing in the test process is told when another task or process changes it. Each wait has
a deadline and says what it waited for when the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import httpx
import pytest

from services.common.errors import error_info

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0, what: str = "condition", interval_s: float = 0.02
) -> Any:
    """Await `check` until it returns something truthy; that result.

    The deadline also bounds a `check` that itself hangs (a stream read, a locked row).
    """
    result: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while not (result := await check()):  # noqa: ASYNC110 - polling state the service owns
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {result!r})") from None
    return result


def eventually_sync(
    check: Callable[[], T | None], timeout_s: float = 20.0, what: str = "condition", interval_s: float = 0.05
) -> T:
    """Call `check` until it returns something truthy; that result (for tests without an event loop)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {result!r})")
        time.sleep(interval_s)


def within_one_window(window: timedelta, needed_s: float = 30.0) -> None:
    """Identity's rate limits count in fixed windows aligned to the epoch (domain.Limit), so a
    test that counts hits and finds its counter reset had straddled a window's end. With
    fewer than `needed_s` left in the current window, wait into the next (a wait for the
    clock, which nothing in the system can signal)."""
    seconds = window.total_seconds()
    left = seconds - time.time() % seconds
    if left < needed_s:
        time.sleep(left + 0.1)


async def rejected(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error `call` fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def reason(error: grpc.RpcError, domain: str | None = None) -> str:
    """The ErrorInfo reason of a gRPC error; with `domain`, also that the reason is that service's."""
    info = error_info(error)
    assert info is not None, error
    if domain is not None:
        assert info.domain == domain, error
    return str(info.reason)


def reason_of(response: httpx.Response) -> str:
    """The ErrorInfo reason of an error answered as JSON through the edge."""
    return str(next(d["reason"] for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")))
