"""JSON-line logging, configured once per process."""

import logging
import re
import sys
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from services.common import context


class _RequestIdFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        record.request_id = context.request_id.get()
        return True


# A bank account number after its name, in a query string (`account_number=0123456789`,
# as httpx logs Paystack's Resolve Account URL) or in JSON / a dict's repr.
_ACCOUNT_NUMBER = re.compile(
    r"""(?P<name>account_?number["']?\s*[=:]\s*["']?)(?P<hidden>\d+)(?P<shown>\d{4})""", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with every bank account number masked to its last four digits."""
    return _ACCOUNT_NUMBER.sub(lambda m: m["name"] + "*" * len(m["hidden"]) + m["shown"], text)


class _RedactFilter(logging.Filter):
    """No log line carries a full bank account number, whoever logged it (a library too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def handler(service: str, stream: IO[str] | None = None) -> logging.Handler:
    """The handler every process logs through: JSON lines to stderr (or `stream`), request id, redaction."""
    json_lines = logging.StreamHandler(stream or sys.stderr)
    json_lines.addFilter(_RequestIdFilter(service))
    json_lines.addFilter(_RedactFilter())
    json_lines.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{service}{request_id}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    return json_lines


def configure(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as one JSON object per line."""
    root = logging.getLogger()
    root.handlers[:] = [handler(service)]
    root.setLevel(level.upper())
