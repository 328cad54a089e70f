"""Identity rules: what a valid user, password, token and code are. Pure: no SQL, no gRPC."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email

from services.common.errors import DomainError, Validator

USERNAME = re.compile(r"^[A-Za-z0-9_.]{3,32}$")
PHONE_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
PERMISSION = re.compile(r"^[a-z_]+:([a-z_]+|\*)$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work a request can ask for
MAX_NAME = 100
TOKEN_BYTES = 32
CODE_DIGITS = 6
CODE_TTL_MINUTES = 10
MAX_CODE_ATTEMPTS = 5
DEFAULT_ROLE = "member"
ADMIN_ROLE = "admin"


class Channel(StrEnum):
    EMAIL = "EMAIL"
    PHONE = "PHONE"


# -- errors ---------------------------------------------------------------------
class EmailTaken(DomainError):
    pass


class UsernameTaken(DomainError):
    pass


class InvalidCredentials(DomainError):
    pass


class UserNotFound(DomainError):
    pass


class SessionNotFound(DomainError):
    pass


class RoleNotFound(DomainError):
    pass


class RoleExists(DomainError):
    pass


class LastAdmin(DomainError):
    pass


class InvalidCode(DomainError):
    pass


class CodeExpired(DomainError):
    pass


class NoPendingCode(DomainError):
    pass


class TooManyAttempts(DomainError):
    pass


class AlreadyVerified(DomainError):
    pass


class EmailAlreadyVerified(AlreadyVerified):
    pass


class PhoneAlreadyVerified(AlreadyVerified):
    pass


def already_verified(channel: Channel) -> AlreadyVerified:
    message = f"the {channel.value.lower()} is already verified"
    return EmailAlreadyVerified(message) if channel is Channel.EMAIL else PhoneAlreadyVerified(message)


class PhoneNotSet(DomainError):
    pass


class DeliveryFailed(DomainError):
    pass


# -- validation -----------------------------------------------------------------
def normalize_email(email: str) -> str | None:
    """The address in canonical form, or None if it is not a valid address (no DNS lookups)."""
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def validate_registration(
    *, email: str, username: str, password: str, first_name: str, last_name: str, phone: str
) -> str:
    """Every problem at once; returns the normalized email."""
    check = Validator()
    normalized = normalize_email(email)
    check.require(normalized is not None, "email", "must be a valid email address", "INVALID_EMAIL")
    check.require(
        bool(USERNAME.match(username)),
        "username",
        "must be 3 to 32 letters, digits, '_' or '.'",
        "INVALID_USERNAME",
    )
    check.require(
        len(password) >= MIN_PASSWORD, "password", f"must be at least {MIN_PASSWORD} characters", "PASSWORD_TOO_SHORT"
    )
    check.require(
        len(password) <= MAX_PASSWORD, "password", f"must be at most {MAX_PASSWORD} characters", "PASSWORD_TOO_LONG"
    )
    validate_profile(check, first_name=first_name, last_name=last_name, phone=phone)
    check.raise_if_invalid()
    assert normalized is not None
    return normalized


def validate_profile(
    check: Validator, *, first_name: str | None = None, last_name: str | None = None, phone: str | None = None
) -> None:
    for field, value in (("first_name", first_name), ("last_name", last_name)):
        if value is not None:
            check.require(len(value) <= MAX_NAME, field, f"at most {MAX_NAME} characters", "INVALID_NAME")
    if phone:
        check.require(
            bool(PHONE_E164.match(phone)), "phone", "must be in E.164 form, e.g. +2348012345678", "INVALID_PHONE"
        )


def validate_role(name: str, description: str, permissions: Iterable[str]) -> None:
    check = Validator()
    check.require(bool(ROLE_NAME.match(name)), "name", "2 to 32 lower-case letters, digits or '_'", "INVALID_ROLE_NAME")
    check.require(len(description) <= 500, "description", "at most 500 characters", "INVALID_DESCRIPTION")
    for index, permission in enumerate(permissions):
        check.require(
            bool(PERMISSION.match(permission)),
            f"permissions[{index}]",
            "must look like area:action or area:*",
            "INVALID_PERMISSION",
        )
    check.raise_if_invalid()


# -- tokens and codes -----------------------------------------------------------
def new_token() -> tuple[str, bytes]:
    """A session token for the client (URL-safe text) and the SHA-256 we keep of its bytes."""
    raw = secrets.token_bytes(TOKEN_BYTES)
    return base64.urlsafe_b64encode(raw).decode().rstrip("="), hashlib.sha256(raw).digest()


def token_hash(token: str) -> bytes | None:
    """The stored hash for a presented token, or None if it cannot be one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != TOKEN_BYTES:
        return None
    return hashlib.sha256(raw).digest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(secret: str, user_id: str, channel: Channel, code: str) -> str:
    """Keyed hash: six digits are easy to brute-force from a plain hash, not from an HMAC."""
    message = f"{user_id}:{channel.value}:{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def permissions_of(role_permissions: Iterable[Iterable[str]]) -> frozenset[str]:
    return frozenset(p for permissions in role_permissions for p in permissions)


