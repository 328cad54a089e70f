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
# Codes with which a peer service says "not reachable in time", not "no".
_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def dependency_down(exc: BaseException) -> bool:
    """Whether `exc` means a dependency is away (retry later), not that our code or data is wrong."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _UNREACHABLE_CODES
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
