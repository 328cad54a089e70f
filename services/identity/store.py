"""Identity persistence: SQLAlchemy 2 models and the queries the use cases need."""

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import for_update
from services.common.models import created_at_column, updated_at_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    # Email and username are unique case-insensitively, enforced by the database.
    __table_args__ = (
        Index("users_email_lower_key", text("lower(email)"), unique=True),
        Index("users_username_lower_key", text("lower(username)"), unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(254))
    username: Mapped[str] = mapped_column(String(32))
    # argon2id PHC string; never leaves this service.
    password_hash: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    phone: Mapped[str] = mapped_column(String(16), default="")
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Role(Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    # JSON list of permission strings such as "goals:create" or "admin:*".
    permissions: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = created_at_column()


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role_name: Mapped[str] = mapped_column(ForeignKey("roles.name"), primary_key=True)
    granted_at: Mapped[datetime] = created_at_column()


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("sessions_user_id_idx", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # SHA-256 of the bearer token; the token itself is never stored.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_agent: Mapped[str] = mapped_column(String(500), default="")
    ip_address: Mapped[str] = mapped_column(String(45), default="")
    device_name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = created_at_column()
    last_seen_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VerificationCode(Base):
    __tablename__ = "verification_codes"
    __table_args__ = (
        CheckConstraint("channel IN ('EMAIL', 'PHONE')", name="verification_codes_channel_check"),
        Index("verification_codes_user_channel_idx", "user_id", "channel"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(5))
    # The address or number the code was sent to: verifying proves that one.
    destination: Mapped[str] = mapped_column(String(254))
    # HMAC-SHA256 of the code (keyed by GOFUND_IDENTITY_SECRET); the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = created_at_column()


class Revocation(Base):
    """A session revoked, or a user's roles changed: what every auth cache must forget.

    Kept for an hour (the newest always), so a subscriber that lost its stream
    can resume from the last seq it saw (WatchRevocations)."""

    __tablename__ = "revocations"
    __table_args__ = (Index("revocations_revoked_at_idx", "revoked_at"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column()
    # None: the user's roles changed, which concerns all of their sessions.
    session_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime] = created_at_column()


class RateLimitCounter(Base):
    """Hits on one limit key (e.g. failed logins from one client address) in one fixed window.

    In PostgreSQL so every identity replica counts against the same limit."""

    __tablename__ = "rate_limit_counters"
    __table_args__ = (Index("rate_limit_counters_expires_at_idx", "expires_at"),)

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- queries ----------------------------------------------------------------------
_UNIQUE_ERRORS = {"users_email_lower_key": "email", "users_username_lower_key": "username"}


async def insert_user(session: AsyncSession, user: User, role: str) -> str | None:
    """Insert a user with one role; the name of the taken field if email or username exists."""
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        diag = getattr(exc.orig, "diag", None)
        taken = _UNIQUE_ERRORS.get(getattr(diag, "constraint_name", "") or "")
        if taken is None:
            raise
        return taken
    session.add(UserRole(user_id=user.id, role_name=role))
    await session.flush()
    return None


async def user_by_login(session: AsyncSession, login: str) -> User | None:
    column = User.email if "@" in login else User.username
    return (await session.execute(select(User).where(func.lower(column) == login.lower()))).scalar_one_or_none()


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def users_by_id(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, User]:
    rows = (await session.execute(select(User).where(User.id.in_(user_ids)))).scalars()
    return {u.id: u for u in rows}


async def roles_of(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Role]]:
    rows = await session.execute(
        select(UserRole.user_id, Role)
        .join(Role, Role.name == UserRole.role_name)
        .where(UserRole.user_id.in_(user_ids))
        .order_by(Role.name)
    )
    found: dict[uuid.UUID, list[Role]] = {u: [] for u in user_ids}
    for user_id, role in rows:
        found[user_id].append(role)
    return found


async def live_session(session: AsyncSession, token_hash: bytes) -> tuple[Session, User] | None:
    """The session for a token hash if it is neither revoked nor expired."""
    row = (
        await session.execute(
            select(Session, User)
            .join(User, User.id == Session.user_id)
            .where(Session.token_hash == token_hash, Session.revoked_at.is_(None), Session.expires_at > func.now())
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def touch_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    """last_seen_at, at most once a minute (so authenticating is not a write per call)."""
    await session.execute(
        update(Session)
        .where(Session.id == session_id, Session.last_seen_at < func.now() - text("interval '60 seconds'"))
        .values(last_seen_at=func.now())
    )


async def sessions_of(
    session: AsyncSession, user_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Session]:
    query = select(Session).where(
        Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > func.now()
    )
    if before is not None:
        query = query.where(tuple_(Session.created_at, Session.id) < tuple_(*before))
    newest_first = query.order_by(Session.created_at.desc(), Session.id.desc()).limit(limit)
    return list((await session.execute(newest_first)).scalars())


async def revoke_session(session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(Session)
        .where(Session.id == session_id, Session.user_id == user_id, Session.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def session_exists(session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """Whether the user has (or had: revoked and expired ones count) this session."""
    found = await session.execute(select(Session.id).where(Session.id == session_id, Session.user_id == user_id))
    return found.first() is not None


async def pending_code(session: AsyncSession, user_id: uuid.UUID, channel: str) -> VerificationCode | None:
    """The newest unconsumed code for the channel, locked for this transaction."""
    return (
        await session.execute(
            for_update(
                select(VerificationCode)
                .where(
                    VerificationCode.user_id == user_id,
                    VerificationCode.channel == channel,
                    VerificationCode.consumed_at.is_(None),
                )
                .order_by(VerificationCode.created_at.desc())
                .limit(1)
            )
        )
    ).scalar_one_or_none()


async def retire_codes(session: AsyncSession, user_id: uuid.UUID, channel: str) -> None:
    await session.execute(
        update(VerificationCode)
        .where(
            VerificationCode.user_id == user_id,
            VerificationCode.channel == channel,
            VerificationCode.consumed_at.is_(None),
        )
        .values(consumed_at=func.now())
    )


async def all_roles(session: AsyncSession) -> list[Role]:
    return list((await session.execute(select(Role).order_by(Role.name))).scalars())


async def admin_count(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(select(func.count()).select_from(UserRole).where(UserRole.role_name == "admin"))
        ).scalar_one()
    )


# -- revocations ------------------------------------------------------------------
REVOCATIONS_CHANNEL = "identity_revocations"
# Taken by every transaction that records a revocation, so seqs commit in
# order: a subscriber resuming after seq N can never miss a smaller seq that
# committed later.
_REVOCATIONS_LOCK = 0x6F_6E_72_65_76  # arbitrary, unique within the identity database
REVOCATIONS_KEPT = "interval '1 hour'"


async def record_revocation(session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID | None) -> int:
    """Log a revocation and NOTIFY it; both take effect when the transaction commits. Returns its seq."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REVOCATIONS_LOCK})
    row = (
        await session.execute(
            insert(Revocation)
            .values(user_id=user_id, session_id=session_id)
            .returning(Revocation.seq, Revocation.revoked_at)
        )
    ).one()
    payload = json.dumps(
        {
            "seq": row.seq,
            "user_id": str(user_id),
            "session_id": "" if session_id is None else str(session_id),
            "revoked_at": row.revoked_at.isoformat(),
        }
    )
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": REVOCATIONS_CHANNEL, "payload": payload}
    )
    return int(row.seq)


async def revocations_after(session: AsyncSession, after_seq: int, limit: int) -> list[Revocation]:
    query = select(Revocation).where(Revocation.seq > after_seq).order_by(Revocation.seq).limit(limit)
    return list((await session.execute(query)).scalars())


async def revocation_bounds(session: AsyncSession) -> tuple[int, int]:
    """(oldest kept seq, newest seq); (0, 0) if none was ever recorded."""
    row = (await session.execute(select(func.min(Revocation.seq), func.max(Revocation.seq)))).one()
    return int(row[0] or 0), int(row[1] or 0)


async def prune(session: AsyncSession) -> None:
    """Forget revocations older than an hour (never the newest: it is the head) and lapsed counters."""
    newest = select(func.max(Revocation.seq)).scalar_subquery()
    await session.execute(
        delete(Revocation).where(Revocation.revoked_at < func.now() - text(REVOCATIONS_KEPT), Revocation.seq < newest)
    )
    await session.execute(delete(RateLimitCounter).where(RateLimitCounter.expires_at < func.now()))


# -- rate limits ------------------------------------------------------------------
async def hit(session: AsyncSession, key: str, window_start: datetime, window_end: datetime) -> int:
    """Count one hit on `key` in the window; the window's count including it (atomic across replicas)."""
    statement = (
        insert(RateLimitCounter)
        .values(key=key, window_start=window_start, hits=1, expires_at=window_end)
        .on_conflict_do_update(
            index_elements=[RateLimitCounter.key, RateLimitCounter.window_start],
            set_={"hits": RateLimitCounter.hits + 1},
        )
        .returning(RateLimitCounter.hits)
    )
    return int((await session.execute(statement)).scalar_one())


async def unhit(session: AsyncSession, key: str, window_start: datetime) -> None:
    """Take back one hit (a login that turned out right does not count as a failure)."""
    await session.execute(
        update(RateLimitCounter)
        .where(RateLimitCounter.key == key, RateLimitCounter.window_start == window_start, RateLimitCounter.hits > 0)
        .values(hits=RateLimitCounter.hits - 1)
    )
