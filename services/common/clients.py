"""Outgoing gRPC: one channel per target per process, every call with a deadline.

- A call's timeout is the smaller of its own budget (the caller's `timeout`, or
  `GOFUND_CALL_TIMEOUT_MS` for unary calls) and what is left of the incoming
  call's deadline minus a margin. A spent budget fails at once with
  DEADLINE_EXCEEDED instead of sending a call that cannot finish in time.
- Retries happen only on UNAVAILABLE and only for methods the contract marks
  idempotent (`idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT); the retry
  policy is gRPC's own, set through the channel's service config.
- Each call carries the request id and the service credential.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2

from services.common import context
from services.common.config import Settings
from services.common.headers import REQUEST_ID_HEADER, SERVICE_CREDENTIAL_HEADER

_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_IDEMPOTENT_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


def retry_service_config(services: Iterable[descriptor.ServiceDescriptor]) -> str:
    """gRPC service config JSON giving every idempotent method of `services` a retry policy."""
    names = [
        {"service": service.full_name, "method": method.name}
        for service in services
        for method in service.methods
        if method.GetOptions().idempotency_level in _IDEMPOTENT_LEVELS
    ]
    # Round robin over every address of the target (replicas listed with the
    # ipv4: scheme, or a DNS name's records), skipping those whose health
    # service is not SERVING, so a replica that drains stops getting calls.
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [],
    }
    if names:
        config["methodConfig"].append({"name": names, "retryPolicy": _RETRY_POLICY})
    return json.dumps(config)


def _deadline_expired() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(),
        details="no time left of the incoming call's deadline",
    )


class _OutgoingCall:
    """Shared logic of the unary and stream client interceptors."""

    def __init__(self, service_token: str, default_timeout_s: float, margin_s: float) -> None:
        self._service_token = service_token
        self._default_timeout_s = default_timeout_s
        self._margin_s = margin_s

    def details(self, details: grpc.aio.ClientCallDetails, *, streaming: bool) -> grpc.aio.ClientCallDetails:
        timeout = details.timeout
        if timeout is None and not streaming:
            timeout = self._default_timeout_s
        remaining = context.remaining_seconds()
        if remaining is not None:
            left = remaining - self._margin_s
            if left <= 0:
                raise _deadline_expired()
            timeout = left if timeout is None else min(timeout, left)
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata[SERVICE_CREDENTIAL_HEADER] = self._service_token
        request_id = context.request_id.get()
        if request_id and REQUEST_ID_HEADER not in metadata:
            metadata[REQUEST_ID_HEADER] = request_id
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class _UnaryInterceptor(_OutgoingCall, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details, streaming=False), request)


class _StreamInterceptor(_OutgoingCall, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details, streaming=True), request)


class Channels:
    """The process's outgoing channels, created on first use and reused."""

    def __init__(
        self,
        service_token: str,
        *,
        default_timeout_ms: int,
        deadline_margin_ms: int,
    ) -> None:
        self._interceptor_args = (service_token, default_timeout_ms / 1000, deadline_margin_ms / 1000)
        self._channels: dict[tuple[str, frozenset[str]], grpc.aio.Channel] = {}

    def get(self, target: str, services: Iterable[descriptor.ServiceDescriptor]) -> grpc.aio.Channel:
        """The channel to `target` for `services` (their idempotent methods get retries)."""
        services = list(services)
        key = (target, frozenset(s.full_name for s in services))
        channel = self._channels.get(key)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.enable_retries", 1),
                    ("grpc.service_config", retry_service_config(services)),
                    ("grpc.keepalive_time_ms", 30_000),
                    # gRPC's default reconnect backoff grows to two minutes, so a
                    # dependency back after a short outage would stay unreachable
                    # for long after it returns; inside one deployment, retry often.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 2_000),
                ],
                interceptors=[
                    _UnaryInterceptor(*self._interceptor_args),
                    _StreamInterceptor(*self._interceptor_args),
                ],
            )
            self._channels[key] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def open_channels(settings: Settings, stack: AsyncExitStack) -> Channels:
    """The process's channels, closed with the service."""
    channels = Channels(
        settings.service_token,
        default_timeout_ms=settings.call_timeout_ms,
        deadline_margin_ms=settings.deadline_margin_ms,
    )
    stack.push_async_callback(channels.close)
    return channels
