"""Domain errors and the one mapping from them to gRPC statuses.

Domain code raises plain exceptions that say what rule was broken
(`InsufficientFunds`, `GoalNotOpen`). Each service owns one `ErrorTable` that
maps those classes to a gRPC code and an `ErrorInfo` reason; the server
interceptor is the only place that applies it. Anything not in the table is a
bug: it is logged with the request id and answered `INTERNAL` with a generic
message, so internals never leak to a client.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class DomainError(Exception):
    """A request broke a rule. Subclasses name the rule; the message is safe to show."""

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    reason: str = ""


class ValidationFailed(DomainError):
    """One or more request fields are invalid; carried as BadRequest field violations."""

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @property
    def reason(self) -> str:
        """The first violation's reason, so a client can branch on one string."""
        return next((v.reason for v in self.violations if v.reason), "")


class Validator:
    """Collects field violations so a request reports all of them at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def require(self, condition: bool, field: str, description: str, reason: str) -> bool:
        if not condition:
            self.violations.append(FieldViolation(field, description, reason))
        return condition

    def raise_if_invalid(self) -> None:
        if self.violations:
            raise ValidationFailed(self.violations)


class Unauthenticated(DomainError):
    """No valid credentials were presented."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class InvalidToken(Unauthenticated):
    """The bearer token is unknown, expired or revoked."""


class LoginRequired(Unauthenticated):
    """The method needs a logged-in user and no token was sent."""


class ServiceCredentialRequired(Unauthenticated):
    """An internal method was called without a valid service credential."""


class UserTokenOnInternalService(PermissionDenied):
    """An end user's token was presented to an internal service."""


class ServiceCredentialOnPublicService(PermissionDenied):
    """The service credential was presented to a public service, which never accepts it."""


class MissingPermission(PermissionDenied):
    """The user is logged in but lacks the permission the method needs."""


class IdempotencyKeyReused(DomainError):
    """A client-chosen key was used before with different input."""


RETRY_AFTER_HEADER = "retry-after"


class RateLimited(DomainError):
    """The caller used up a limit (per client address or per account); it may retry after `retry_after_s`.

    The status carries the wait twice: as ErrorInfo metadata `retry_after_s`
    (for gRPC clients) and as `retry-after` metadata, which Envoy's transcoder
    passes on as the HTTP `Retry-After` header."""

    def __init__(self, message: str, *, retry_after_s: int, metadata: Mapping[str, str] | None = None) -> None:
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(message, metadata={**(metadata or {}), "retry_after_s": str(self.retry_after_s)})


@dataclass(frozen=True)
class ErrorMapping:
    code: grpc.StatusCode
    reason: str


COMMON_ERRORS: dict[type[DomainError], ErrorMapping] = {
    ValidationFailed: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"),
    Unauthenticated: ErrorMapping(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    PermissionDenied: ErrorMapping(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    IdempotencyKeyReused: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED"),
    InvalidToken: ErrorMapping(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"),
    LoginRequired: ErrorMapping(grpc.StatusCode.UNAUTHENTICATED, "LOGIN_REQUIRED"),
    ServiceCredentialRequired: ErrorMapping(grpc.StatusCode.UNAUTHENTICATED, "SERVICE_CREDENTIAL_REQUIRED"),
    UserTokenOnInternalService: ErrorMapping(grpc.StatusCode.PERMISSION_DENIED, "USER_TOKEN_ON_INTERNAL_SERVICE"),
    ServiceCredentialOnPublicService: ErrorMapping(
        grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CREDENTIAL_ON_PUBLIC_SERVICE"
    ),
    MissingPermission: ErrorMapping(grpc.StatusCode.PERMISSION_DENIED, "MISSING_PERMISSION"),
    RateLimited: ErrorMapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
}


@dataclass
class ErrorTable:
    """Maps a service's domain exceptions to (gRPC code, ErrorInfo reason).

    Lookup follows the exception's class hierarchy, so a table can map a base
    class once. `ValidationFailed` may carry its own, more precise reason.
    """

    domain: str
    entries: dict[type[DomainError], ErrorMapping] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.entries = {**COMMON_ERRORS, **self.entries}

    def lookup(self, error: DomainError) -> ErrorMapping | None:
        for cls in type(error).__mro__:
            mapping = self.entries.get(cls)
            if mapping is not None:
                return mapping
        return None

    def to_status(self, error: DomainError) -> grpc.Status:
        mapping = self.lookup(error)
        if mapping is None:
            return internal_status(self.domain)
        reason = mapping.reason
        details: list[message.Message] = []
        if isinstance(error, ValidationFailed):
            reason = error.reason or reason
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in error.violations
                    ]
                )
            )
        status = make_status(
            mapping.code, error.message, reason, self.domain, metadata=error.metadata, extra_details=details
        )
        if isinstance(error, RateLimited):
            return _Status(
                status.code,
                status.details,
                (*status.trailing_metadata, (RETRY_AFTER_HEADER, str(error.retry_after_s))),
            )
        return status


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """A status with trailing metadata of our own (grpc.Status itself is abstract)."""


def make_status(
    code: grpc.StatusCode,
    message_text: str,
    reason: str,
    domain: str,
    *,
    metadata: Mapping[str, str] | None = None,
    extra_details: Iterable[message.Message] = (),
) -> grpc.Status:
    """A grpc.Status whose details carry ErrorInfo (first) and any extra detail messages."""
    packed = []
    for detail in (
        error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {})),
        *extra_details,
    ):
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=code.value[0], message=message_text, details=packed)
    return rpc_status.to_status(status)


def internal_status(domain: str) -> grpc.Status:
    return make_status(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL", domain)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, if the server sent one."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None
