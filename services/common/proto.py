"""Conversions between protobuf well-known types and Python values, shared by every servicer."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def optional_timestamp(value: datetime | None) -> Timestamp | None:
    """For message constructors: None leaves the field unset."""
    return None if value is None else timestamp(value)


def datetime_of(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)
