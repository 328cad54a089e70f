"""List paging shared by every service: page_size rules and opaque page tokens.

A token is the URL-safe base64 of a small JSON object (the cursor), a dot, and
an HMAC-SHA256 tag of that text under the service's paging key. Clients cannot
make or alter one: a cursor is a position in our tables, and a crafted one
(`{"before_seq": true}`, a date past the year 9999) must never reach a query.
The key is derived from the deployment's service credential (`paging_key`),
so every replica of a service accepts the others' tokens and no new secret has
to be configured; rotating the credential ends the tokens in flight, which a
client sees as INVALID_PAGE_TOKEN and answers by listing from the start.

Each caller says what its cursor holds (`decode_token(token, {"before_seq": int})`),
and a signed token is still checked against that: a token another RPC of the
same service issued, or one from an older release, is INVALID_PAGE_TOKEN too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeAlias

from services.common.errors import FieldViolation, ValidationFailed

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Strings in a cursor are ids and names of our own; anything longer was not ours.
MAX_CURSOR_STRING = 200
# Far larger than any cursor we issue; refused before base64 or JSON work is spent on it.
MAX_TOKEN_LENGTH = 2048
MAX_DATETIME_TEXT = 40  # 2026-12-02T06:40:27.123456+00:00 is 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TAG_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (RFC 2104 §5): ample for a cursor
_KEY_LABEL = b"gofund page token v1\x00"

# The calling service's paging key, set by the server interceptor for each call.
signing_key: ContextVar[bytes | None] = ContextVar("page_token_key", default=None)

# What a cursor field must be: int (not bool, within int64), str (at most
# MAX_CURSOR_STRING), bool, datetime (ISO 8601 with an offset; returned in UTC),
# or a nested schema for a nested object.
Schema: TypeAlias = Mapping[str, "type | Schema"]


def paging_key(secret: str, service: str) -> bytes:
    """The key one service signs its page tokens with, derived from a deployment secret.

    A fixed label keeps it distinct from every other use of the secret; the service
    name keeps one service's tokens from being accepted by another."""
    return hmac.new(secret.encode(), _KEY_LABEL + service.encode(), hashlib.sha256).digest()


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is lowered to it (AIP-158); negative is invalid."""
    if requested < 0:
        raise ValidationFailed([FieldViolation("page_size", "must not be negative", "INVALID_PAGE_SIZE")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def invalid_page_token() -> ValidationFailed:
    return ValidationFailed([FieldViolation("page_token", "is not a token this service issued", "INVALID_PAGE_TOKEN")])


def _key(key: bytes | None) -> bytes:
    key = signing_key.get() if key is None else key
    if key is None:  # a programming error: tokens are only made and read inside a call
        raise RuntimeError("no page token key: encode_token/decode_token outside a served call")
    return key


def _tag(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def encode_token(cursor: Mapping[str, Any], *, key: bytes | None = None) -> str:
    """A signed token for `cursor` (datetimes are written as ISO 8601)."""
    text = json.dumps(_plain(cursor), separators=(",", ":"), sort_keys=True)
    payload = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return f"{payload}.{_tag(_key(key), payload)}"


def decode_token(token: str, schema: Schema, *, key: bytes | None = None) -> dict[str, Any] | None:
    """The cursor of a token this service signed, checked against `schema`; None for an
    empty token (the first page). Anything else is INVALID_ARGUMENT INVALID_PAGE_TOKEN."""
    if not token:
        return None
    payload, dot, tag = token.partition(".")
    if len(token) > MAX_TOKEN_LENGTH or not dot or not hmac.compare_digest(tag, _tag(_key(key), payload)):
        raise invalid_page_token()
    try:
        cursor = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_page_token() from None
    checked = _checked(cursor, schema)
    if checked is None:
        raise invalid_page_token()
    return checked


def _checked(cursor: Any, schema: Schema) -> dict[str, Any] | None:
    """`cursor` with its values typed as `schema` says, or None if it is not that shape."""
    if not isinstance(cursor, dict) or set(cursor) != set(schema):
        return None
    checked: dict[str, Any] = {}
    for name, kind in schema.items():
        value = _value(cursor[name], kind)
        if value is None:
            return None
        checked[name] = value
    return checked


def _value(value: Any, kind: type | Schema) -> Any:
    """The value as `kind`, or None if it is not one."""
    if isinstance(kind, Mapping):
        return _checked(value, kind)
    check = _CHECKS.get(kind)
    if check is None:
        raise TypeError(f"a cursor schema names {kind!r}; use int, str, bool, datetime or a nested schema")
    return check(value)


def _int(value: Any) -> int | None:
    # JSON's true is a Python int, and 1e30 a float: neither is a position.
    ok = isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    return value if ok else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_CURSOR_STRING else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > MAX_DATETIME_TEXT:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        # In UTC here: a date at the edge of the calendar in another offset
        # would otherwise overflow later, inside a query.
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


_CHECKS: dict[type, Callable[[Any], Any]] = {int: _int, str: _str, bool: _bool, datetime: _datetime}
