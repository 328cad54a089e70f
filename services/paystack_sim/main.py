"""Start and stop the simulator: in this event loop for tests, or as a process (`gofund paystack-sim`).

The simulator binds 127.0.0.1 only. The socket is bound before anything is
served, so `authorization_url` names the port actually bound (port 0 in tests).
On stop it stops taking requests, cancels webhook attempts and settlements
still waiting (the state keeps them; the next start resumes them), closes its
HTTP client and writes its state a last time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

import httpx
from aiohttp import web

from services.common import log as gofund_log
from services.common.config import Settings, StartupError
from services.paystack_sim.app import build_app
from services.paystack_sim.domain import Paystack
from services.paystack_sim.state import STATE_FILE, State
from services.paystack_sim.timers import Timers
from services.paystack_sim.webhooks import WebhookDispatcher

log = logging.getLogger("gofund.paystack_sim")

# Where payers' browsers reach the checkout (authorization_url). The simulator
# binds GOFUND_BIND_HOST: loopback on a laptop, 0.0.0.0 in a container.
HOST = "127.0.0.1"
# In-flight requests get this long to finish when the simulator stops.
_SHUTDOWN_TIMEOUT_S = 5.0


class Simulator:
    """A running simulator; `stop` ends it."""

    def __init__(
        self, runner: web.AppRunner, port: int, timers: Timers, client: httpx.AsyncClient, state: State
    ) -> None:
        self._runner = runner
        self._timers = timers
        self._client = client
        self._state = state
        self._stopped = False
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def state_path(self) -> Path:
        return self._state.path

    async def stop(self) -> None:
        """Stop serving and delivering; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        await self._runner.cleanup()
        await self._timers.close()
        await self._client.aclose()
        self._state.compact()
        self._state.close()
        log.info("paystack simulator stopped", extra={"port": self.port})


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A restart must not wait for the last run's connections to leave TIME_WAIT.
    # (On Linux this still refuses a port another process is listening on.)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {host}:{port} ({exc.strerror}); GOFUND_PAYSTACK_SIM_PORT moves it"
        ) from None
    sock.setblocking(False)
    return sock


async def start(settings: Settings, *, port: int = 0) -> Simulator:
    """Serve on 127.0.0.1:`port` (0: any free port) with the state in `settings.data_dir`."""
    state = State.load(settings.data_dir / STATE_FILE)
    # Fold what the last run journaled into the snapshot (and cut a tail a kill tore) before serving.
    state.compact()
    sock = _listen(settings.bind_host, port)
    bound_port: int = sock.getsockname()[1]
    timers = Timers()
    client = httpx.AsyncClient()
    webhooks = WebhookDispatcher(
        state,
        timers,
        client,
        url=settings.paystack_webhook_url,
        secret_key=settings.paystack_secret_key,
        retry_base_ms=settings.paystack_sim_retry_base_ms,
    )
    paystack = Paystack(
        state, webhooks, timers, settle_ms=settings.paystack_sim_settle_ms, base_url=f"http://{HOST}:{bound_port}"
    )
    app = build_app(paystack, webhooks, secret_key=settings.paystack_secret_key)
    runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        await client.aclose()
        sock.close()
        raise
    webhooks.resume()
    paystack.resume_settlements()
    log.info(
        "paystack simulator serving",
        extra={"port": bound_port, "webhook_url": settings.paystack_webhook_url, "state": str(state.path)},
    )
    return Simulator(runner, bound_port, timers, client, state)


def run(settings: Settings) -> None:
    """Process entry point: serve on GOFUND_PAYSTACK_SIM_PORT until SIGTERM or SIGINT."""
    gofund_log.configure("paystack-sim", settings.log_level)
    try:
        asyncio.run(_serve_until_signalled(settings))
    except StartupError as exc:
        print(f"gofund paystack-sim: {exc}", file=sys.stderr)
        sys.exit(1)


async def _serve_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = await start(settings, port=settings.paystack_simulator_port)
    await stop.wait()
    log.info("shutting down")
    await simulator.stop()
