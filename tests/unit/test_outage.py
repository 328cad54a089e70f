"""The outage log: one WARNING when a dependency goes away, one when it is back, whatever the retries."""

from __future__ import annotations

import logging

import grpc
import psycopg
import pymongo.errors
import pytest
import sqlalchemy.exc

from services.common.outage import Outage, dependency_down, tracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="peer")


def outage_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gofund.outage" and r.levelno >= logging.INFO]


def test_many_failures_are_one_warning_and_the_recovery_one_more_with_its_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage("goals database", clock=clock)
    caplog.set_level(logging.DEBUG, logger="gofund.outage")
    for _ in range(60):
        outage.failed(ConnectionRefusedError("connection refused"))
        clock.now += 0.5
    outage.recovered()
    outage.recovered()  # a second success says nothing

    started, ended = outage_records(caplog)
    assert started.levelno == ended.levelno == logging.WARNING
    assert "goals database" in started.getMessage()
    assert started.error_class == "ConnectionRefusedError"  # type: ignore[attr-defined]
    assert ended.duration_s == 30.0  # type: ignore[attr-defined]
    assert ended.failures == 60  # type: ignore[attr-defined]
    assert "30.0 s" in ended.getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_a_long_outage_is_reminded_of_at_the_reminder_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = Outage("ledger", clock=clock, remind_s=60)
    caplog.set_level(logging.INFO, logger="gofund.outage")
    for _ in range(130):
        outage.failed(OSError("unreachable"))
        clock.now += 1
    messages = [r.getMessage() for r in outage_records(caplog)]
    assert messages == [
        "ledger unavailable; retrying until it is back",
        "ledger still unavailable",
        "ledger still unavailable",
    ]


def test_a_new_outage_after_a_recovery_is_reported_again(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("payments", clock=Clock())
    caplog.set_level(logging.INFO, logger="gofund.outage")
    assert not outage.down
    outage.failed(OSError())
    assert outage.down
    outage.recovered()
    outage.failed(OSError())
    assert len(outage_records(caplog)) == 3


class Resource:
    """Stands for a Database or a gateway: anything loops share and a weak reference can hold."""


def test_every_loop_sharing_a_resource_shares_its_tracker() -> None:
    database, other = Resource(), Resource()
    assert tracker(database, "goals database") is tracker(database, "goals database")
    assert tracker(database, "goals database") is not tracker(database, "ledger")
    assert tracker(database, "goals database") is not tracker(other, "goals database")


@pytest.mark.parametrize(
    "exc",
    [
        sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection")),
        sqlalchemy.exc.InterfaceError("SELECT 1", {}, psycopg.InterfaceError("connection already closed")),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        psycopg.OperationalError("connection refused"),
        pymongo.errors.AutoReconnect("primary gone"),
        pymongo.errors.ServerSelectionTimeoutError("no servers"),
        pymongo.errors.NetworkTimeout("timed out"),
        ConnectionResetError(),
        TimeoutError(),
        rpc_error(grpc.StatusCode.UNAVAILABLE),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_a_dependency_being_away_is_recognised(exc: BaseException) -> None:
    assert dependency_down(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bug"),
        KeyError("missing"),
        sqlalchemy.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key")),
        sqlalchemy.exc.ProgrammingError("SELECT", {}, psycopg.ProgrammingError("syntax error")),
        pymongo.errors.DuplicateKeyError("E11000"),
        rpc_error(grpc.StatusCode.INTERNAL),
        rpc_error(grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_a_bug_or_bad_data_is_not_an_outage(exc: BaseException) -> None:
    assert not dependency_down(exc)
