"""Identity use cases: each in one unit of work, the rules from `domain`.

Password hashing (argon2id, ~80 ms) runs in a worker thread so the event loop
keeps serving. Logging in as an unknown user still runs one argon2 verify
against a fixed hash, so it takes as long as a wrong password and both answer
the same INVALID_CREDENTIALS.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import paging
from services.common.auth import require_permission
from services.common.context import Principal
from services.common.db import Database
from services.common.errors import DomainError, InvalidToken, RateLimited, Validator
from services.common.ids import check_id, is_uuid, parse_id
from services.identity import domain, store
from services.identity.domain import Channel, Limit, Limits
from services.identity.notify import DeliveryError, EmailSender, SmsSender
from services.identity.revocations import RevocationEvent, RevocationFeed

ROLES_PERMISSION = "roles:manage"
BACKLOG_BATCH = 500
MAX_CACHED_TOKENS = 100_000


@dataclass(frozen=True)
class UserView:
    user: store.User
    roles: tuple[str, ...]


@dataclass(frozen=True)
class DeviceInfo:
    user_agent: str = ""
    ip_address: str = ""
    device_name: str = ""


class Identity:
    def __init__(
        self,
        database: Database,
        *,
        code_secret: str,
        session_ttl: timedelta,
        email: EmailSender,
        sms: SmsSender,
        hasher: PasswordHasher | None = None,
        token_cache_ttl: timedelta = timedelta(0),
        revocations: RevocationFeed | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.database = database
        # Resolved tokens, for at most `token_cache_ttl` (≤ 5 s) and never past the
        # session's expiry. Logout, revocation and role changes evict at once
        # here, and on every other identity replica through the revocation feed.
        self._token_cache: dict[bytes, tuple[Principal, store.User, float]] = {}
        self._token_cache_ttl_s = min(token_cache_ttl.total_seconds(), 5.0)
        # Bumped by every eviction: an answer resolved while one happened is not
        # cached, as it may predate the revocation.
        self._evictions = 0
        self._revocations = revocations
        if revocations is not None:
            revocations.on_revocation(self.evict)
        self.limits = limits or Limits()
        self._code_secret = code_secret
        self._session_ttl = session_ttl
        self._email = email
        self._sms = sms
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash = self._hasher.hash(uuid.uuid4().hex)

    # -- accounts -------------------------------------------------------------
    async def register(
        self,
        *,
        email: str,
        username: str,
        password: str,
        first_name: str,
        last_name: str,
        phone: str,
        client_address: str = "",
    ) -> UserView:
        normalized = domain.validate_registration(
            email=email, username=username, password=password, first_name=first_name, last_name=last_name, phone=phone
        )
        # Counted before the password is hashed, so a refused flood costs no argon2.
        async with self.database.transaction() as session:
            await self._spend(session, [(self.limits.registrations_per_client, _client(client_address))])
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        user = store.User(
            id=uuid.uuid4(),
            email=normalized,
            username=username,
            password_hash=password_hash,
            first_name=first_name,
            last_name=last_name,
            phone=phone,
            email_verified=False,
            phone_verified=False,
        )
        async with self.database.transaction() as session:
            taken = await store.insert_user(session, user, domain.DEFAULT_ROLE)
            if taken == "email":
                raise domain.EmailTaken("that email is already registered", metadata={"field": "email"})
            if taken == "username":
                raise domain.UsernameTaken("that username is taken", metadata={"field": "username"})
            await session.refresh(user)
        return UserView(user, (domain.DEFAULT_ROLE,))

    async def login(self, login: str, password: str, device: DeviceInfo) -> tuple[str, store.Session, UserView]:
        check = Validator()
        check.require(bool(login.strip()), "login", "is required (an email or a username)", "MISSING_LOGIN")
        check.require(bool(password), "password", "is required", "MISSING_PASSWORD")
        check.raise_if_invalid()
        async with self.database.transaction() as session:
            user = await store.user_by_login(session, login.strip())
            # Every attempt is counted as a failure before the password is checked
            # (so concurrent guesses cannot overrun the limit) and taken back if it
            # succeeds. An unknown login is an account of its own, limited alike.
            account = str(user.id) if user is not None else "login:" + login.strip().lower()[:254]
            spent = [
                (self.limits.login_failures_per_client, _client(device.ip_address)),
                (self.limits.login_failures_per_account, account),
            ]
            hits = await self._spend(session, spent)
        stored_hash = user.password_hash if user is not None else self._dummy_hash
        valid = await asyncio.to_thread(self._verify, stored_hash, password)
        if user is None or not valid:
            raise domain.InvalidCredentials("wrong login or password")
        token, token_hash = domain.new_token()
        async with self.database.transaction() as session:
            await self._refund(session, hits)
            row = store.Session(
                id=uuid.uuid4(),
                user_id=user.id,
                token_hash=token_hash,
                user_agent=device.user_agent[:500],
                ip_address=device.ip_address[:45],
                device_name=device.device_name[:100],
                expires_at=datetime.now(UTC) + self._session_ttl,
            )
            session.add(row)
            if self._hasher.check_needs_rehash(user.password_hash):
                user.password_hash = await asyncio.to_thread(self._hasher.hash, password)
                session.add(user)
            await session.flush()
            await session.refresh(row)
            roles = await store.roles_of(session, [user.id])
        return token, row, UserView(user, tuple(r.name for r in roles[user.id]))

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    async def authenticate(self, token: str) -> Principal:
        principal, _ = await self.resolve(token)
        return principal

    async def resolve(self, token: str) -> tuple[Principal, store.User]:
        """The principal of a live session token and its user; InvalidToken otherwise."""
        token_hash = domain.token_hash(token)
        if token_hash is None:
            raise InvalidToken("the session token is not valid")
        cached = self._token_cache.get(token_hash)
        if cached is not None and cached[2] > time.monotonic():
            return cached[0], cached[1]
        evictions = self._evictions
        async with self.database.transaction() as session:
            found = await store.live_session(session, token_hash)
            if found is None:
                raise InvalidToken("the session token is not valid")
            row, user = found
            await store.touch_session(session, row.id)
            roles = (await store.roles_of(session, [user.id]))[user.id]
        principal = Principal(
            user_id=str(user.id),
            session_id=str(row.id),
            roles=frozenset(r.name for r in roles),
            permissions=domain.permissions_of(r.permissions for r in roles),
        )
        if self._token_cache_ttl_s > 0 and evictions == self._evictions:
            until_expiry = (row.expires_at - datetime.now(UTC)).total_seconds()
            if len(self._token_cache) >= MAX_CACHED_TOKENS:
                self._token_cache.clear()
            self._token_cache[token_hash] = (
                principal,
                user,
                time.monotonic() + min(self._token_cache_ttl_s, until_expiry),
            )
        return principal, user

    def evict(self, revocation: RevocationEvent) -> None:
        """Drop what a revocation concerns: one session, or (roles changed) every session of the user."""
        self._evictions += 1
        if revocation.session_id:
            stale = [k for k, (p, _, _) in self._token_cache.items() if p.session_id == revocation.session_id]
        else:
            stale = [k for k, (p, _, _) in self._token_cache.items() if p.user_id == revocation.user_id]
        for key in stale:
            self._token_cache.pop(key, None)

    async def _revoked(self, user_id: uuid.UUID, session_id: uuid.UUID | None, seq: int) -> None:
        """After a revocation committed: evict here, then wait until this replica's
        subscribers (the other services' auth caches) have been sent it, so the
        caller's next request anywhere is already refused."""
        self.evict(RevocationEvent(seq, str(user_id), "" if session_id is None else str(session_id), datetime.now(UTC)))
        if self._revocations is not None:
            await self._revocations.delivered(seq)

    async def revocation_backlog(
        self, after_seq: int | None, head: int
    ) -> AsyncIterator[tuple[list[RevocationEvent], int, bool]]:
        """What a subscriber resuming after `after_seq` missed, up to `head`, as
        (revocations, position, reset) batches. The last batch's position is
        where the live stream continues; `reset` means the revocations it missed
        are no longer kept. Starting afresh (`after_seq` None) gets just the head."""
        if after_seq is None:
            yield [], head, False
            return
        async with self.database.transaction() as session:
            oldest, newest = await store.revocation_bounds(session)
        if after_seq > max(newest, head) or (oldest and after_seq < oldest - 1):
            yield [], head, True
            return
        position = after_seq
        while True:
            async with self.database.transaction() as session:
                rows = [r for r in await store.revocations_after(session, position, BACKLOG_BATCH) if r.seq <= head]
            events = [RevocationEvent.of(r) for r in rows]
            if len(rows) < BACKLOG_BATCH:  # the last batch
                yield events, max(position, head), False
                return
            position = rows[-1].seq
            yield events, position, False

    async def logout(self, principal: Principal) -> None:
        await self.revoke_session(principal, principal.session_id)

    async def revoke_session(self, principal: Principal, session_id: str) -> None:
        """Revoke one of the caller's sessions; one already revoked or expired is left as it is (idempotent)."""
        target = uuid.UUID(parse_id(session_id, "session_id", "INVALID_SESSION_ID"))
        user_id = uuid.UUID(principal.user_id)
        async with self.database.transaction() as session:
            if not await store.revoke_session(session, user_id, target):
                if not await store.session_exists(session, user_id, target):
                    raise domain.SessionNotFound("no such session")
                return  # revoked or expired before: nothing changes, nothing to push
            seq = await store.record_revocation(session, user_id, target)
        await self._revoked(user_id, target, seq)

    async def sessions(
        self, principal: Principal, before: tuple[datetime, str] | None, limit: int
    ) -> list[store.Session]:
        """The caller's live sessions, newest first; `before` (created_at, id) continues a page."""
        if before is not None and not is_uuid(before[1]):
            raise paging.invalid_page_token()
        position = (before[0], uuid.UUID(before[1])) if before is not None else None
        async with self.database.transaction() as session:
            return await store.sessions_of(session, uuid.UUID(principal.user_id), position, limit)

    # -- profile --------------------------------------------------------------
    async def user(self, user_id: str) -> UserView:
        parse_id(user_id, "user_id", "INVALID_USER_ID")
        views = await self.users([user_id])
        return views[0]

    async def users(self, user_ids: Sequence[str]) -> list[UserView]:
        check = Validator()
        for index, user_id in enumerate(user_ids):
            check_id(check, user_id, f"user_ids[{index}]", "INVALID_USER_ID")
        check.raise_if_invalid()
        ids = [uuid.UUID(u) for u in user_ids]
        async with self.database.transaction() as session:
            found = await store.users_by_id(session, ids)
            roles = await store.roles_of(session, list(found))
        missing = [str(u) for u in ids if u not in found]
        if missing:
            raise domain.UserNotFound(f"no user {missing[0]}", metadata={"user_id": missing[0]})
        return [UserView(found[u], tuple(r.name for r in roles[u])) for u in ids]

    async def update_profile(self, principal: Principal, changes: dict[str, str]) -> UserView:
        check = Validator()
        domain.validate_profile(check, **changes)
        check.raise_if_invalid()
        async with self.database.transaction() as session:
            user = await store.user_by_id(session, uuid.UUID(principal.user_id))
            if user is None:
                raise domain.UserNotFound("no such user")
            for field, value in changes.items():
                setattr(user, field, value)
            if "phone" in changes:
                user.phone_verified = False
                await store.retire_codes(session, user.id, Channel.PHONE)
            await session.flush()
            await session.refresh(user)
            roles = await store.roles_of(session, [user.id])
        return UserView(user, tuple(r.name for r in roles[user.id]))

    # -- verification ---------------------------------------------------------
    async def request_code(self, principal: Principal, channel: Channel, client_address: str = "") -> None:
        async with self.database.transaction() as session:
            user = await store.user_by_id(session, uuid.UUID(principal.user_id))
            if user is None:
                raise domain.UserNotFound("no such user")
            verified, destination = (
                (user.email_verified, user.email) if channel is Channel.EMAIL else (user.phone_verified, user.phone)
            )
            if verified:
                raise domain.already_verified(channel)
            if not destination:
                raise domain.PhoneNotSet("add a phone number first")
            # Counted in this transaction: a code that could not be sent is not counted.
            await self._spend(
                session,
                [
                    (self.limits.code_requests_per_account, f"{user.id}:{channel.value}"),
                    (self.limits.code_requests_per_client, _client(client_address)),
                ],
            )
            await store.retire_codes(session, user.id, channel)
            code = domain.new_code()
            session.add(
                store.VerificationCode(
                    user_id=user.id,
                    channel=channel.value,
                    destination=destination,
                    code_hash=domain.code_hash(self._code_secret, str(user.id), channel, code),
                    attempts=0,
                    expires_at=datetime.now(UTC) + timedelta(minutes=domain.CODE_TTL_MINUTES),
                )
            )
            await session.flush()
            # Sent before commit: if delivery fails, no code exists that nobody received.
            text = f"Your GoFund verification code is {code}. It expires in {domain.CODE_TTL_MINUTES} minutes."
            try:
                if channel is Channel.EMAIL:
                    await self._email.send(destination, "Your GoFund verification code", text)
                else:
                    await self._sms.send(destination, text)
            except DeliveryError as exc:
                raise domain.DeliveryFailed(f"could not send the code: {exc}") from None

    async def verify_code(self, principal: Principal, channel: Channel, code: str) -> UserView:
        failure: DomainError | None = None
        async with self.database.transaction() as session:
            user = await store.user_by_id(session, uuid.UUID(principal.user_id))
            if user is None:
                raise domain.UserNotFound("no such user")
            pending = await store.pending_code(session, user.id, channel.value)
            current = user.email if channel is Channel.EMAIL else user.phone
            if pending is None or pending.destination != current:
                raise domain.NoPendingCode("request a code first")
            if pending.attempts >= domain.MAX_CODE_ATTEMPTS:
                raise domain.TooManyAttempts("too many wrong codes; request a new one")
            if pending.expires_at <= datetime.now(UTC):
                raise domain.CodeExpired("the code has expired; request a new one")
            # Across every code of the hour: requesting a new code resets the
            # code's own attempts, never this.
            guesses = [(self.limits.code_guesses_per_account, f"{user.id}:{channel.value}")]
            hits = await self._spend(session, guesses)
            expected = domain.code_hash(self._code_secret, str(user.id), channel, code.strip())
            if hmac.compare_digest(expected, pending.code_hash):
                await self._refund(session, hits)
                pending.consumed_at = datetime.now(UTC)
                if channel is Channel.EMAIL:
                    user.email_verified = True
                else:
                    user.phone_verified = True
            else:
                # The attempt must count even though the call fails: record it, commit, then raise.
                pending.attempts += 1
                failure = domain.InvalidCode(
                    "wrong code", metadata={"attempts_left": str(domain.MAX_CODE_ATTEMPTS - pending.attempts)}
                )
            await session.flush()
            await session.refresh(user)
            roles = await store.roles_of(session, [user.id])
        if failure is not None:
            raise failure
        return UserView(user, tuple(r.name for r in roles[user.id]))

    # -- limits ---------------------------------------------------------------
    async def _spend(self, session: AsyncSession, spent: Sequence[tuple[Limit, str]]) -> list[tuple[str, datetime]]:
        """Count one hit on each (limit, subject); RateLimited if any is over its limit.

        The hits are written in the caller's transaction, so a refused request
        (whose transaction rolls back) does not count, and the counters are
        shared by every identity replica. Returns the (counter, window) pairs hit,
        for `_refund`: a refund after a window boundary takes back this hit, not
        one in the next window."""
        now = datetime.now(UTC)
        hits: list[tuple[str, datetime]] = []
        for limit, subject in spent:
            start, end = limit.window_at(now)
            hits.append((limit.key(subject), start))
            if await store.hit(session, limit.key(subject), start, end) > limit.max_hits:
                retry_after_s = limit.retry_after_s(now)
                raise RateLimited(
                    f"too many attempts; try again in {retry_after_s} s",
                    retry_after_s=retry_after_s,
                    metadata={"limit": limit.name},
                )
        return hits

    async def _refund(self, session: AsyncSession, hits: Sequence[tuple[str, datetime]]) -> None:
        for key, window_start in hits:
            await store.unhit(session, key, window_start)

    # -- roles ----------------------------------------------------------------
    async def roles(self, principal: Principal | None) -> list[store.Role]:
        require_permission(principal, ROLES_PERMISSION)
        async with self.database.transaction() as session:
            return await store.all_roles(session)

    async def create_role(
        self, principal: Principal | None, name: str, description: str, permissions: Sequence[str]
    ) -> store.Role:
        require_permission(principal, ROLES_PERMISSION)
        domain.validate_role(name, description, permissions)
        async with self.database.transaction() as session:
            if await session.get(store.Role, name) is not None:
                raise domain.RoleExists(f"role {name} exists", metadata={"role": name})
            role = store.Role(name=name, description=description, permissions=list(dict.fromkeys(permissions)))
            session.add(role)
            await session.flush()
            await session.refresh(role)
        return role

    async def assign_role(self, principal: Principal | None, user_id: str, role_name: str) -> UserView:
        require_permission(principal, ROLES_PERMISSION)
        return await self.grant(user_id, role_name)

    async def grant(self, user_id: str, role_name: str) -> UserView:
        """Give a user a role (idempotent); also what `gofund admin create` uses."""
        target = await self.user(user_id)
        async with self.database.transaction() as session:
            if await session.get(store.Role, role_name) is None:
                raise domain.RoleNotFound(f"no role {role_name}", metadata={"role": role_name})
            seq = None
            if await session.get(store.UserRole, (target.user.id, role_name)) is None:
                session.add(store.UserRole(user_id=target.user.id, role_name=role_name))
                seq = await store.record_revocation(session, target.user.id, None)
        if seq is not None:
            await self._revoked(target.user.id, None, seq)
        return await self.user(user_id)

    async def revoke_role(self, principal: Principal | None, user_id: str, role_name: str) -> UserView:
        require_permission(principal, ROLES_PERMISSION)
        target = await self.user(user_id)
        async with self.database.transaction() as session:
            link = await session.get(store.UserRole, (target.user.id, role_name))
            seq = None
            if link is not None:
                if role_name == domain.ADMIN_ROLE and await store.admin_count(session) <= 1:
                    raise domain.LastAdmin("the last admin cannot lose the admin role")
                await session.delete(link)
                seq = await store.record_revocation(session, target.user.id, None)
        if seq is not None:
            await self._revoked(target.user.id, None, seq)
        return await self.user(user_id)

    async def user_by_email(self, email: str) -> UserView:
        async with self.database.transaction() as session:
            user = await store.user_by_login(session, email)
        if user is None:
            raise domain.UserNotFound(f"no user with email {email}")
        return await self.user(str(user.id))


def _client(address: str) -> str:
    """The limit subject for a client address; callers with none share one."""
    return address or "unknown"
