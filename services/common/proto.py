"""Conversions between protobuf well-known types and Python values, shared by every servicer."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import FieldViolation, ValidationFailed


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def optional_timestamp(value: datetime | None) -> Timestamp | None:
    """For message constructors: None leaves the field unset."""
    return None if value is None else timestamp(value)


def datetime_of(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def request_datetime(message: Message, field: str, reason: str) -> datetime | None:
    """A request's timestamp field as a datetime, None if unset; a value no
    datetime can hold (year 0, 10000...) is the caller's error, not ours."""
    if not message.HasField(field):
        return None
    try:
        return datetime_of(getattr(message, field))
    except (ValueError, OverflowError):
        raise ValidationFailed([FieldViolation(field, "is not a valid timestamp", reason)]) from None
