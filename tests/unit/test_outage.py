"""The outage log: one WARNING when a dependency goes away, one when it is back, whatever the retries."""

from __future__ import annotations

import logging
from datetime import timedelta

import grpc
import psycopg
import pymongo.errors
import pytest
import sqlalchemy.exc

from services.common.outage import TRANSIENT_CODES, Outage, backoff_s, dependency_down, tracker, unreachable
from services.goals.sagas import _retry_delay
from services.payments.domain import PaystackUnavailable
from services.payments.processor import transient


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
        # A replica that does not have the method yet (rolling deploy), a peer shutting down.
        rpc_error(grpc.StatusCode.UNIMPLEMENTED),
        rpc_error(grpc.StatusCode.CANCELLED),
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


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_a_peer_is_unreachable_exactly_for_the_transient_codes(code: grpc.StatusCode) -> None:
    assert unreachable(rpc_error(code)) is (code in TRANSIENT_CODES)
    assert dependency_down(rpc_error(code)) is (code in TRANSIENT_CODES)


def test_payments_retries_every_transient_code_without_counting_it_towards_parking() -> None:
    assert all(transient(rpc_error(code)) for code in TRANSIENT_CODES)
    assert transient(PaystackUnavailable("down"))
    assert not transient(rpc_error(grpc.StatusCode.FAILED_PRECONDITION))
    assert not transient(ValueError("bug"))


def test_backoff_without_jitter_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff_s(n, 5, 60, jitter=False) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert backoff_s(0, 5, 60, jitter=False) == 5
    assert backoff_s(10_000, 5, 3600, jitter=False) == 3600


def test_goals_saga_backoff_is_the_one_it_had() -> None:
    # What goals' own copy (domain.retry_delay, gone) gave: base doubling per failure, capped.
    base, cap = timedelta(seconds=5), timedelta(minutes=10)
    waits = [_retry_delay(failures, base=base, cap=cap).total_seconds() for failures in [1, 2, 3, 7, 8, 31, 10_000]]
    assert waits == [5, 10, 20, 320, 600, 600, 600]


def test_backoff_with_jitter_stays_in_the_upper_half_of_the_exponential_step() -> None:
    for attempt in range(1, 12):
        ceiling = min(10.0, 0.1 * 2 ** (attempt - 1))
        waits = [backoff_s(attempt, 0.1, 10.0) for _ in range(50)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    assert len({backoff_s(3, 0.1, 10.0) for _ in range(50)}) > 1
