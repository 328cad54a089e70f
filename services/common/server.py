"""The one way to run a GoFund gRPC server.

A service describes itself with a `build` coroutine that opens its resources on
an AsyncExitStack (closed in reverse on shutdown) and returns a `Service`: its
servicers, its error table and any background loops. `ServiceRunner` adds what
every server has — the call-context and request-validation interceptors (and
the key its page tokens are signed with), grpc.health.v1, reflection,
Prometheus metrics on a port of their own — binds the ports and handles
shutdown: health NOT_SERVING first, a drain pause so load balancers notice,
then open streams are ended (UNAVAILABLE: reconnect elsewhere) and in-flight
unary calls get a grace period. `run` is the process entry point
(`gofund serve <service>`): it reads the settings, reports a configuration or
start-up problem as one line, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from services.common import log as gofund_log
from services.common import paging
from services.common.auth import Authenticator, Authorizer, AuthPolicy
from services.common.config import ConfigError, Settings, StartupError, load_settings
from services.common.errors import ErrorTable
from services.common.interceptors import CallContextInterceptor, RequestValidationInterceptor
from services.common.metrics import MetricsServer, RpcMetrics

log = logging.getLogger("gofund.server")
# Where a service serves metrics when GOFUND_METRICS_PORT is unset: its gRPC port + this.
METRICS_PORT_OFFSET = 1000
# How long stopping waits for each background loop to end once cancelled.
BACKGROUND_STOP_S = 5.0


@dataclass
class Service:
    """What a service's `build` returns."""

    name: str
    errors: ErrorTable
    # (add_XServicer_to_server, servicer) pairs from the generated code.
    servicers: Sequence[tuple[Callable[[Any, grpc.aio.Server], None], object]]
    # The services' descriptors, for health and reflection.
    descriptors: Sequence[descriptor.ServiceDescriptor]
    # Who may call what (internal vs public services, anonymous methods).
    auth: AuthPolicy | None = None
    # Resolves user tokens; identity answers locally, the others ask identity
    # (and cache the answers, evicted by identity's revocation stream).
    authenticator: Authenticator | None = None
    # Long-running loops (outbox processor, scheduler); cancelled on shutdown.
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=tuple)
    # Metrics of its own (unregistered gauges, see services.common.metrics),
    # served with the RPC metrics; a background loop keeps them current.
    collectors: Sequence[Collector] = field(default_factory=tuple)


Build = Callable[[Settings, AsyncExitStack], Awaitable[Service]]


