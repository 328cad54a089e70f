"""How verification codes leave the building: email over SMTP, SMS through a sender.

`SmtpEmailSender` speaks SMTP to `GOFUND_SMTP_HOST:GOFUND_SMTP_PORT` (the dev
stack and the tests run a local sink there). SMS has no provider yet:
`LoggingSmsSender` is the development sender and writes the message to the log,
which is where a developer reads the code.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

log = logging.getLogger("gofund.identity.notify")

SENDER = "GoFund <no-reply@gofund.local>"
SMTP_TIMEOUT_S = 5.0


class DeliveryError(Exception):
    """The message could not be handed over."""


class EmailSender(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


class SmsSender(Protocol):
    async def send(self, to: str, body: str) -> None: ...


class SmtpEmailSender:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(message, hostname=self._host, port=self._port, timeout=SMTP_TIMEOUT_S)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {self._host}:{self._port}: {exc}") from exc


class LoggingSmsSender:
    async def send(self, to: str, body: str) -> None:
        log.info("sms (development sender: not delivered)", extra={"to": to, "body": body})
