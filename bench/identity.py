"""Identity benchmarks: figures and ratios measured side by side in one run. Asserts nothing.

Starts a durable PostgreSQL, an identity server (`gofund serve identity`) and,
as the yardstick, a bare grpc.aio server whose only method returns an empty
reply, each in its own process; the clients run here. Prints one line per
figure: `name: value (target ...)`.

  make bench                              # with the ledger's, full runs
  make bench BENCH_FLAGS=--quick          # short runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from benchkit import line
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

from services.common.clients import Channels
from services.common.config import Settings
from services.common.db import ensure_database, upgrade
from services.stack import embedded

CONCURRENCY = 16
EMPTY_SERVER = """
import asyncio, sys, grpc
async def empty(request, context):
    return b""
async def main():
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(empty, request_deserializer=None, response_serializer=None)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Empty", {"Call": handler})])
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


async def measure(call: Callable[[], Awaitable[Any]], seconds: float) -> tuple[float, float]:
    """(calls per second with CONCURRENCY callers, p50 latency in ms of one caller alone)."""
    for _ in range(50):
        await call()
    latencies = []
    for _ in range(300):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    done = 0
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await call()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return done / (time.monotonic() - started), statistics.median(latencies) * 1000


async def main(quick: bool) -> None:
    seconds = 3.0 if quick else 10.0
    root = Path(tempfile.mkdtemp(prefix="gofund-bench-identity-"))
    pg_port, identity_port, empty_port = embedded.free_port(), embedded.free_port(), embedded.free_port()
    postgres = embedded.postgres(root / "pg", pg_port, root / "postgres.log", durable=True)
    postgres.start()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/identity"
    ensure_database(url)
    upgrade("identity", url)
    env = {
        **os.environ,
        "GOFUND_IDENTITY_DATABASE_URL": url,
        "GOFUND_IDENTITY_PORT": str(identity_port),
        "GOFUND_LOG_LEVEL": "WARNING",
    }
    identity = embedded.gofund_service("identity", identity_port, env, root / "identity.log")
    identity.start()
    empty = subprocess.Popen([sys.executable, "-c", EMPTY_SERVER, str(empty_port)])
    channels = Channels(Settings.model_fields["service_token"].default, default_timeout_ms=30_000, deadline_margin_ms=0)
    try:
        await asyncio.sleep(1.0)
        empty_channel = grpc.aio.insecure_channel(f"127.0.0.1:{empty_port}")
        empty_call = empty_channel.unary_unary("/bench.Empty/Call")
        public_channel = grpc.aio.insecure_channel(f"127.0.0.1:{identity_port}")
        public = identity_service_pb2_grpc.IdentityServiceStub(public_channel)
        internal_service = identity_service_pb2.DESCRIPTOR.services_by_name["IdentityInternalService"]
        internal = identity_service_pb2_grpc.IdentityInternalServiceStub(
            channels.get(f"127.0.0.1:{identity_port}", [internal_service])
        )
        name = "bench" + uuid.uuid4().hex[:8]
        await public.CreateUser(
            identity_service_pb2.CreateUserRequest(
                email=f"{name}@example.com", username=name, password="bench password 1"
            )
        )
        token = (
            await public.CreateSession(
                identity_service_pb2.CreateSessionRequest(login=name, password="bench password 1")
            )
        ).token
        authenticate = identity_service_pb2.AuthenticateRequest(token=token)
        me = identity_service_pb2.GetCurrentUserRequest()
        metadata = (("authorization", f"Bearer {token}"),)

        empty_rate, empty_p50 = await measure(lambda: empty_call(b""), seconds)
        auth_rate, auth_p50 = await measure(lambda: internal.Authenticate(authenticate), seconds)
        me_rate, me_p50 = await measure(lambda: public.GetCurrentUser(me, metadata=metadata), seconds)
        line("empty_handler_per_s", f"{empty_rate:.0f}", "-")
        line("empty_handler_p50_ms", f"{empty_p50:.3f}", "-")
        line("authenticate_cached_per_s", f"{auth_rate:.0f}", "-")
        line("authenticate_cached_p50_ms", f"{auth_p50:.3f}", "-")
        line("get_current_user_per_s", f"{me_rate:.0f}", "-")
        line("get_current_user_p50_ms", f"{me_p50:.3f}", "-")
        line("authenticate_cached_vs_empty_handler", f"{auth_rate / empty_rate:.2f}", ">= 0.5")
        line("get_current_user_vs_empty_handler", f"{me_rate / empty_rate:.2f}", "-")
        await empty_channel.close()
        await public_channel.close()
    finally:
        await channels.close()
        empty.terminate()
        empty.wait()
        identity.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    asyncio.run(main(parser.parse_args().quick))