# -- limits ---------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """At most `max_hits` per fixed window of `window` for one key (a client address, an account).

    Fixed windows, aligned to the epoch, so every replica counts in the same
    window without coordinating, and a refused caller's wait (Retry-After) is
    exact: the end of the window. A caller can squeeze up to twice the limit
    across a window boundary; that is the price of the exact wait."""

    name: str
    max_hits: int
    window: timedelta

    def window_at(self, now: datetime) -> tuple[datetime, datetime]:
        seconds = int(self.window.total_seconds())
        start = datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)
        return start, start + self.window

    def key(self, subject: str) -> str:
        return f"{self.name}:{subject}"

    def retry_after_s(self, now: datetime) -> int:
        """Whole seconds until the window ends (at least 1), for Retry-After."""
        return max(1, math.ceil((self.window_at(now)[1] - now).total_seconds()))


@dataclass(frozen=True)
class Limits:
    """Identity's abuse limits; the counts come from settings, the windows are fixed."""

    # Wrong passwords (and unknown logins) from one client address, and against one account.
    login_failures_per_client: Limit = Limit("login_failures_client", 30, timedelta(minutes=15))
    login_failures_per_account: Limit = Limit("login_failures_account", 10, timedelta(minutes=15))
    # Accounts created from one client address.
    registrations_per_client: Limit = Limit("registrations_client", 20, timedelta(hours=1))
    # Codes sent, per account and channel, and from one client address.
    code_requests_per_account: Limit = Limit("code_requests_account", 5, timedelta(hours=1))
    code_requests_per_client: Limit = Limit("code_requests_client", 20, timedelta(hours=1))
    # Guesses per account and channel, across every code issued in the hour: a
    # new code resets the 5 guesses a code allows, not this.
    code_guesses_per_account: Limit = Limit("code_guesses_account", 10, timedelta(hours=1))

    @classmethod
    def of(
        cls,
        *,
        login_failures_per_client: int,
        login_failures_per_account: int,
        registrations_per_client: int,
        code_requests_per_account: int,
        code_requests_per_client: int,
        code_guesses_per_account: int,
    ) -> Limits:
        default = cls()
        return cls(
            login_failures_per_client=_with(default.login_failures_per_client, login_failures_per_client),
            login_failures_per_account=_with(default.login_failures_per_account, login_failures_per_account),
            registrations_per_client=_with(default.registrations_per_client, registrations_per_client),
            code_requests_per_account=_with(default.code_requests_per_account, code_requests_per_account),
            code_requests_per_client=_with(default.code_requests_per_client, code_requests_per_client),
            code_guesses_per_account=_with(default.code_guesses_per_account, code_guesses_per_account),
        )


def _with(limit: Limit, max_hits: int) -> Limit:
    return Limit(limit.name, max_hits, limit.window)
