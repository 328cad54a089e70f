"""Container health check: exit 0 if the gRPC health service on this container says SERVING.

    python /opt/gofund/healthcheck.py PORT [SERVICE]

Asks `grpc.health.v1.Health/Check` on 127.0.0.1:PORT (the whole server, or one
service by its full name) with a 2-second deadline. Exit 1 with one line on
stderr otherwise: NOT_SERVING (a draining server, so Envoy and compose stop
sending to it), or the call's error (not listening yet, deadline exceeded).
The image copies this file to /opt/gofund/healthcheck.py.
"""

from __future__ import annotations

import os
import sys

# Before grpc is imported: its C core would print its own lines for a refused connection.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEADLINE_S = 2.0


def check(port: int, service: str = "") -> str | None:
    """None if SERVING, else what is wrong in a few words."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE_S
            )
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return None


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not argv[1].isdigit():
        print("usage: healthcheck.py PORT [SERVICE]", file=sys.stderr)
        return 2
    problem = check(int(argv[1]), argv[2] if len(argv) == 3 else "")
    if problem is not None:
        print(f"127.0.0.1:{argv[1]}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
