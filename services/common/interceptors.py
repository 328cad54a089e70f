"""Server interceptors, written once and used by every service.

`CallContextInterceptor` wraps each unary and server-streaming handler:
- takes `x-request-id` from the caller (Envoy generates one) or makes one;
- records the incoming deadline for outgoing calls, and refuses a call whose
  deadline has already passed;
- maps domain errors through the service's ErrorTable, and anything unexpected
  to INTERNAL with a generic message (logged with the request id);
- logs one JSON line per call with method, code and duration;
- counts and times each call by its final code, and counts the server
  streams open (services.common.metrics).

`RequestValidationInterceptor` sits inside it and refuses, before any handler
runs, a request carrying a control character in any string field (see
`control_character_violations`), or bytes that are not the request message at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
import psycopg
import pymongo.errors
from google.protobuf import message as protobuf_message
from google.protobuf.descriptor import FieldDescriptor
from sqlalchemy.exc import DBAPIError

from services.common import context, paging
from services.common.context import Principal
from services.common.errors import (
    DomainError,
    ErrorTable,
    FieldViolation,
    ValidationFailed,
    internal_status,
    make_status,
)
from services.common.headers import REQUEST_ID_HEADER
from services.common.metrics import RpcMetrics

log = logging.getLogger("gofund.rpc")

# Given the method path and the call's metadata, the caller's principal (None
# for a service or an anonymous caller), or a DomainError refusing the call.
Authorize = Callable[[str, dict[str, Any]], Awaitable[Principal | None]]

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"

# Status codes a dependency's failure is passed on with; anything else from a
# dependency is our bug and becomes INTERNAL.
_PASSED_ON_CODES = {
    grpc.StatusCode.UNAVAILABLE: "DEPENDENCY_UNAVAILABLE",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    grpc.StatusCode.CANCELLED: "CANCELLED",
}


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str:
    for item in details.invocation_metadata or ():
        if item.key == key:
            return str(item.value)
    return ""


def _bytes_or(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A stream may yield already-serialized bytes: one change fanned out to many
    watchers is then serialized once, not once per watcher."""

    def serialize(message: Any) -> bytes:
        return message if isinstance(message, bytes) else serializer(message)

    return serialize


def _shutting_down(domain: str) -> grpc.Status:
    return make_status(grpc.StatusCode.UNAVAILABLE, "the server is stopping; reconnect", "SHUTTING_DOWN", domain)


