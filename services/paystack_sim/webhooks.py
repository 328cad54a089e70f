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

An event is recorded in the state first (`record`, saved by the caller in the
same write as the change that caused it) and only then sent (`dispatch`), so
nothing is ever delivered that the state file does not hold.

A test can lose an event on purpose (/_sim/webhooks/drop): a pending one at
once, or the next one recorded (about a given reference), by a drop armed in
the state. A dropped event keeps its bytes and is never POSTed again, not even
after a restart.
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

from services.paystack_sim.errors import ErrorCode, NotFound, PaystackError
from services.paystack_sim.records import Attempt, DeliveryStatus, Drop, Event, now_ms
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
        # Events whose POST is on the wire now: too late to drop.
        self._in_flight: set[int] = set()

    @property
    def events(self) -> Sequence[Event]:
        """Every event so far, delivered or not, by index."""
        return self._state.events

    def record(self, event: str, data: dict[str, Any], reference: str) -> Event:
        """Add the event to the state, unsaved; the caller saves it with the change that caused it."""
        return self._new_event(event, reference, encode(event, data), redelivery_of=None)

    def dispatch(self, record: Event) -> None:
        """Start delivering a recorded (and saved) event, unless it was dropped."""
        if record.status is DeliveryStatus.PENDING:
            self._timers.call_at(record.next_attempt_at or now_ms(), partial(self._attempt, record))

    def redeliver(self, *, index: int | None = None, reference: str | None = None) -> Event | None:
        """Send an earlier event again, byte for byte: the given one, the latest about `reference`, or the latest.

        The copy is a new event with its own attempts (an armed drop applies to it
        like to any new event); None if there is no such event.
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
        record = self._new_event(source.event, source.reference, source.body, redelivery_of=source.index)
        self._state.save(record)
        self.dispatch(record)
        return record

    def drop(self, *, index: int | None = None, reference: str | None = None) -> Event | Drop:
        """Lose an event on purpose; returns the event dropped now, or the drop armed for a later one.

        `index`: that pending event. `reference`: the oldest pending event about it,
        or else the next one recorded about it. Neither: the next event recorded.
        """
        if index is not None:
            events = self._state.events
            record = events[index] if 0 <= index < len(events) else None
            if record is None or record.status is not DeliveryStatus.PENDING:
                raise NotFound(f"No pending event {index} to drop")
            return self._drop_now(record)
        if reference is not None:
            pending = next(
                (e for e in self._state.events if e.reference == reference and e.status is DeliveryStatus.PENDING),
                None,
            )
            if pending is not None:
                return self._drop_now(pending)
        armed = Drop(reference=reference, armed_at=now_ms())
        self._state.drops.append(armed)
        self._state.save()
        return armed

    def resume(self) -> None:
        """Schedule every event that was still pending when the simulator last stopped."""
        for record in self._state.events:
            self.dispatch(record)

    def _drop_now(self, record: Event) -> Event:
        if record.index in self._in_flight:
            # Its bytes are on the wire already; "never delivered" could not be kept.
            raise PaystackError(
                f"Event {record.index} is being delivered right now; it cannot be dropped", 409, code=ErrorCode.CONFLICT
            )
        record.status, record.next_attempt_at, record.dropped_at = DeliveryStatus.DROPPED, None, now_ms()
        self._state.save(record)
        return record

    def _new_event(self, event: str, reference: str, body: str, *, redelivery_of: int | None) -> Event:
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
        armed = next((d for d in self._state.drops if d.matches(reference)), None)
        if armed is not None:
            # The oldest matching drop is used up by this one event.
            self._state.drops.remove(armed)
            record.status, record.next_attempt_at, record.dropped_at = DeliveryStatus.DROPPED, None, at
        self._state.events.append(record)
        return record

    async def _attempt(self, record: Event) -> None:
        if record.status is not DeliveryStatus.PENDING:
            return  # dropped while this attempt waited for its moment
        content = record.body.encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self._secret_key, content)}
        http_status: int | None = None
        error: str | None = None
        self._in_flight.add(record.index)
        try:
            response = await self._client.post(self._url, content=content, headers=headers, timeout=ATTEMPT_TIMEOUT_S)
            http_status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._in_flight.discard(record.index)
        at = now_ms()
        record.attempts.append(Attempt(at=at, http_status=http_status, error=error))
        delay_ms = retry_delay_ms(len(record.attempts), self._retry_base_ms)
        if http_status == 200:
            record.status, record.next_attempt_at = DeliveryStatus.DELIVERED, None
        elif delay_ms is None:
            record.status, record.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            record.next_attempt_at = at + delay_ms
        self._state.save(record)
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
