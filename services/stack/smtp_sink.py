"""A local SMTP server that keeps every message: the dev stack's and the tests' mail server.

`gofund smtp-sink` runs it on GOFUND_SMTP_PORT and appends each message to
`<data dir>/mail.jsonl` (one JSON object per line: to, subject, body), which is
where a developer, or a test, reads a verification code.
"""

from __future__ import annotations

import asyncio
import json
import signal
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    """aiosmtpd handler: parse each message, keep it in memory and, if given a path, on disk."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.messages: list[dict[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content)
        record = {"to": ", ".join(envelope.rcpt_tos), "subject": str(parsed["Subject"]), "body": _text(parsed)}
        self.messages.append(record)
        if self.path is not None:
            with self.path.open("a") as mail:
                mail.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


def _text(message: Message) -> str:
    part = next((p for p in message.walk() if p.get_content_type() == "text/plain"), message)
    payload = part.get_payload(decode=True)
    return payload.decode(part.get_content_charset() or "utf-8") if isinstance(payload, bytes) else str(payload)


def start(port: int, path: Path | None = None) -> tuple[Controller, Sink]:
    """Start a sink on 127.0.0.1:port in a background thread (port 0 is not supported by aiosmtpd)."""
    sink = Sink(path)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, sink


def main(port: int, path: Path) -> None:
    controller, _ = start(port, path)

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()
