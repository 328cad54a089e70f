"""JSON-line logging, configured once per process."""

import logging
import sys

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


def configure(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(service))
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{service}{request_id}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
