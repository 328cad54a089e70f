"""Paystack's list routes: offset pagination and the date window, read from the query string.

Paystack's pagination page (docs/api/pagination, and its doc-code samples
`api/pagination/offset-request` and `api/introduction/meta-format`): `page` and
`perPage` (default 50) in the query; the answer carries, beside `data`, a
`meta` of `total, skipped, perPage, page, pageCount`. Paystack's OpenAPI spec
(PaystackOSS/openapi) spells the transaction and transfer lists' parameter
`per_page`; both spellings are taken, `perPage` first. Records are listed
newest first, as in Paystack's List Transfers sample. Cursor pagination
(`use_cursor`, `next`, `previous`) is not simulated.

`from` and `to` bound the creation time; the OpenAPI spec types them
`date-time` (`2016-09-24T00:00:05.000Z`). The simulator also takes a bare date
(`2016-09-21`) as a whole UTC day, `from` from its first millisecond and `to`
through its last, and a time without a zone as UTC (its own choices).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from services.paystack_sim.errors import PaystackError

DEFAULT_PER_PAGE = 50
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    per_page: int
    page: int

    @property
    def skipped(self) -> int:
        return (self.page - 1) * self.per_page


@dataclass(frozen=True)
class Period:
    """Creation times from `since` through `until`, epoch milliseconds, both inclusive; None is unbounded."""

    since: int | None = None
    until: int | None = None

    def holds(self, epoch_ms: int) -> bool:
        return (self.since is None or epoch_ms >= self.since) and (self.until is None or epoch_ms <= self.until)


def _positive(query: Mapping[str, str], names: Sequence[str], default: int) -> int:
    for name in names:
        raw = query.get(name)
        if raw is None or raw == "":
            continue
        if not raw.isdigit() or int(raw) < 1:
            # Simulator's choice of words; Paystack documents no message for this.
            raise PaystackError(f"{name} must be a positive integer")
        return int(raw)
    return default


def window(query: Mapping[str, str]) -> Window:
    return Window(
        per_page=_positive(query, ("perPage", "per_page"), DEFAULT_PER_PAGE),
        page=_positive(query, ("page",), 1),
    )


def _moment(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise PaystackError(f"{name} must be a date or an ISO 8601 time") from None  # simulator's choice
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if name == "to" and _DAY.fullmatch(raw):
        moment += timedelta(days=1, milliseconds=-1)
    return int(moment.timestamp() * 1000)


def period(query: Mapping[str, str]) -> Period:
    return Period(since=_moment(query, "from"), until=_moment(query, "to"))


def paginate(records: Sequence[T], at: Window) -> tuple[list[T], dict[str, int]]:
    """One page of `records` (already filtered and ordered) and Paystack's `meta` for it."""
    total = len(records)
    meta = {
        "total": total,
        "skipped": at.skipped,
        "perPage": at.per_page,
        "page": at.page,
        "pageCount": math.ceil(total / at.per_page),
    }
    return list(records[at.skipped : at.skipped + at.per_page]), meta
