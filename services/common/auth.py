"""Authentication for every service, applied by the call-context interceptor.

Three kinds of caller:
- an end user: `authorization: Bearer <session token>`, on public services
  only. Identity resolves the token to a `Principal`; the answer is cached in
  this process for at most `GOFUND_AUTH_CACHE_MS` (default and maximum 5 s).
  Identity pushes every revocation (logout, a revoked session, a role change)
  on one WatchRevocations stream per process, which evicts the cached answers
  at once; the TTL only bounds how long a revoked session can live on while
  that stream is down (logged as one WARNING per outage).
- a GoFund service: `x-gofund-service-credential: <GOFUND_SERVICE_TOKEN>`, on
  internal services only, compared in constant time.
- anonymous: only on the methods a service declares anonymous (goal reads, the
  Paystack webhook, account reads whose visibility rules need no login); health
  and reflection are always open.

Envoy never routes internal services, and removes the service-credential
header from outside requests; these checks hold even without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc
from google.protobuf import descriptor

from services.common import outage
from services.common.context import Principal
from services.common.errors import (
    InvalidToken,
    LoginRequired,
    MissingPermission,
    ServiceCredentialOnPublicService,
    ServiceCredentialRequired,
    UserTokenOnInternalService,
)
from services.common.headers import AUTHORIZATION_HEADER, SERVICE_CREDENTIAL_HEADER

if TYPE_CHECKING:
    from services.common.clients import Channels

log = logging.getLogger("gofund.auth")

MAX_CACHE_TTL_S = 5.0
MAX_CACHE_ENTRIES = 10_000
# Reconnecting to identity's revocation stream: from this, doubling, up to the max.
FOLLOW_BACKOFF_S = 0.1
FOLLOW_MAX_BACKOFF_S = 5.0


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

    def __init__(self, policy: AuthPolicy, service_token: str, authenticator: Authenticator) -> None:
        self._policy = policy
        self._service_token = service_token.encode()
        self._authenticator = authenticator

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
            return await self._authenticator.authenticate(bearer)
        if method in self._policy.anonymous_methods:
            return None
        raise LoginRequired("log in first: send Authorization: Bearer <token>")


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class TokenCache:
    """Resolved tokens by `token_key`, each for at most `ttl_s`, evictable by session or user."""

    def __init__(self, ttl_s: float, max_entries: int = MAX_CACHE_ENTRIES) -> None:
        self._ttl_s = min(ttl_s, MAX_CACHE_TTL_S)
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        # Bumped by every eviction: an answer fetched while one happened may
        # predate the revocation, so it is not stored.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, key: str, principal: Principal, generation: int) -> None:
        """Store `principal` unless an eviction happened since `generation` was read."""
        if self._ttl_s <= 0 or generation != self.generation:
            return
        self._entries[key] = (principal, time.monotonic() + self._ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def evict(self, *, user_id: str, session_id: str = "") -> None:
        """Drop one session's answers, or every answer of the user when `session_id` is empty."""
        self.generation += 1
        if session_id:
            stale = [k for k, (p, _) in self._entries.items() if p.session_id == session_id]
        else:
            stale = [k for k, (p, _) in self._entries.items() if p.user_id == user_id]
        for key in stale:
            del self._entries[key]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


class RemoteAuthenticator:
    """Asks identity (IdentityInternalService.Authenticate) with a short deadline, and caches
    the answers for as long as identity's revocation stream allows (`follow_revocations`,
    a background loop the service runs)."""

    TIMEOUT_S = 1.0

    def __init__(self, channels: Channels, identity_target: str, *, cache_ttl_s: float = 0.0) -> None:
        from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

        service = identity_service_pb2.DESCRIPTOR.services_by_name["IdentityInternalService"]
        self._stub = identity_service_pb2_grpc.IdentityInternalServiceStub(channels.get(identity_target, [service]))
        self._request = identity_service_pb2.AuthenticateRequest
        self._watch_request = identity_service_pb2.WatchRevocationsRequest
        self.cache = TokenCache(cache_ttl_s)
        # Whether the revocation stream is up (for tests and the health of the cache).
        self.following = asyncio.Event()

    async def authenticate(self, token: str) -> Principal:
        key = token_key(token)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        generation = self.cache.generation
        try:
            response = await self._stub.Authenticate(self._request(token=token), timeout=self.TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
                raise InvalidToken("the session token is not valid") from None
            raise
        found = response.principal
        principal = Principal(
            user_id=found.user_id,
            session_id=found.session_id,
            roles=frozenset(found.roles),
            permissions=frozenset(found.permissions),
        )
        self.cache.put(key, principal, generation)
        return principal

    async def follow_revocations(self) -> None:
        """Follow identity's WatchRevocations for the life of the process, reconnecting
        with backoff and resuming from the last seq seen, so nothing is missed."""
        after_seq: int | None = None  # from now, the first time; then from the last seq seen
        failures = 0  # reconnections that failed in a row
        down_since: float | None = None
        while True:
            error = ""
            try:
                request = self._watch_request() if after_seq is None else self._watch_request(after_seq=after_seq)
                async for message in self._stub.WatchRevocations(request):
                    if message.reset:
                        # Identity no longer holds what came after our position (or our
                        # position is ahead of it, a restored database): start from its head.
                        self.cache.clear()
                        after_seq = message.seq
                    for revocation in message.revocations:
                        self.cache.evict(user_id=revocation.user_id, session_id=revocation.session_id)
                    after_seq = message.seq if after_seq is None else max(after_seq, message.seq)
                    if not self.following.is_set():
                        self.following.set()
                        failures = 0
                        if down_since is not None:
                            log.info(
                                "revocation push from identity is back",
                                extra={"outage_s": round(time.monotonic() - down_since, 1)},
                            )
                            down_since = None
                error = "the stream ended"
            except grpc.aio.AioRpcError as exc:
                error = f"{exc.code().name}: {exc.details()}"
            was_following = self.following.is_set()
            self.following.clear()
            if was_following:
                # A stream that was up (a replica draining, say): reconnect
                # soon; only a failed reconnect is an outage worth a warning.
                await asyncio.sleep(FOLLOW_BACKOFF_S)
                continue
            if down_since is None:
                down_since = time.monotonic()
                log.warning(
                    "revocation push from identity is down: cached sessions are trusted for up to the "
                    "cache TTL until it is back",
                    extra={"error": error[:300], "cache_ttl_s": self.cache.ttl_s},
                )
            failures += 1
            await asyncio.sleep(outage.backoff_s(failures, FOLLOW_BACKOFF_S, FOLLOW_MAX_BACKOFF_S))
