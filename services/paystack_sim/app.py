"""The simulator's HTTP routes: Paystack's API, the checkout page and the /_sim test controls.

Paystack's routes answer its envelope, `{"status": true, "message": ..., "data": ...}`,
or `{"status": false, "message": ...}` on an error (HTTP 400 for a refused
request, 401 for a bad key, 404 where Paystack's samples answer it); list
routes add `meta` beside `data`. They take JSON or form fields, as Paystack
does, and require `Authorization: Bearer <secret key>`. The checkout (the
customer's browser) and /_sim (tests and developers) take no key.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.paystack_sim import banks, checkout, listing, shapes
from services.paystack_sim.domain import Paystack
from services.paystack_sim.errors import NEXT_STEPS, ErrorCode, NotFound, PaystackError
from services.paystack_sim.records import Drop, Event, Refund, RefundStatus, iso
from services.paystack_sim.webhooks import WebhookDispatcher

log = logging.getLogger("gofund.paystack_sim")

_WITHOUT_KEY = ("/checkout/", "/_sim/")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _ok(message: str, data: Any) -> web.Response:
    return web.json_response({"status": True, "message": message, "data": data})


def _listed(message: str, data: list[dict[str, Any]], meta: dict[str, int]) -> web.Response:
    # Paystack puts a list's `meta` beside `data`, not inside it.
    return web.json_response({"status": True, "message": message, "data": data, "meta": meta})


def _filter(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    return value or None


def _error(exc: PaystackError) -> web.Response:
    body: dict[str, Any] = {"status": False, "message": exc.message}
    if exc.code is not None:
        # Paystack's error envelope (its Initialize sample adds errorCodeMappingNotFound; so do we, everywhere).
        body |= {
            "meta": {"nextStep": NEXT_STEPS[exc.code]},
            "type": exc.error_type,
            "code": exc.code.value,
            "errorCodeMappingNotFound": False,
        }
    return web.json_response(body, status=exc.http_status)


@web.middleware
async def _paystack_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in Paystack's JSON envelope: refusals, unrouted paths and methods, and our own failures."""
    try:
        return await handler(request)
    except PaystackError as exc:
        return _error(exc)
    except web.HTTPNotFound:
        return _error(NotFound(f"No route {request.path}"))  # simulator's choice of words
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"  # simulator's choice
        return _error(PaystackError(message, 405, code=ErrorCode.METHOD_NOT_ALLOWED))
    except web.HTTPException:
        raise  # the checkout's redirect
    except Exception:
        log.exception("simulator request failed", extra={"path": request.path})
        return _error(PaystackError("An error occurred", 500, code=ErrorCode.UNKNOWN, error_type="api_error"))


def _authenticate(secret_key: str) -> Middleware:
    expected = secret_key.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(_WITHOUT_KEY):
            return await handler(request)
        # Paystack's three answers, from its published error list.
        header = request.headers.get("Authorization")
        if header is None:
            raise PaystackError("No Authorization Header was found", 401, code=None)
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise PaystackError("Format is Authorization Bearer [secret key]", 401, code=None)
        if not hmac.compare_digest(key.strip().encode(), expected):
            raise PaystackError("Invalid key", 401, code=None)
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
        "dropped_at": iso(record.dropped_at) if record.dropped_at is not None else None,
        "payload": json.loads(record.body),
    }


def _drop(record: Drop) -> dict[str, Any]:
    return {"reference": record.reference, "armed_at": iso(record.armed_at)}


