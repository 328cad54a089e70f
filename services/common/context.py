"""Per-call context shared by the server and client interceptors.

The server interceptor sets these for the duration of one incoming RPC; the
client interceptor reads them so that an outgoing call carries the same request
id and never outlives the incoming call's deadline; the log formatter reads the
request id. Servicers read the caller only through `caller` and `caller_or_none`.
"""

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from services.common.errors import LoginRequired


@dataclass(frozen=True)
class Principal:
    """Who is calling: set by the auth interceptor for an authenticated end user."""

    user_id: str
    session_id: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)


request_id: ContextVar[str] = ContextVar("request_id", default="")
# Absolute deadline of the incoming call on the time.monotonic() clock, or None.
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
# The authenticated end user, or None for an anonymous call (or a service).
principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


def remaining_seconds() -> float | None:
    """Seconds left before the incoming call's deadline; None outside a call or without one."""
    current = deadline.get()
    return None if current is None else current - time.monotonic()


def caller_or_none() -> Principal | None:
    """The authenticated end user of this call, or None (anonymous, or a GoFund service)."""
    return principal.get()


def caller() -> Principal:
    """The logged-in end user of this call; LoginRequired otherwise."""
    found = principal.get()
    if found is None:
        raise LoginRequired("log in first")
    return found
