"""Authentication for every service, applied by the call-context interceptor.

Three kinds of caller:
- an end user: `authorization: Bearer <session token>`, on public services
  only. Identity resolves the token to a `Principal`; the answer is cached in
  this process for at most `GOFUND_AUTH_CACHE_MS` (default and maximum 5 s), so
  a revoked or expired session can live on in a cache for at most that long.
- a GoFund service: `x-gofund-service-credential: <GOFUND_SERVICE_TOKEN>`, on
  internal services only, compared in constant time.
- anonymous: only on the methods a service declares anonymous (goal reads, the
  Paystack webhook, account reads whose visibility rules need no login); health
  and reflection are always open.

Envoy never routes internal services, and removes the service-credential
header from outside requests; these checks hold even without it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc
from google.protobuf import descriptor

from services.common.context import Principal
from services.common.errors import (
    InvalidToken,
    LoginRequired,
    MissingPermission,
    ServiceCredentialOnPublicService,
    ServiceCredentialRequired,
    UserTokenOnInternalService,
)

if TYPE_CHECKING:
    from services.common.clients import Channels

SERVICE_CREDENTIAL_HEADER = "x-gofund-service-credential"
AUTHORIZATION_HEADER = "authorization"
MAX_CACHE_TTL_S = 5.0
MAX_CACHE_ENTRIES = 10_000


def has_permission(granted: Iterable[str], needed: str) -> bool:
    """`admin:*` grants everything; `<area>:*` every action in an area."""
    granted = set(granted)
    area = needed.split(":", 1)[0]
    return needed in granted or "admin:*" in granted or f"{area}:*" in granted


def require_permission(principal: Principal | None, needed: str) -> Principal:
    if principal is None:
        raise LoginRequired("log in first")
    if not has_permission(principal.permissions, needed):
        raise MissingPermission(f"this needs the {needed} permission", metadata={"permission": needed})
    return principal


def token_key(token: str) -> str:
    """What a token is known by outside identity (cache keys, logs): never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal:
        """The principal of a session token; raises InvalidToken."""
        ...


@dataclass(frozen=True)
class AuthPolicy:
    """Which services are internal and which public methods allow anonymous callers."""

    internal_services: frozenset[str]
    public_services: frozenset[str]
    anonymous_methods: frozenset[str]

    @classmethod
    def of(cls, services: Iterable[descriptor.ServiceDescriptor], anonymous: Iterable[str] = ()) -> AuthPolicy:
        """`anonymous` names methods as "Service/Method" (e.g. "GoalsService/GetGoal")."""
        services = list(services)
        by_short_name = {s.name: s.full_name for s in services}
        anonymous_paths = set()
        for name in anonymous:
            service, method = name.split("/")
            anonymous_paths.add(f"/{by_short_name[service]}/{method}")
        return cls(
            internal_services=frozenset(s.full_name for s in services if s.name.endswith("InternalService")),
            public_services=frozenset(s.full_name for s in services if not s.name.endswith("InternalService")),
            anonymous_methods=frozenset(anonymous_paths),
        )


class Authorizer:
    """Decides who is calling; returns the principal (None for a service or anonymous caller)."""

    def __init__(
        self, policy: AuthPolicy, service_token: str, authenticator: Authenticator, cache_ttl_s: float
    ) -> None:
        self._policy = policy
        self._service_token = service_token.encode()
        self._authenticator = authenticator
        self._ttl_s = min(cache_ttl_s, MAX_CACHE_TTL_S)
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def __call__(self, method: str, metadata: Mapping[str, str]) -> Principal | None:
        service = method.rsplit("/", 1)[0].lstrip("/")
        credential = metadata.get(SERVICE_CREDENTIAL_HEADER)
        bearer = _bearer(metadata.get(AUTHORIZATION_HEADER, ""))
        if service in self._policy.internal_services:
            if credential is not None and hmac.compare_digest(credential.encode(), self._service_token):
                return None
            if bearer:
                raise UserTokenOnInternalService("internal services do not accept user tokens")
            raise ServiceCredentialRequired("internal services need the service credential")
        if service not in self._policy.public_services:
            return None  # health, reflection
        if credential is not None:
            raise ServiceCredentialOnPublicService("public services do not accept the service credential")
        if bearer:
            return await self._principal(bearer)
        if method in self._policy.anonymous_methods:
            return None
        raise LoginRequired("log in first: send Authorization: Bearer <token>")

    async def _principal(self, token: str) -> Principal:
        key = token_key(token)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._authenticator.authenticate(token)
        if self._ttl_s > 0:
            self._cache[key] = (principal, now + self._ttl_s)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return principal


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class RemoteAuthenticator:
    """Asks identity (IdentityInternalService.Authenticate) with a short deadline."""

    TIMEOUT_S = 1.0

    def __init__(self, channels: Channels, identity_target: str) -> None:
        from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

        service = identity_service_pb2.DESCRIPTOR.services_by_name["IdentityInternalService"]
        self._stub = identity_service_pb2_grpc.IdentityInternalServiceStub(channels.get(identity_target, [service]))
        self._request = identity_service_pb2.AuthenticateRequest

    async def authenticate(self, token: str) -> Principal:
        try:
            response = await self._stub.Authenticate(self._request(token=token), timeout=self.TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
                raise InvalidToken("the session token is not valid") from None
            raise
        principal = response.principal
        return Principal(
            user_id=principal.user_id,
            session_id=principal.session_id,
            roles=frozenset(principal.roles),
            permissions=frozenset(principal.permissions),
        )
