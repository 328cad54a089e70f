"""The one id parser: a UUID string in, its canonical form out, or the caller's domain error.

Ids are compared as strings in memory (watchers, postings, fingerprints, page
tokens) and uuid.UUID also parses upper-case, braced and hyphen-less forms, so
every id is brought to one form (lower-case, hyphenated) where a request enters.
Each caller names its field and its reason (INVALID_GOAL_ID, ...): those
reasons are part of the API contract.
"""

from __future__ import annotations

import uuid

from services.common.errors import FieldViolation, ValidationFailed, Validator

MUST_BE_UUID = "must be a UUID"


def canonical_id(value: str) -> str | None:
    """The UUID in its one stored form (lower-case, hyphenated), or None if it is not one."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def is_uuid(value: str) -> bool:
    return canonical_id(value) is not None


def parse_id(value: str, field: str, reason: str) -> str:
    """The canonical id; ValidationFailed (one violation of `field` with `reason`) otherwise."""
    canonical = canonical_id(value)
    if canonical is None:
        raise ValidationFailed([FieldViolation(field, MUST_BE_UUID, reason)])
    return canonical


def check_id(check: Validator, value: str, field: str, reason: str) -> str:
    """As parse_id, but adds the violation to `check` (so a request reports all at once);
    the canonical id, or "" when it is not one."""
    canonical = canonical_id(value)
    check.require(canonical is not None, field, MUST_BE_UUID, reason)
    return canonical or ""