def store_unavailable(exc: Exception) -> bool:
    """A lost or refused connection to PostgreSQL or MongoDB: worth a retry, not a bug."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, psycopg.OperationalError)
    return isinstance(exc, psycopg.OperationalError | pymongo.errors.ConnectionFailure)


class CallContextInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        errors: ErrorTable,
        authorize: Authorize | None = None,
        metrics: RpcMetrics | None = None,
        page_token_key: bytes | None = None,
    ) -> None:
        self._errors = errors
        self._authorize = authorize
        self._metrics = metrics
        # Signs and checks this service's page tokens (services.common.paging).
        self._page_token_key = page_token_key
        # The tasks serving server streams, ended by end_streams() when the server stops.
        self._streams: set[asyncio.Task[Any]] = set()
        self._ending_streams = False

    def end_streams(self) -> None:
        """End every open server stream our handlers yield (every watch; not grpc's own
        health Watch, which writes through the context) with UNAVAILABLE (a stopping server).

        A watch stream never finishes on its own, so a graceful stop would wait
        its whole grace period for it and then cancel it anyway; told at once, the
        client reconnects to another replica (resuming after its last seq) while
        unary calls still get the grace. Streams opened from now on are refused.
        """
        self._ending_streams = True
        for task in self._streams:
            task.cancel()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        incoming_request_id = _metadata_value(details, REQUEST_ID_HEADER)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, incoming_request_id, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, incoming_request_id, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=_bytes_or(handler.response_serializer),
            )
        return handler  # client- and bidi-streaming (reflection) pass through untouched

    def _wrap_unary(self, method: str, incoming_request_id: str, behaviour: Any) -> Any:
        async def unary(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            started = self._enter(incoming_request_id, ctx)
            cancelled = False
            try:
                await self._refuse_if_expired(ctx)
                await self._identify(method, ctx)
                return await behaviour(request, ctx)
            except Exception as exc:
                await self._abort(ctx, exc)
            except asyncio.CancelledError:
                cancelled = True  # the client went away; grpc cancels the handler
                raise
            finally:
                self._finish(method, ctx, started, cancelled=cancelled)

        return unary

    def _wrap_stream(self, method: str, incoming_request_id: str, behaviour: Any) -> Any:
        if not inspect.isasyncgenfunction(behaviour):
            # A stream written through ctx.write (grpc's own health Watch) is a
            # coroutine, not a generator: wrapped like a unary handler.
            return self._wrap_unary(method, incoming_request_id, behaviour)

        async def stream(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = self._enter(incoming_request_id, ctx)
            cancelled = False
            task = asyncio.current_task()
            if task is not None:
                self._streams.add(task)
            if self._metrics is not None:
                self._metrics.stream_opened(method)
            try:
                if self._ending_streams:
                    await ctx.abort_with_status(_shutting_down(self._errors.domain))
                await self._refuse_if_expired(ctx)
                await self._identify(method, ctx)
                # Closed with this wrapper, so the handler's own clean-up runs
                # when the client goes away, not when the generator is collected.
                async with contextlib.aclosing(behaviour(request, ctx)) as messages:
                    async for message in messages:
                        yield message
            except Exception as exc:
                await self._abort(ctx, exc)
            except asyncio.CancelledError:
                if not self._ending_streams:
                    cancelled = True  # the client went away: grpc cancels the handler
                    raise
                if task is not None:
                    task.uncancel()  # ended on purpose: answered, not cancelled
                await ctx.abort_with_status(_shutting_down(self._errors.domain))
            except GeneratorExit:
                # The client went away while the handler waited to write: grpc
                # drops this generator (closed with GeneratorExit).
                cancelled = True
                raise
            finally:
                self._streams.discard(task)
                if self._metrics is not None:
                    self._metrics.stream_closed(method)
                self._finish(method, ctx, started, cancelled=cancelled)

        return stream

    def _enter(self, incoming_request_id: str, ctx: grpc.aio.ServicerContext) -> float:
        started = time.monotonic()
        context.request_id.set(incoming_request_id or uuid.uuid4().hex)
        paging.signing_key.set(self._page_token_key)
        remaining = ctx.time_remaining()
        context.deadline.set(None if remaining is None else started + remaining)
        return started

    async def _identify(self, method: str, ctx: grpc.aio.ServicerContext) -> None:
        """Who is calling (see services.common.auth); refuses the call if it may not be made."""
        context.principal.set(None)
        if self._authorize is not None:
            metadata = {item.key: item.value for item in ctx.invocation_metadata() or ()}
            context.principal.set(await self._authorize(method, metadata))

    @staticmethod
    async def _refuse_if_expired(ctx: grpc.aio.ServicerContext) -> None:
        remaining = context.remaining_seconds()
        if remaining is not None and remaining <= 0:
            await ctx.abort_with_status(
                make_status(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "deadline expired before the call started",
                    "DEADLINE_EXCEEDED",
                    "gofund",
                )
            )

    async def _abort(self, ctx: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
        """End the call with the status `exc` stands for."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # already a status
        if isinstance(exc, DomainError):
            status = self._errors.to_status(exc)
        elif isinstance(exc, NotImplementedError):
            status = make_status(
                grpc.StatusCode.UNIMPLEMENTED, "not implemented yet", "NOT_IMPLEMENTED", self._errors.domain
            )
        elif store_unavailable(exc):
            log.warning("data store unavailable", extra={"error": str(exc)[:300]})
            status = make_status(
                grpc.StatusCode.UNAVAILABLE,
                "a data store is unavailable; retry",
                "STORE_UNAVAILABLE",
                self._errors.domain,
            )
        elif isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PASSED_ON_CODES:
            status = make_status(
                exc.code(),
                f"a dependency failed: {exc.code().name.lower()}",
                _PASSED_ON_CODES[exc.code()],
                self._errors.domain,
            )
        else:
            log.exception("unhandled error")
            status = internal_status(self._errors.domain)
        await ctx.abort_with_status(status)
        raise AssertionError("abort_with_status returned")  # it raises AbortError

    def _finish(self, method: str, ctx: grpc.aio.ServicerContext, started: float, *, cancelled: bool) -> None:
        """Log the call and record it in the metrics."""
        # ctx.cancelled() stays False when the client cancels; the handler sees it as CancelledError.
        cancelled = cancelled or ctx.cancelled()
        code = grpc.StatusCode.CANCELLED if cancelled else (ctx.code() or grpc.StatusCode.OK)
        code_name = getattr(code, "name", str(code))
        seconds = time.monotonic() - started
        # Health probes arrive every second from Envoy; keep them out of INFO
        # and out of the latency histogram (they are still counted).
        health = method.startswith(HEALTH_METHOD_PREFIX)
        if self._metrics is not None:
            self._metrics.finished(method, code_name, None if health else seconds)
        log.log(
            logging.DEBUG if health else logging.INFO,
            "rpc",
            extra={"method": method, "code": code_name, "duration_ms": round(seconds * 1000, 3)},
        )