class ServiceRunner:
    """Starts one service in this event loop; used by `run` and by the tests."""

    def __init__(self, build: Build, settings: Settings, *, port: int, metrics_port: int | None = None) -> None:
        self._build = build
        self._settings = settings
        self._requested_port = port
        # GOFUND_METRICS_PORT unless given (`run` gives the gRPC port + 1000);
        # 0: any free port, so runners inside one process (the tests) never collide.
        self._requested_metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        self._stack = AsyncExitStack()
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: CallContextInterceptor | None = None
        self.port = 0
        self.metrics_port = 0
        # The service's metrics; Prometheus reads them from `metrics_port`.
        self.registry = CollectorRegistry()
        self.service: Service | None = None

    async def start(self) -> int:
        """Open resources, bind and start serving; returns the bound port."""
        try:
            self.service = service = await self._build(self._settings, self._stack)
            authorize = None
            if service.auth is not None:
                if service.authenticator is None:
                    raise StartupError(f"{service.name}: an auth policy needs an authenticator")
                authorize = Authorizer(service.auth, self._settings.service_token, service.authenticator)
            for collector in service.collectors:
                self.registry.register(collector)
            await self._serve_metrics(service.name)
            metrics = RpcMetrics(service.name, self.registry)
            self._calls = CallContextInterceptor(
                service.errors,
                authorize,
                metrics,
                paging.paging_key(self._settings.service_token, service.name),
            )
            server = grpc.aio.server(
                # The outer one maps what the inner one refuses, after the caller is known.
                interceptors=[self._calls, RequestValidationInterceptor()],
                # Without this a second process could bind the same port and
                # share its traffic silently.
                options=[
                    ("grpc.so_reuseport", 0),
                    # Our clients ping idle connections every 30 s (long streams sit
                    # idle); gRPC servers by default answer pings more often than
                    # every 5 minutes with GOAWAY too_many_pings.
                    ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    # Calls that arrived before the server asked for them wait in gRPC's
                    # own queue, and beyond 1,000 of them (its default) it cancels some:
                    # of 2,000 watchers opening one viral goal at once, about 1 in 8
                    # came back CANCELLED (a bare grpc.aio server does the same). A burst
                    # of pages is queued and served instead; each waiting call is small.
                    ("grpc.server.max_pending_requests", 20_000),
                    ("grpc.server.max_pending_requests_hard_limit", 40_000),
                ],
            )
            for add_to_server, servicer in service.servicers:
                add_to_server(servicer, server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            names = [d.full_name for d in service.descriptors]
            reflection.enable_server_reflection(
                [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
                server,
            )
            address = f"{self._settings.bind_host}:{self._requested_port}"
            try:
                self.port = server.add_insecure_port(address)
            except RuntimeError:
                raise self._cannot_listen(service.name) from None
            await server.start()
            self._server = server
            for name in ("", *names):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
            self._tasks = [
                asyncio.create_task(loop(), name=f"{service.name}: {getattr(loop, '__qualname__', 'background')}")
                for loop in service.background
            ]
        except BaseException:
            await self._stack.aclose()
            raise
        log.info(
            "serving",
            extra={"service": service.name, "address": address, "port": self.port, "metrics_port": self.metrics_port},
        )
        return self.port

    async def _serve_metrics(self, name: str) -> None:
        """GET /metrics on its own port. Stopped with the service's resources, after
        the gRPC server, so the last counts can still be read while it drains."""
        port = self._requested_metrics_port
        address = f"{self._settings.bind_host}:{port}"
        metrics_server = MetricsServer(self.registry)
        try:
            self.metrics_port = await metrics_server.start(self._settings.bind_host, port)
        except (OSError, OverflowError):  # in use, not ours to bind, or past 65535
            if self._requested_port and not _bindable(self._settings.bind_host, self._requested_port):
                # A second copy of a running service: name the port it is after first.
                raise self._cannot_listen(name) from None
            raise StartupError(
                f"{name}: cannot serve metrics on {address}: the port is in use or not available"
                "; set GOFUND_METRICS_PORT to move it"
            ) from None
        self._stack.push_async_callback(metrics_server.stop)

    def _cannot_listen(self, name: str) -> StartupError:
        address = f"{self._settings.bind_host}:{self._requested_port}"
        return StartupError(f"{name}: cannot listen on {address}: the port is in use or not available")

    async def stop(self) -> None:
        """Health NOT_SERVING, drain pause, graceful stop, then close resources."""
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            if self._settings.shutdown_drain_ms:
                await asyncio.sleep(self._settings.shutdown_drain_ms / 1000)
            if self._calls is not None:
                self._calls.end_streams()  # they would hold the stop for its whole grace
            await self._server.stop(self._settings.shutdown_grace_ms / 1000)
            self._server = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A loop that swallows its cancellation (a library may turn it into an
            # error of its own) must not keep the process from stopping.
            _, stuck = await asyncio.wait(self._tasks, timeout=BACKGROUND_STOP_S)
            for task in stuck:
                log.error("a background loop did not stop when cancelled", extra={"task": task.get_name()})
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("a background loop failed", exc_info=task.exception())
        self._tasks = []
        await self._stack.aclose()


def _bindable(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now (a probe; nothing is kept)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def metrics_port_for(settings: Settings, grpc_port: int) -> int:
    """A service process's metrics port: GOFUND_METRICS_PORT, or else its gRPC
    port + 1000 (identity 51051 ... payments 51054; a replica on 50151, 51151)."""
    return settings.metrics_port or (grpc_port + METRICS_PORT_OFFSET if grpc_port else 0)


def run(name: str, build: Build) -> None:
    """Process entry point for one service."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"gofund {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    gofund_log.configure(name, settings.log_level)
    try:
        asyncio.run(_serve_until_signalled(build, settings, getattr(settings, f"{name}_port")))
    except StartupError as exc:
        print(f"gofund {name}: {exc}", file=sys.stderr)
        sys.exit(1)


async def _serve_until_signalled(build: Build, settings: Settings, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = ServiceRunner(build, settings, port=port, metrics_port=metrics_port_for(settings, port))
    await runner.start()
    await stop.wait()
    log.info("shutting down")
    await runner.stop()
