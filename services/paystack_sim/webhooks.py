"""Webhook delivery the way Paystack does it, on a compressed clock.

Each event is POSTed as JSON `{"event": ..., "data": {...}}` to the webhook URL
with `x-paystack-signature: hex(HMAC-SHA512(secret key, raw body))`. The body
is serialized once, when the event happens, and the same bytes are sent (and
signed) on every attempt, as a receiver comparing signatures expects.

Paystack counts only an HTTP 200 as delivered; any other status, a connection
error or a timeout (30 s) is a failed attempt. Its documented schedule, live
mode: "every 3 minutes for the first 4 tries, then retried hourly for the next
72 hours". The simulator reads that as attempts 1-4 three minutes apart, then
72 hourly attempts: 76 attempts in all, after which the event is marked
`failed` and not sent again (a redelivery through /_sim still can be). Three
minutes are compressed to GOFUND_PAYSTACK_SIM_RETRY_BASE_MS and an hour to 20
of those. (Test mode at Paystack retries hourly for 10 hours; the simulator
follows live mode, the one production depends on.)

Different events are delivered independently and may overlap. The schedule
lives in the state (`next_attempt_at`), so an event still pending when the
simulator stops is resumed when it starts again; an attempt cut off by the
stop was not recorded and is simply made again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import httpx

from services.paystack_sim.records import Attempt, DeliveryStatus, Event, now_ms
from services.paystack_sim.state import State
from services.paystack_sim.timers import Timers

log = logging.getLogger("gofund.paystack_sim")

SIGNATURE_HEADER = "x-paystack-signature"
# Paystack's documented total: 4 tries three minutes apart, then 72 hourly ones.
FAST_ATTEMPTS = 4
MAX_ATTEMPTS = FAST_ATTEMPTS + 72
# One hour is twenty of Paystack's three-minute steps.
HOURLY_STEPS = 20
# Paystack waits 30 seconds for an answer before counting the attempt failed.
ATTEMPT_TIMEOUT_S = 30.0


def sign(secret_key: str, body: bytes) -> str:
    return hmac.new(secret_key.encode(), body, hashlib.sha512).hexdigest()


def retry_delay_ms(failed_attempts: int, retry_base_ms: int) -> int | None:
    """How long after the `failed_attempts`-th failed attempt the next one is made; None: no more attempts."""
    if failed_attempts >= MAX_ATTEMPTS:
        return None
    if failed_attempts < FAST_ATTEMPTS:
        return retry_base_ms
    return HOURLY_STEPS * retry_base_ms


def encode(event: str, data: dict[str, Any]) -> str:
    return json.dumps({"event": event, "data": data}, separators=(",", ":"))


class WebhookDispatcher:
    def __init__(
        self,
        state: State,
        timers: Timers,
        client: httpx.AsyncClient,
        *,
        url: str,
        secret_key: str,
        retry_base_ms: int,
    ) -> None:
        self._state = state
        self._timers = timers
        self._client = client
        self._url = url
        self._secret_key = secret_key
        self._retry_base_ms = retry_base_ms

    @property
    def events(self) -> Sequence[Event]:
        """Every event so far, delivered or not, by index."""
        return self._state.events

    def publish(self, event: str, data: dict[str, Any], reference: str) -> Event:
        """Record the event and deliver it now, retrying on Paystack's schedule."""
        return self._enqueue(event, reference, encode(event, data), redelivery_of=None)

    def redeliver(self, *, index: int | None = None, reference: str | None = None) -> Event | None:
        """Send an earlier event again, byte for byte: the given one, the latest about `reference`, or the latest.

        The copy is a new event with its own attempts; None if there is no such event.
        """
        events = self._state.events
        if index is not None:
            source = events[index] if 0 <= index < len(events) else None
        elif reference is not None:
            source = next((e for e in reversed(events) if e.reference == reference), None)
        else:
            source = events[-1] if events else None
        if source is None:
            return None
        return self._enqueue(source.event, source.reference, source.body, redelivery_of=source.index)

    def resume(self) -> None:
        """Schedule every event that was still pending when the simulator last stopped."""
        for record in self._state.events:
            if record.status is DeliveryStatus.PENDING:
                self._timers.call_at(record.next_attempt_at or now_ms(), partial(self._attempt, record))

    def _enqueue(self, event: str, reference: str, body: str, *, redelivery_of: int | None) -> Event:
        at = now_ms()
        record = Event(
            index=len(self._state.events),
            event=event,
            reference=reference,
            body=body,
            created_at=at,
            next_attempt_at=at,
            redelivery_of=redelivery_of,
        )
        self._state.events.append(record)
        self._state.save()
        self._timers.call_at(at, partial(self._attempt, record))
        return record

    async def _attempt(self, record: Event) -> None:
        content = record.body.encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self._secret_key, content)}
        http_status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(self._url, content=content, headers=headers, timeout=ATTEMPT_TIMEOUT_S)
            http_status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        at = now_ms()
        record.attempts.append(Attempt(at=at, http_status=http_status, error=error))
        delay_ms = retry_delay_ms(len(record.attempts), self._retry_base_ms)
        if http_status == 200:
            record.status, record.next_attempt_at = DeliveryStatus.DELIVERED, None
        elif delay_ms is None:
            record.status, record.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            record.next_attempt_at = at + delay_ms
        self._state.save()
        log.info(
            "webhook %s: attempt %d of event %d (%s) answered %s",
            record.status.value,
            len(record.attempts),
            record.index,
            record.event,
            http_status if http_status is not None else error,
        )
        if record.next_attempt_at is not None:
            self._timers.call_at(record.next_attempt_at, partial(self._attempt, record))
