"""Where a resumable stream starts: one reading of `after_seq` and of an SSE client's Last-Event-ID
for every stream (the ledger's balances, goals' progress, payments' outcomes)."""

from __future__ import annotations

import grpc

from services.common.errors import FieldViolation, ValidationFailed

LAST_EVENT_ID = "last-event-id"
_MAX_SEQ = 2**63 - 1


def after_seq(value: int) -> int:
    """The request's `after_seq`; INVALID_AFTER_SEQ if negative."""
    if value < 0:
        raise ValidationFailed([FieldViolation("after_seq", "must not be negative", "INVALID_AFTER_SEQ")])
    return value


def resume_after(value: int, context: grpc.aio.ServicerContext) -> int:
    """Where a public stream resumes: the request's `after_seq`, or when that is 0 an SSE client's
    Last-Event-ID (Envoy's transcoder passes the header on as `last-event-id` metadata)."""
    if value:
        return after_seq(value)
    header = next((str(m.value) for m in context.invocation_metadata() or () if m.key == LAST_EVENT_ID), "")
    if not header:
        return 0
    # A seq as the stream sent it: ASCII digits only (int() would also take a sign, spaces, "1_000").
    if not (len(header) <= 19 and header.isascii() and header.isdigit() and int(header) <= _MAX_SEQ):
        raise ValidationFailed(
            [FieldViolation(LAST_EVENT_ID, "must be the seq of a message of this stream", "INVALID_LAST_EVENT_ID")]
        )
    return int(header)
