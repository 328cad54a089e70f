"""Prometheus metrics, defined once, and the small HTTP server that exposes them.

Every service gets, from `ServiceRunner`, the RPC metrics the call-context
interceptor records:

- `gofund_rpc_requests_total{service,method,code}`: calls finished, by final
  status code (a client that went away counts as CANCELLED);
- `gofund_rpc_duration_seconds{service,method}`: how long calls took, 1 ms to
  10 s; health checks are counted but not timed (Envoy probes every second and
  their latency says nothing about the service);
- `gofund_rpc_in_flight_streams{service,method}`: server streams open now
  (ledger's balance watchers, goals' progress watchers).

Only methods a server registered get a `method` label, so callers cannot grow
the label set; reflection (a bidirectional stream) is not recorded.

A service adds gauges of its own (payments' webhook backlog) through
`Service.collectors`, and keeps them current with a background loop made by
`every`. Not a collector computing them at scrape time: `collect` is
synchronous and runs on the event loop, so a database query there would stall
every RPC of the process for as long as it took; and querying before each
scrape would tie the scrape to the store's latency and multiply the query by
the number of scrapers. A loop refreshing a Gauge keeps the query off the scrape
path, bounds its cost (see `every`) and lets a scrape answer from memory even
while the store is away; the price is figures up to one interval old.

Each runner has its own `CollectorRegistry`, not prometheus_client's global
one, so several services in one process (the tests) never clash, and the
process-wide collectors (GC, process) that the default registry carries are not
served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("gofund.metrics")

# From a cached token check (~1 ms) to a call that waits out a slow dependency
# (10 s); a call above the last bucket lands in +Inf.
RPC_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# A refresh loop waits at least this many times its last refresh's duration, so a
# query that grows with what it counts never takes more than 1/20 of the time.
REFRESH_DUTY_DIVISOR = 20
# How long shutdown waits for a refresh under way (normally a few milliseconds).
SHUTDOWN_WAIT_S = 2.0


class RpcMetrics:
    """The interceptor's metrics for one service, in the runner's registry."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self._service = service
        self._requests = Counter(
            "gofund_rpc_requests",
            "RPCs finished, by method and final status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            "gofund_rpc_duration_seconds",
            "How long RPCs took, from the interceptor taking them to their final status (health checks excluded).",
            ["service", "method"],
            buckets=RPC_DURATION_BUCKETS,
            registry=registry,
        )
        self._in_flight_streams = Gauge(
            "gofund_rpc_in_flight_streams",
            "Server-streaming RPCs open now.",
            ["service", "method"],
            registry=registry,
        )
        # Each call's labelled child, looked up once: `labels()` costs a few
        # microseconds per call, a dict lookup a tenth of one.
        self._counters: dict[tuple[str, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, Gauge] = {}

    def finished(self, method: str, code: str, seconds: float | None) -> None:
        """Count a finished call; `seconds` None leaves it out of the latency histogram."""
        key = (method, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._requests.labels(self._service, method, code)
        counter.inc()
        if seconds is not None:
            histogram = self._histograms.get(method)
            if histogram is None:
                histogram = self._histograms[method] = self._duration.labels(self._service, method)
            histogram.observe(seconds)

    def stream_opened(self, method: str) -> None:
        self._stream_gauge(method).inc()

    def stream_closed(self, method: str) -> None:
        self._stream_gauge(method).dec()

    def _stream_gauge(self, method: str) -> Gauge:
        gauge = self._gauges.get(method)
        if gauge is None:
            gauge = self._gauges[method] = self._in_flight_streams.labels(self._service, method)
        return gauge


class WebhookBacklog:
    """Payments' outbox: events waiting to be applied, events given up on, and
    how long the oldest waiting one has waited. Every payments replica reports
    the same store-wide figures: aggregate them with max, not sum."""

    def __init__(self) -> None:
        # Not registered here: the runner registers `collectors` in its registry.
        self._events = Gauge(
            "gofund_webhook_events",
            "Stored Paystack webhook events not yet applied: pending (to be retried) or parked (for an operator).",
            ["status"],
            registry=None,
        )
        self._oldest_pending = Gauge(
            "gofund_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook event when last counted; 0 when none is pending.",
            registry=None,
        )
        self.collectors = (self._events, self._oldest_pending)

    def set(self, *, pending: int, parked: int, oldest_pending_age_s: float) -> None:
        self._events.labels("pending").set(pending)
        self._events.labels("parked").set(parked)
        self._oldest_pending.set(oldest_pending_age_s)


class PostingBatches:
    """The ledger's group commit: how many posting requests each database transaction wrote."""

    BUCKETS = (1, 2, 4, 8, 16, 32, 64)

    def __init__(self) -> None:
        self._sizes = Histogram(
            "gofund_ledger_batch_requests",
            "Posting requests written per database transaction by this ledger process.",
            buckets=self.BUCKETS,
            registry=None,
        )
        self.collectors = (self._sizes,)

    def observe(self, requests: int) -> None:
        self._sizes.observe(requests)


class ReconciliationGauges:
    """The scheduled reconciliation's last run, as stored (every payments replica reports
    the same store-wide figures: aggregate them with max)."""

    # Every kind is reported, 0 included, so an alert on one kind has a series to watch.
    KINDS = (
        "OUTFLOW_ABOVE_INFLOW", "RELEASED_AND_REFUNDED", "CONTRIBUTION_WITHOUT_CAPTURE",
        "CAPTURE_WITHOUT_CONTRIBUTION", "CHARGE_NOT_CAPTURED", "OUTFLOW_NOT_IN_LEDGER", "LEDGER_WITHOUT_PAYSTACK",
        "ESCROW_DIFFERS", "RAISED_DIFFERS", "STATUS_DIFFERS", "RESERVATION_UNRESOLVED", "NEEDS_OPERATOR",
        "LEDGER_UNBALANCED", "CONTRIBUTION_STATUS_DIFFERS",
    )  # fmt: skip

    def __init__(self) -> None:
        self._drifts = Gauge(
            "gofund_reconciliation_drifts",
            "Drift the last scheduled reconciliation found that the run before it found too, by kind.",
            ["kind"],
            registry=None,
        )
        self._last_run = Gauge(
            "gofund_reconciliation_last_run_age_seconds", "Seconds since the last scheduled run.", registry=None
        )
        self._last_clean = Gauge(
            "gofund_reconciliation_last_clean_age_seconds",
            "Seconds since the last scheduled run that found no drift at all; -1 if none has yet.",
            registry=None,
        )
        self.collectors = (self._drifts, self._last_run, self._last_clean)

    def set(self, *, drifts: dict[str, int], last_run_age_s: float, last_clean_age_s: float | None) -> None:
        for kind in (*self.KINDS, *(k for k in drifts if k not in self.KINDS)):
            self._drifts.labels(kind).set(drifts.get(kind, 0))
        self._last_run.set(last_run_age_s)
        self._last_clean.set(-1 if last_clean_age_s is None else last_clean_age_s)


def every(interval_s: float, refresh: Callable[[], Awaitable[None]]) -> Callable[[], Coroutine[Any, Any, None]]:
    """A background loop (for `Service.background`) calling `refresh` every
    `interval_s`, or less often if a refresh is slow (`REFRESH_DUTY_DIVISOR`).
    A failed refresh is logged and tried again; the gauges keep their last values."""

    async def loop() -> None:
        while True:
            started = time.monotonic()
            attempt = asyncio.ensure_future(refresh())
            try:
                await asyncio.shield(attempt)
            except asyncio.CancelledError:
                await _let_finish(attempt)
                raise
            except Exception as exc:
                log.warning("metrics refresh failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            spent = time.monotonic() - started
            await asyncio.sleep(max(interval_s, spent * REFRESH_DUTY_DIVISOR))

    return loop


async def _let_finish(attempt: asyncio.Future[None]) -> None:
    """On shutdown, let a refresh under way end rather than cut it off: pymongo,
    cancelled while it opens a connection, can leak the socket or swallow the
    cancellation (and a loop that never sees it never stops)."""
    done, _ = await asyncio.wait([attempt], timeout=SHUTDOWN_WAIT_S)
    if not done:
        attempt.cancel()
    elif not attempt.cancelled():
        attempt.exception()  # retrieved: a failure at shutdown is not worth a warning


class MetricsServer:
    """`GET /metrics` on its own port, in the service's event loop (aiohttp), so
    scrapes need no thread and stop with the service."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        # No access log: a scrape every few seconds would drown the service's own lines.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the bound port. Raises OSError if it cannot."""
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except BaseException:
            await self._runner.cleanup()
            raise
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self._registry))
        # CONTENT_TYPE_LATEST carries a charset parameter, which aiohttp's
        # content_type setter refuses; set the header as is.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
