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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.common.auth import require_permission
from services.common.context import Principal
from services.common.db import Database
from services.common.errors import DomainError, InvalidToken, Validator
from services.identity import domain, store
from services.identity.domain import Channel
from services.identity.notify import DeliveryError, EmailSender, SmsSender

ROLES_PERMISSION = "roles:manage"
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
    ) -> None:
        self.database = database
        # Resolved tokens, for at most `token_cache_ttl` (≤ 5 s) and never past the
        # session's expiry. Logout, revocation and role changes evict at once
        # here; another identity replica may trust its entry until it lapses.
        self._token_cache: dict[bytes, tuple[Principal, store.User, float]] = {}
        self._token_cache_ttl_s = min(token_cache_ttl.total_seconds(), 5.0)
        self._code_secret = code_secret
        self._session_ttl = session_ttl
        self._email = email
        self._sms = sms
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash = self._hasher.hash(uuid.uuid4().hex)

    # -- accounts -------------------------------------------------------------
    async def register(
        self, *, email: str, username: str, password: str, first_name: str, last_name: str, phone: str
    ) -> UserView:
        normalized = domain.validate_registration(
            email=email, username=username, password=password, first_name=first_name, last_name=last_name, phone=phone
        )
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
        async with self.database.transaction() as session:
            user = await store.user_by_login(session, login.strip()) if login.strip() else None
        stored_hash = user.password_hash if user is not None else self._dummy_hash
        valid = await asyncio.to_thread(self._verify, stored_hash, password)
        if user is None or not valid:
            raise domain.InvalidCredentials("wrong login or password")
        token, token_hash = domain.new_token()
        async with self.database.transaction() as session:
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
        if self._token_cache_ttl_s > 0:
            until_expiry = (row.expires_at - datetime.now(UTC)).total_seconds()
            if len(self._token_cache) >= MAX_CACHED_TOKENS:
                self._token_cache.clear()
            self._token_cache[token_hash] = (
                principal,
                user,
                time.monotonic() + min(self._token_cache_ttl_s, until_expiry),
            )
        return principal, user

    def _forget(self, user_id: str) -> None:
        """Drop every cached token of a user (after logout, revocation, a role change)."""
        for key in [k for k, (p, _, _) in self._token_cache.items() if p.user_id == user_id]:
            self._token_cache.pop(key, None)

    async def logout(self, principal: Principal) -> None:
        await self.revoke_session(principal, principal.session_id)

    async def revoke_session(self, principal: Principal, session_id: str) -> None:
        try:
            target = uuid.UUID(session_id)
        except ValueError:
            raise domain.SessionNotFound("no such session") from None
        async with self.database.transaction() as session:
            if not await store.revoke_session(session, uuid.UUID(principal.user_id), target):
                raise domain.SessionNotFound("no such session")
        self._forget(principal.user_id)

    async def sessions(self, principal: Principal, before: datetime | None, limit: int) -> list[store.Session]:
        async with self.database.transaction() as session:
            return await store.sessions_of(session, uuid.UUID(principal.user_id), before, limit)

    # -- profile --------------------------------------------------------------
    async def user(self, user_id: str) -> UserView:
        views = await self.users([user_id])
        return views[0]

    async def users(self, user_ids: Sequence[str]) -> list[UserView]:
        try:
            ids = [uuid.UUID(u) for u in user_ids]
        except ValueError:
            raise domain.UserNotFound("no such user") from None
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
    async def request_code(self, principal: Principal, channel: Channel) -> None:
        async with self.database.transaction() as session:
            user = await store.user_by_id(session, uuid.UUID(principal.user_id))
            if user is None:
                raise domain.UserNotFound("no such user")
            verified, destination = (
                (user.email_verified, user.email) if channel is Channel.EMAIL else (user.phone_verified, user.phone)
            )
            if verified:
                raise domain.AlreadyVerified(f"the {channel.value.lower()} is already verified")
            if not destination:
                raise domain.PhoneNotSet("add a phone number first")
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
            expected = domain.code_hash(self._code_secret, str(user.id), channel, code.strip())
            if hmac.compare_digest(expected, pending.code_hash):
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
            if await session.get(store.UserRole, (target.user.id, role_name)) is None:
                session.add(store.UserRole(user_id=target.user.id, role_name=role_name))
        self._forget(str(target.user.id))
        return await self.user(user_id)

    async def revoke_role(self, principal: Principal | None, user_id: str, role_name: str) -> UserView:
        require_permission(principal, ROLES_PERMISSION)
        target = await self.user(user_id)
        async with self.database.transaction() as session:
            link = await session.get(store.UserRole, (target.user.id, role_name))
            if link is not None:
                if role_name == domain.ADMIN_ROLE and await store.admin_count(session) <= 1:
                    raise domain.LastAdmin("the last admin cannot lose the admin role")
                await session.delete(link)
        self._forget(str(target.user.id))
        return await self.user(user_id)

    async def user_by_email(self, email: str) -> UserView:
        async with self.database.transaction() as session:
            user = await store.user_by_login(session, email)
        if user is None:
            raise domain.UserNotFound(f"no user with email {email}")
        return await self.user(str(user.id))
