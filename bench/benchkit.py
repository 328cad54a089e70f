"""What the whole-platform benchmarks share: a stack on free ports, users, one line per figure."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

from services.stack.stack import Stack, free_port_environment

PASSWORD = "bench password 1"  # noqa: S105 - a throwaway user on a throwaway stack


def line(name: str, value: str, target: str) -> None:
    print(f"{name}: {value} (target {target})", flush=True)


def stack_overrides(root: Path, **extra: str) -> dict[str, str]:
    """Every server on a free port, data in `root`; BENCH_LOG_LEVEL=INFO keeps the per-call log lines."""
    overrides = free_port_environment(root)
    overrides.update(
        {
            "GOFUND_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "GOFUND_AUTH_RATE_PER_MINUTE": "1000",
            **extra,
        }
    )
    return overrides


def user(stack: Stack) -> tuple[str, str]:
    """A registered, logged-in user: (user id, session token)."""
    name = "b" + uuid.uuid4().hex[:12]
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.identity_port}") as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        created = identity.CreateUser(
            identity_service_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD)
        )
        token = identity.CreateSession(identity_service_pb2.CreateSessionRequest(login=name, password=PASSWORD)).token
    return created.user.id, token
