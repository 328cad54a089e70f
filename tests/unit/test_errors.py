import grpc
from google.rpc import error_details_pb2, status_pb2

from services.common.errors import (
    DomainError,
    ErrorMapping,
    ErrorTable,
    FieldViolation,
    IdempotencyKeyReused,
    ValidationFailed,
    Validator,
)


class GoalNotOpen(DomainError):
    pass


class GoalExpired(GoalNotOpen):
    pass


class Unmapped(DomainError):
    pass


TABLE = ErrorTable(
    domain="goals.gofund",
    entries={GoalNotOpen: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "GOAL_NOT_OPEN")},
)


def details(status: grpc.Status) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    decoded = status_pb2.Status.FromString(value)
    info = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(info)
    return decoded, info


def test_mapped_error_becomes_its_code_with_reason_and_domain() -> None:
    status = TABLE.to_status(GoalNotOpen("goal is not open", metadata={"goal_id": "g1"}))
    decoded, info = details(status)
    assert status.code is grpc.StatusCode.FAILED_PRECONDITION
    assert status.details == "goal is not open"
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "GOAL_NOT_OPEN",
        "goals.gofund",
        {"goal_id": "g1"},
    )
    assert decoded.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]


def test_subclass_uses_the_mapping_of_its_base() -> None:
    assert TABLE.to_status(GoalExpired("expired")).code is grpc.StatusCode.FAILED_PRECONDITION


def test_common_errors_are_in_every_table() -> None:
    status = TABLE.to_status(IdempotencyKeyReused("key used with other input"))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details(status)[1].reason == "IDEMPOTENCY_KEY_REUSED"


def test_unmapped_domain_error_is_internal_and_hides_its_message() -> None:
    status = TABLE.to_status(Unmapped("table secret leaked"))
    assert status.code is grpc.StatusCode.INTERNAL
    assert "secret" not in status.details
    assert details(status)[1].reason == "INTERNAL"


def test_validation_failure_lists_every_field_and_takes_the_first_reason() -> None:
    validator = Validator()
    validator.require(False, "title", "must be 3 to 120 characters", "INVALID_TITLE")
    validator.require(True, "currency", "unused", "UNUSED")
    validator.require(False, "deadline", "must be in the future", "INVALID_DEADLINE")
    try:
        validator.raise_if_invalid()
    except ValidationFailed as exc:
        status = TABLE.to_status(exc)
    decoded, info = details(status)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "INVALID_TITLE"
    bad_request = error_details_pb2.BadRequest()
    assert decoded.details[1].Unpack(bad_request)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("title", "INVALID_TITLE"),
        ("deadline", "INVALID_DEADLINE"),
    ]


def test_validator_with_no_violations_does_not_raise() -> None:
    validator = Validator()
    assert validator.require(True, "amount", "must be positive", "INVALID_AMOUNT")
    validator.raise_if_invalid()


def test_validation_without_reasons_falls_back_to_the_table_reason() -> None:
    status = TABLE.to_status(ValidationFailed([FieldViolation("amount", "must be positive")]))
    assert details(status)[1].reason == "VALIDATION_FAILED"