# C0 controls but tab, line feed and carriage return (which text a person types
# may hold), DEL and the C1 controls. PostgreSQL cannot store NUL in text at all,
# and none of them belongs in a name, an id, a reason or a URL.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
INVALID_CHARACTERS = "INVALID_CHARACTERS"
MALFORMED_REQUEST = "MALFORMED_REQUEST"


def control_character_violations(request: protobuf_message.Message, prefix: str = "") -> list[FieldViolation]:
    """Every string in `request` (nested messages, repeated fields, map keys and
    values) holding a control character, by field path (`postings[1].currency`,
    `metadata["key"]`). Bytes fields (a webhook's raw body) are data, not text:
    never looked at."""
    violations: list[FieldViolation] = []

    def text(path: str, value: str, what: str = "must not contain") -> None:
        found = _CONTROL_CHARACTERS.search(value)
        if found is not None:
            character = f"U+{ord(found.group()):04X} at position {found.start()}"
            violations.append(FieldViolation(path, f"{what} control characters ({character})", INVALID_CHARACTERS))

    for field, value in request.ListFields():  # only the fields that are set: cheap on every call
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            for index, item in enumerate(value) if field.is_repeated else ((None, value),):
                text(path if index is None else f"{path}[{index}]", item)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if isinstance(key, str):
                    text(path, key, "a key must not contain")
                # JSON-quoted: the key may hold the very characters refused.
                item_path = f"{path}[{json.dumps(key)}]"
                if value_field.type == FieldDescriptor.TYPE_STRING:
                    text(item_path, item)
                elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    violations.extend(control_character_violations(item, item_path + "."))
        elif field.message_type is not None:
            if field.is_repeated:
                for index, item in enumerate(value):
                    violations.extend(control_character_violations(item, f"{path}[{index}]."))
            else:
                violations.extend(control_character_violations(value, path + "."))
    return violations


class _Undecodable:
    """What the request deserializer gives for bytes that are not the request message."""


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpc answers bytes its deserializer refuses with INTERNAL; the handler wrapper
    below answers them INVALID_ARGUMENT instead (the client sent them, not our bug)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except protobuf_message.DecodeError:
            return _UNDECODABLE

    return deserialize


def _check_request(request: Any) -> None:
    if request is _UNDECODABLE:
        raise ValidationFailed([FieldViolation("", "is not a valid request message", MALFORMED_REQUEST)])
    if isinstance(request, protobuf_message.Message):
        violations = control_character_violations(request)
        if violations:
            raise ValidationFailed(violations)


class RequestValidationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a request with control characters in its text before the handler runs.

    Installed inside CallContextInterceptor, so the refusal is a ValidationFailed
    that it maps like any other (INVALID_ARGUMENT, BadRequest field violations,
    reason INVALID_CHARACTERS), after the caller is authenticated. Every GoFund
    RPC takes one request message; a client-streaming method (none exists but
    reflection's, which is grpc's) passes through untouched.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    @staticmethod
    def _wrap(behaviour: Any) -> Any:
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                _check_request(request)
                async with contextlib.aclosing(behaviour(request, ctx)) as messages:
                    async for message in messages:
                        yield message

            return stream

        # A unary handler, or a stream written through ctx.write (grpc's health Watch).
        async def unary(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            _check_request(request)
            return await behaviour(request, ctx)

        return unary
