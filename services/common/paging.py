"""List paging shared by every service: page_size rules and opaque page tokens.

A token is URL-safe base64 of a small JSON object (the cursor). It is opaque to
clients; a token that does not decode is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from services.common.errors import FieldViolation, ValidationFailed

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is lowered to it (AIP-158); negative is invalid."""
    if requested < 0:
        raise ValidationFailed([FieldViolation("page_size", "must not be negative", "INVALID_PAGE_SIZE")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    """The cursor of a token, None for an empty token (the first page)."""
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        cursor = None
    if not isinstance(cursor, dict):
        raise ValidationFailed(
            [FieldViolation("page_token", "is not a token this service issued", "INVALID_PAGE_TOKEN")]
        )
    return cursor
