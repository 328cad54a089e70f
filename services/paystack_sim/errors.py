"""Paystack's refusals: its error envelope's `code`, `type` and `meta.nextStep`, and the HTTP status.

`{"status": false, "message", "meta": {"nextStep"}, "type", "code"}` as Paystack's
samples print it (Initialize's duplicate reference, Initiate Transfer's invalid
recipient, the API introduction's sample error); `type` is one of
`validation_error`, `processor_error`, `api_error` (Paystack's OpenAPI spec).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Paystack's error `code`s the simulator answers (the first five are from Paystack's samples)."""

    INVALID_PARAMS = "invalid_params"
    MISSING_PARAMS = "missing_params"
    DUPLICATE_REFERENCE = "duplicate_reference"
    TRANSACTION_NOT_FOUND = "transaction_not_found"
    INVALID_TRANSFER_RECIPIENT = "invalid_transfer_recipient"
    NOT_FOUND = "not_found"
    # Simulator's choice: the account number and bank code name no account.
    UNRESOLVABLE_ACCOUNT = "unresolvable_account"
    # Simulator's choice: a /_sim control asked for what has already happened.
    CONFLICT = "conflict"
    # Simulator's choice: a path no route serves, or a method it does not take.
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # Paystack's answer when it failed itself (`api_error`).
    UNKNOWN = "unknown"


# Each code's `meta.nextStep`; Paystack's own words where its samples give them, else the simulator's.
NEXT_STEPS = {
    ErrorCode.INVALID_PARAMS: "Ensure that the parameters you pass are valid and try again",
    ErrorCode.MISSING_PARAMS: "Provide all required params ",  # sic: the sample's trailing space
    ErrorCode.DUPLICATE_REFERENCE: "Try and create the Transaction or Charge with a new reference",
    ErrorCode.TRANSACTION_NOT_FOUND: "Ensure that you're passing the reference of a transaction on this integration",
    ErrorCode.INVALID_TRANSFER_RECIPIENT: (
        "Provide a valid recipient. Ensure you are passing the recipient code in the recipient param"
    ),
    ErrorCode.NOT_FOUND: "Ensure that you are asking for something that exists on this integration",
    ErrorCode.UNRESOLVABLE_ACCOUNT: "Ensure that the account number and the bank code are correct",
    ErrorCode.CONFLICT: "Look at its current status before settling it again",
    ErrorCode.METHOD_NOT_ALLOWED: "Use one of the methods this route takes",
    ErrorCode.UNKNOWN: "Try again later",
}


class PaystackError(Exception):
    """A request Paystack refuses, answered with its error envelope and this HTTP status.

    `{"status": false, "message", "meta": {"nextStep"}, "type", "code"}`; `code=None`
    answers only `status` and `message`, as Paystack's published "Invalid key" does.
    """

    def __init__(
        self,
        message: str,
        http_status: int = 400,
        *,
        code: ErrorCode | None = ErrorCode.INVALID_PARAMS,
        error_type: str = "validation_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.error_type = error_type


class NotFound(PaystackError):
    def __init__(self, message: str, code: ErrorCode = ErrorCode.NOT_FOUND) -> None:
        super().__init__(message, 404, code=code)


class AlreadySettled(PaystackError):
    """A /_sim settle control for a refund or transfer that has already settled."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 409, code=ErrorCode.CONFLICT)


def missing(message: str) -> PaystackError:
    return PaystackError(message, code=ErrorCode.MISSING_PARAMS)