def _event_selector(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """`event_index` and `reference` of a /_sim/webhooks control, type-checked."""
    index, reference = body.get("event_index"), body.get("reference")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise PaystackError("event_index must be an integer")
    if reference is not None and (not isinstance(reference, str) or not reference):
        raise PaystackError("reference must be a non-empty string")
    return index, reference


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

    async def fetch_transaction(self, request: web.Request) -> web.Response:
        record = self._paystack.transaction_by_id(request.match_info["transaction_id"])
        return _ok("Transaction retrieved", shapes.fetched_transaction(record, self._paystack.customer_of(record)))

    async def list_transactions(self, request: web.Request) -> web.Response:
        at = listing.window(request.query)
        matching = self._paystack.list_transactions(_filter(request, "status"), listing.period(request.query))
        page, meta = listing.paginate(matching, at)
        # Paystack's pagination sample adds the matched transactions' summed amount to this list's meta.
        meta = {**meta, "total_volume": sum(t.amount for t in matching)}
        data = [shapes.listed_transaction(t, self._paystack.customer_of(t)) for t in page]
        return _listed("Transactions retrieved", data, meta)

    async def create_refund(self, request: web.Request) -> web.Response:
        record = self._paystack.create_refund(await _body(request))
        return _ok("Refund has been queued for processing", self._refund(record))

    async def fetch_refund(self, request: web.Request) -> web.Response:
        record = self._paystack.refund_by_id(request.match_info["refund_id"])
        return _ok("Refund retrieved", shapes.fetched_refund(record, self._paystack.refunded_transaction(record)))

    async def list_refunds(self, request: web.Request) -> web.Response:
        at = listing.window(request.query)
        matching = self._paystack.list_refunds(_filter(request, "transaction"), listing.period(request.query))
        page, meta = listing.paginate(matching, at)
        # Paystack's OpenAPI spec (RefundListResponse) adds the failed refunds among those listed.
        meta = {**meta, "failedRefundCount": sum(1 for r in matching if r.status is RefundStatus.FAILED)}
        data = [shapes.listed_refund(r, self._paystack.refunded_transaction(r)) for r in page]
        return _listed("Refunds retrieved", data, meta)

    async def create_recipient(self, request: web.Request) -> web.Response:
        record = self._paystack.create_recipient(await _body(request))
        return _ok("Transfer recipient created successfully", shapes.recipient(record))

    async def initiate_transfer(self, request: web.Request) -> web.Response:
        record = self._paystack.initiate_transfer(await _body(request))
        return _ok("Transfer has been queued", shapes.transfer(record, self._paystack.recipient_of(record)))

    async def verify_transfer(self, request: web.Request) -> web.Response:
        record = self._paystack.verified_transfer(request.match_info["reference"])
        return _ok("Transfer retrieved", shapes.verified_transfer(record, self._paystack.recipient_of(record)))

    async def list_transfers(self, request: web.Request) -> web.Response:
        at = listing.window(request.query)
        matching = self._paystack.list_transfers(
            _filter(request, "status"), _filter(request, "recipient"), listing.period(request.query)
        )
        page, meta = listing.paginate(matching, at)
        data = [shapes.listed_transfer(t, self._paystack.recipient_of(t)) for t in page]
        return _listed("Transfers retrieved", data, meta)

    async def list_banks(self, request: web.Request) -> web.Response:
        shown, meta = banks.page(banks.listed(request.query), request.query, listing.window(request.query))
        verification = request.query.get("enabled_for_verification", "").lower() in ("true", "1")
        return _listed("Banks retrieved", [banks.printed(b, verification=verification) for b in shown], meta)

    async def resolve_account(self, request: web.Request) -> web.Response:
        account_number = request.query.get("account_number", "").strip()
        bank, account_name = banks.resolve(account_number, request.query.get("bank_code", "").strip())
        data = {"account_number": account_number, "account_name": account_name, "bank_id": bank.id}
        return _ok("Account number resolved", data)

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

    async def dashboard_refund(self, request: web.Request) -> web.Response:
        record = self._paystack.dashboard_refund(await _body(request))
        return _ok("Refund has been queued for processing", self._refund(record))

    async def settle_refund(self, request: web.Request) -> web.Response:
        body = await _body(request)
        record = self._paystack.settle_refund(request.match_info["key"], body.get("outcome", "success"))
        return _ok("Refund settled", shapes.fetched_refund(record, self._paystack.refunded_transaction(record)))

    async def settle_transfer(self, request: web.Request) -> web.Response:
        body = await _body(request)
        record = self._paystack.settle_transfer(request.match_info["key"], body.get("outcome", "success"))
        return _ok("Transfer settled", shapes.transfer_event(record, self._paystack.recipient_of(record)))

    async def redeliver(self, request: web.Request) -> web.Response:
        index, reference = _event_selector(await _body(request))
        record = self._webhooks.redeliver(index=index, reference=reference)
        if record is None:
            raise NotFound("No such event to redeliver")
        return _ok("Event queued for redelivery", _event(record))

    async def drop(self, request: web.Request) -> web.Response:
        index, reference = _event_selector(await _body(request))
        outcome = self._webhooks.drop(index=index, reference=reference)
        if isinstance(outcome, Event):
            return _ok("Event dropped; it will not be delivered", {"dropped": _event(outcome), "armed": None})
        about = f" about {outcome.reference}" if outcome.reference is not None else ""
        return _ok(
            f"Drop armed; the next event{about} will not be delivered", {"dropped": None, "armed": _drop(outcome)}
        )

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
            web.get("/transaction", routes.list_transactions),
            web.get("/transaction/{transaction_id}", routes.fetch_transaction),
            web.post("/refund", routes.create_refund),
            web.get("/refund", routes.list_refunds),
            web.get("/refund/{refund_id}", routes.fetch_refund),
            web.post("/transferrecipient", routes.create_recipient),
            web.post("/transfer", routes.initiate_transfer),
            web.get("/transfer", routes.list_transfers),
            web.get("/transfer/verify/{reference}", routes.verify_transfer),
            web.get("/bank", routes.list_banks),
            web.get("/bank/resolve", routes.resolve_account),
            web.get("/checkout/{access_code}", routes.checkout_page),
            web.post("/checkout/{access_code}/pay", routes.pay),
            web.post("/_sim/refunds", routes.dashboard_refund),
            web.post("/_sim/refunds/{key}/settle", routes.settle_refund),
            web.post("/_sim/transfers/{key}/settle", routes.settle_transfer),
            web.post("/_sim/webhooks/redeliver", routes.redeliver),
            web.post("/_sim/webhooks/drop", routes.drop),
            web.get("/_sim/events", routes.events),
        ]
    )
    return app
