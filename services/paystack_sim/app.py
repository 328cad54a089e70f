"""The simulator's HTTP routes: Paystack's API, the checkout page and the /_sim test controls.

Paystack's routes answer its envelope, `{"status": true, "message": ..., "data": ...}`,
or `{"status": false, "message": ...}` on an error (HTTP 400 for a refused
request, 401 for a bad key). They take JSON or form fields, as Paystack does,
and require `Authorization: Bearer <secret key>`. The checkout (the customer's
browser) and /_sim (tests and developers) take no key.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.paystack_sim import checkout, shapes
from services.paystack_sim.domain import NotFound, Paystack, PaystackError
from services.paystack_sim.records import Event, Refund, iso
from services.paystack_sim.webhooks import WebhookDispatcher

_WITHOUT_KEY = ("/checkout/", "/_sim/")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _ok(message: str, data: Any) -> web.Response:
    return web.json_response({"status": True, "message": message, "data": data})


@web.middleware
async def _paystack_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PaystackError as exc:
        return web.json_response({"status": False, "message": exc.message}, status=exc.http_status)


def _authenticate(secret_key: str) -> Middleware:
    expected = secret_key.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(_WITHOUT_KEY):
            return await handler(request)
        # Paystack's three answers, from its published error list.
        header = request.headers.get("Authorization")
        if header is None:
            raise PaystackError("No Authorization Header was found", 401)
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise PaystackError("Format is Authorization Bearer [secret key]", 401)
        if not hmac.compare_digest(key.strip().encode(), expected):
            raise PaystackError("Invalid key", 401)
        return await handler(request)

    return authenticate


async def _sent_as_form(request: web.Request) -> bool:
    # `curl -d '{...}'` labels a JSON body a form when no content type is given; it is still JSON.
    return request.content_type in _FORM_TYPES and not (await request.read()).lstrip().startswith(b"{")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    if await _sent_as_form(request):
        form = await request.post()
        return {name: value for name, value in form.items() if isinstance(value, str)}
    try:
        parsed = json.loads(await request.read())
    except ValueError:
        raise PaystackError("The request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise PaystackError("The request body must be a JSON object")
    return parsed


def _event(record: Event) -> dict[str, Any]:
    last = record.attempts[-1] if record.attempts else None
    return {
        "index": record.index,
        "event": record.event,
        "reference": record.reference,
        "status": record.status.value,
        "attempts": len(record.attempts),
        "last_http_status": last.http_status if last else None,
        "attempt_log": [
            {"at": iso(attempt.at), "http_status": attempt.http_status, "error": attempt.error}
            for attempt in record.attempts
        ],
        "created_at": iso(record.created_at),
        "next_attempt_at": iso(record.next_attempt_at) if record.next_attempt_at is not None else None,
        "redelivery_of": record.redelivery_of,
        "payload": json.loads(record.body),
    }


class Routes:
    def __init__(self, paystack: Paystack, webhooks: WebhookDispatcher) -> None:
        self._paystack = paystack
        self._webhooks = webhooks

    # Paystack's API.

    async def initialize(self, request: web.Request) -> web.Response:
        record = self._paystack.initialize(await _body(request))
        data = {
            "authorization_url": self._paystack.authorization_url(record),
            "access_code": record.access_code,
            "reference": record.reference,
        }
        return _ok("Authorization URL created", data)

    async def verify(self, request: web.Request) -> web.Response:
        record = self._paystack.transaction(request.match_info["reference"])
        return _ok("Verification successful", shapes.transaction(record, self._paystack.customer_of(record)))

    async def create_refund(self, request: web.Request) -> web.Response:
        record = self._paystack.create_refund(await _body(request))
        return _ok("Refund has been queued for processing", self._refund(record))

    async def fetch_refund(self, request: web.Request) -> web.Response:
        key = request.match_info["refund_id"]
        if not key.isdigit():
            raise NotFound("Refund not found")
        return _ok("Refund retrieved", self._refund(self._paystack.refund(key)))

    async def create_recipient(self, request: web.Request) -> web.Response:
        record = self._paystack.create_recipient(await _body(request))
        return _ok("Transfer recipient created successfully", shapes.recipient(record))

    async def initiate_transfer(self, request: web.Request) -> web.Response:
        record = self._paystack.initiate_transfer(await _body(request))
        return _ok("Transfer has been queued", shapes.transfer(record, self._paystack.recipient_of(record)))

    async def verify_transfer(self, request: web.Request) -> web.Response:
        record = self._paystack.transfer(request.match_info["reference"])
        return _ok("Transfer retrieved", shapes.transfer_event(record, self._paystack.recipient_of(record)))

    # The checkout.

    async def checkout_page(self, request: web.Request) -> web.Response:
        try:
            record = self._paystack.checkout(request.match_info["access_code"])
        except NotFound as exc:
            return web.Response(text=checkout.message_page(exc.message), status=404, content_type="text/html")
        page = checkout.checkout_page(record, self._paystack.customer_of(record).email)
        return web.Response(text=page, content_type="text/html")

    async def pay(self, request: web.Request) -> web.Response:
        from_form = await _sent_as_form(request)
        body = await _body(request)
        try:
            record = self._paystack.pay(
                request.match_info["access_code"], body.get("outcome", "success"), body.get("amount")
            )
        except PaystackError as exc:
            if from_form:
                return web.Response(
                    text=checkout.message_page(exc.message), status=exc.http_status, content_type="text/html"
                )
            raise
        if from_form:
            location = checkout.callback_location(record)
            if location is not None:
                raise web.HTTPSeeOther(location)
            return web.Response(text=checkout.result_page(record), content_type="text/html")
        return _ok("Charge attempted", shapes.transaction(record, self._paystack.customer_of(record)))

    # Test controls.

    async def settle_refund(self, request: web.Request) -> web.Response:
        body = await _body(request)
        record = self._paystack.settle_refund(request.match_info["key"], body.get("outcome", "success"))
        return _ok("Refund settled", self._refund(record))

    async def settle_transfer(self, request: web.Request) -> web.Response:
        body = await _body(request)
        record = self._paystack.settle_transfer(request.match_info["key"], body.get("outcome", "success"))
        return _ok("Transfer settled", shapes.transfer_event(record, self._paystack.recipient_of(record)))

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await _body(request)
        index, reference = body.get("event_index"), body.get("reference")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise PaystackError("event_index must be an integer")
        if reference is not None and not isinstance(reference, str):
            raise PaystackError("reference must be a string")
        record = self._webhooks.redeliver(index=index, reference=reference)
        if record is None:
            raise NotFound("No such event to redeliver")
        return _ok("Event queued for redelivery", _event(record))

    async def events(self, request: web.Request) -> web.Response:
        wanted_event = request.query.get("event")
        wanted_reference = request.query.get("reference")
        listed = [
            _event(record)
            for record in self._webhooks.events
            if wanted_event in (None, record.event) and wanted_reference in (None, record.reference)
        ]
        return _ok("Events retrieved", listed)

    def _refund(self, record: Refund) -> dict[str, Any]:
        refunded = self._paystack.refunded_transaction(record)
        return shapes.refund(record, refunded, self._paystack.customer_of(refunded))


def build_app(paystack: Paystack, webhooks: WebhookDispatcher, *, secret_key: str) -> web.Application:
    routes = Routes(paystack, webhooks)
    app = web.Application(middlewares=[_paystack_errors, _authenticate(secret_key)])
    app.add_routes(
        [
            web.post("/transaction/initialize", routes.initialize),
            web.get("/transaction/verify/{reference}", routes.verify),
            web.post("/refund", routes.create_refund),
            web.get("/refund/{refund_id}", routes.fetch_refund),
            web.post("/transferrecipient", routes.create_recipient),
            web.post("/transfer", routes.initiate_transfer),
            web.get("/transfer/verify/{reference}", routes.verify_transfer),
            web.get("/checkout/{access_code}", routes.checkout_page),
            web.post("/checkout/{access_code}/pay", routes.pay),
            web.post("/_sim/refunds/{key}/settle", routes.settle_refund),
            web.post("/_sim/transfers/{key}/settle", routes.settle_transfer),
            web.post("/_sim/webhooks/redeliver", routes.redeliver),
            web.get("/_sim/events", routes.events),
        ]
    )
    return app
