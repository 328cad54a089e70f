"""A dependency outage as an operator should read it in the logs.

A background loop that retries a database, a peer service or Paystack would
otherwise log every failed retry, with a traceback, at ERROR: dozens of alarms
for an outage the process recovers from by itself. Instead every loop that
uses a dependency reports to that dependency's one `Outage` in the process:

- the first failure logs one WARNING naming the dependency and the error class
  (no traceback: nothing in our code is wrong);
- further failures are counted, with a reminder every `remind_s` while it lasts;
- the first success after it logs one WARNING with the outage's duration.

ERROR stays for what needs a person: an exception that is not a dependency
being away (`dependency_down` says which are) is a bug or bad data, and its
loop still logs it with its traceback.
"""

from __future__ import annotations

import logging
import random
import time
import weakref
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pymongo.errors
import sqlalchemy.exc

# Request paths already tell a store outage from a bug this way (they answer
# UNAVAILABLE instead of INTERNAL); background loops use the same judgement.
from services.common.interceptors import store_unavailable

log = logging.getLogger("gofund.outage")

REMIND_S = 300.0

# The one set of gRPC codes with which a call to a peer service means "not reached, try
# again later" rather than "no"; every retry decision (goals' peers, payments' outbox,
# the background loops here) uses it, so one failure is judged the same way everywhere.
# It lives here because this module already decides what "a dependency is down" means
# for every other kind of error.
# - UNAVAILABLE, DEADLINE_EXCEEDED: the peer is away or slow.
# - UNIMPLEMENTED: during a rolling deploy a call can reach a replica that does not have
#   the method yet; the next try reaches a new one. Counting it as a failure would park
#   payments' webhook events because of a deploy. A method that is really missing is
#   still seen: its outage is a WARNING with a reminder every `remind_s`.
# - CANCELLED: we did not cancel the call (our own cancellation is asyncio's
#   CancelledError, not an RPC error), so the peer did: a server cancels its calls in
#   flight when it shuts down, i.e. the peer restarting.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.CANCELLED,
    }
)


def unreachable(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a peer's gRPC error means it was not reached (see TRANSIENT_CODES), not a refusal."""
    return exc.code() in TRANSIENT_CODES


def backoff_s(attempt: int, base_s: float, cap_s: float, *, jitter: bool = True) -> float:
    """The wait before retry `attempt` (>= 1): `base_s` doubling per attempt up to `cap_s`.

    With `jitter` (the default) it is drawn from the upper half of that, so replicas that
    lost one dependency at the same moment do not retry it in step. Without it, it is
    exact, for a wait that is stored and shown (a saga step's next attempt time).
    """
    # The exponent is capped so that a long outage's attempt count cannot overflow a float.
    ceiling = min(cap_s, base_s * 2 ** min(max(attempt - 1, 0), 60))
    return random.uniform(ceiling / 2, ceiling) if jitter else ceiling


def dependency_down(exc: BaseException) -> bool:
    """Whether `exc` means a dependency is away (retry later), not that our code or data is wrong."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return unreachable(exc)
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return store_unavailable(exc) or isinstance(exc.orig, psycopg.InterfaceError)
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        # The pool gave up waiting for a connection: the server is slow or away.
        | sqlalchemy.exc.TimeoutError
        # AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError are all ConnectionFailure.
        | pymongo.errors.ConnectionFailure
        # ConnectionError (refused, reset) is an OSError too.
        | OSError,
    )


def describe(exc: BaseException) -> str:
    """`Class: message` on one line, short enough for a log field."""
    if isinstance(exc, grpc.aio.AioRpcError):
        text = f"{exc.code().name}: {exc.details() or ''}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


class Outage:
    """The outages of one dependency in this process, as log lines.

    Not thread-safe: it is used from the process's event loop only.
    """

    def __init__(
        self,
        dependency: str,
        *,
        logger: logging.Logger = log,
        remind_s: float = REMIND_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self._log = logger
        self._remind_s = remind_s
        self._clock = clock
        self._since: float | None = None
        self._last_said = 0.0
        self._failures = 0
        self._error_class = ""

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, **extra: Any) -> None:
        """One more failure reaching the dependency; logged only when the outage starts
        (and as a reminder every `remind_s` while it lasts)."""
        at = self._clock()
        self._failures += 1
        fields = {"dependency": self.dependency, "error_class": _class_name(exc), "error": describe(exc), **extra}
        if self._since is None:
            self._since = self._last_said = at
            self._failures = 1
            self._error_class = fields["error_class"]
            self._log.warning(f"{self.dependency} unavailable; retrying until it is back", extra=fields)
        elif at - self._last_said >= self._remind_s:
            self._last_said = at
            self._log.warning(
                f"{self.dependency} still unavailable",
                extra={**fields, "duration_s": round(at - self._since, 3), "failures": self._failures},
            )
        else:
            self._log.debug(f"{self.dependency} still unavailable", extra=fields)

    def recovered(self) -> None:
        """The dependency answered; ends the outage if there is one (cheap otherwise)."""
        if self._since is None:
            return
        duration_s = self._clock() - self._since
        self._log.warning(
            f"{self.dependency} available again after {duration_s:.1f} s",
            extra={
                "dependency": self.dependency,
                "duration_s": round(duration_s, 3),
                "failures": self._failures,
                "error_class": self._error_class,
            },
        )
        self._since = None
        self._failures = 0


def _class_name(exc: BaseException) -> str:
    # The driver's class says more than SQLAlchemy's wrapper ("OperationalError" either way,
    # but "AdminShutdown" or "ConnectionTimeout" are worth reading).
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        return f"{type(exc).__name__}({type(exc.orig).__name__})"
    return type(exc).__name__


# One Outage per (resource, dependency) in the process. Keyed on the object every
# loop of a service shares (its Database, a gateway), so the scheduler, the stream
# consumer and the listener that all notice one PostgreSQL restart log it once;
# two services run in one test process keep theirs apart.
_trackers: weakref.WeakKeyDictionary[object, dict[str, Outage]] = weakref.WeakKeyDictionary()


def tracker(resource: object, dependency: str) -> Outage:
    """The process's one `Outage` of `dependency` as reached through `resource`."""
    by_name = _trackers.setdefault(resource, {})
    found = by_name.get(dependency)
    if found is None:
        found = by_name[dependency] = Outage(dependency)
    return found
