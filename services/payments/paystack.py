"""A small typed client for the parts of Paystack's API payments uses.

One `httpx.AsyncClient` per process (created in `main`, closed on shutdown),
base URL and secret key from the settings, so the same code talks to Paystack
or to the simulator. Paystack answers `{status, message, data}`, or on an error
`{status: false, message, type, code, meta}`: a refusal (4xx) becomes
`PaystackRejected` with Paystack's message and `code` (404 `PaystackNotFound`);
a 5xx, a timeout, a refused connection, its rate limit or a refused secret key
becomes `PaystackUnavailable` (nothing was decided there).

Every call has a deadline (the whole call, retries included). A call is
repeated only where repeating it is safe: reads; initialize and transfer,
which carry our own reference that Paystack refuses to reuse (the callers turn
a `duplicate_reference` into "the first attempt got there"); and
transferrecipient, which answers the same recipient for the same account. A
refund is never repeated here: Paystack keeps no key for it, so the caller
decides from what it stored. Any call is repeated after Paystack's 429 when
its `Retry-After` fits in the deadline, and after a connection that was
refused (the request never left).

The PyPI clients we looked at hard-code the base URL and open a connection per
call, hence this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from services.payments.domain import (
    AccountNotResolved,
    PaystackNotFound,
    PaystackRejected,
    PaystackUnavailable,
    RecipientRejected,
)

log = logging.getLogger("gofund.paystack")

ATTEMPTS = 3
BACKOFF_S = 0.2
# A Retry-After longer than this is not waited for, whatever the deadline: the caller retries later.
MAX_RETRY_AFTER_S = 5.0
LIST_PAGE_SIZE = 100


@dataclass(frozen=True)
class Retry:
    """Paystack's answer could not be used this time; `after_s` is how long to wait before asking again."""

    error: PaystackUnavailable
    after_s: float


@dataclass(frozen=True)
class Checkout:
    authorization_url: str
    access_code: str
    reference: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Charge:
    """A transaction as `GET /transaction/verify/:reference` reports it."""

    status: str  # success, failed, abandoned, ongoing, pending, reversed ...
    reference: str
    amount: int
    currency: str
    paid_at: str | None
    gateway_response: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Refund:
    """A refund as Paystack reports it (Create, Fetch and List Refunds)."""

    id: str
    status: str  # pending, processing, processed, failed ...
    data: dict[str, Any]

    @property
    def amount(self) -> int:
        return int(self.data.get("amount") or 0)

    @property
    def currency(self) -> str:
        return str(self.data.get("currency") or "").upper()

    @property
    def transaction_id(self) -> str:
        """The refunded transaction's Paystack id: a number in Fetch and List, an object in Create."""
        transaction = self.data.get("transaction")
        if isinstance(transaction, dict):
            transaction = transaction.get("id")
        return "" if transaction in (None, "") else str(transaction)


@dataclass(frozen=True)
class Recipient:
    recipient_code: str
    data: dict[str, Any]


@dataclass(frozen=True)
class ResolvedAccount:
    """Resolve Account Number's answer: the name the bank holds for the account."""

    account_number: str
    account_name: str


@dataclass(frozen=True)
class Bank:
    name: str
    code: str
    currency: str


@dataclass(frozen=True)
class Transfer:
    transfer_code: str
    status: str
    reference: str
    data: dict[str, Any]

    @property
    def amount(self) -> int:
        return int(self.data.get("amount") or 0)

    @property
    def currency(self) -> str:
        return str(self.data.get("currency") or "").upper()


class Paystack:
    def __init__(
        self, base_url: str, secret_key: str, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        # httpx's timeouts bound each phase (connect, each read); this bounds the
        # whole call, so a caller holding a lease knows it outlives the call.
        # (`transport`: tests answer as Paystack does when it fails, which the simulator does not.)
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {secret_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    # -- transactions ------------------------------------------------------------
    async def initialize(
        self,
        *,
        email: str,
        amount: int,
        currency: str,
        reference: str,
        callback_url: str,
        metadata: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> Checkout:
        body: dict[str, Any] = {
            "email": email,
            "amount": amount,
            "currency": currency,
            "reference": reference,
            "metadata": dict(metadata),
        }
        if callback_url:
            body["callback_url"] = callback_url
        data = await self._call("POST", "/transaction/initialize", json=body, safe=True, timeout_s=timeout_s)
        return Checkout(
            authorization_url=str(data["authorization_url"]),
            access_code=str(data.get("access_code", "")),
            reference=str(data.get("reference", reference)),
            data=data,
        )

    async def verify(self, reference: str, *, timeout_s: float | None = None) -> Charge:
        data = await self._call("GET", f"/transaction/verify/{reference}", safe=True, timeout_s=timeout_s)
        return _charge(data, reference)

    async def transactions(self) -> AsyncIterator[Charge]:
        """Every transaction of the integration (List Transactions), page by page."""
        async for data in self._pages("/transaction"):
            yield _charge(data, "")

    # -- refunds -------------------------------------------------------------------
    async def refund(
        self, *, transaction: str, amount: int, merchant_note: str, timeout_s: float | None = None
    ) -> Refund:
        body = {"transaction": transaction, "amount": amount, "merchant_note": merchant_note}
        data = await self._call("POST", "/refund", json=body, timeout_s=timeout_s)
        return _refund(data)

    async def refunds(self, transaction: str = "") -> AsyncIterator[Refund]:
        """Refunds (List Refunds), page by page; `transaction` (its Paystack id) narrows the list.

        Every refund is checked against `transaction` here too: the filter is
        the simulator's reading of Paystack's list, and a Paystack that ignored
        it must not make another charge's refund look like this one's.
        """
        async for data in self._pages("/refund", {"transaction": transaction} if transaction else {}):
            refund = _refund(data)
            if not transaction or refund.transaction_id == transaction:
                yield refund

    # -- transfers -------------------------------------------------------------------
    async def create_recipient(
        self, *, recipient_type: str, name: str, account_number: str, bank_code: str, currency: str
    ) -> Recipient:
        body = {
            "type": recipient_type,
            "name": name,
            "account_number": account_number,
            "bank_code": bank_code,
            "currency": currency,
        }
        try:
            data = await self._call("POST", "/transferrecipient", json=body, safe=True)
        except PaystackRejected as exc:
            raise RecipientRejected(exc.message, code=exc.code) from None
        return Recipient(recipient_code=str(data["recipient_code"]), data=data)

    async def resolve_account(self, *, account_number: str, bank_code: str) -> ResolvedAccount:
        """Resolve Account Number; AccountNotResolved if no account has that number at that bank."""
        params = {"account_number": account_number, "bank_code": bank_code}
        try:
            data = await self._call("GET", "/bank/resolve", safe=True, params=params)
        except PaystackRejected as exc:
            raise AccountNotResolved(exc.message, code=exc.code) from None
        return ResolvedAccount(
            account_number=str(data.get("account_number") or account_number),
            account_name=str(data.get("account_name") or ""),
        )

    async def banks(self, currency: str) -> list[Bank]:
        """List Banks for a currency, every page (Paystack's cursor), in Paystack's order."""
        found: list[Bank] = []
        cursor = ""
        while True:
            params = {"currency": currency, "perPage": str(LIST_PAGE_SIZE), **({"next": cursor} if cursor else {})}
            envelope = await self._call("GET", "/bank", safe=True, params=params, whole=True)
            items = envelope.get("data")
            if not isinstance(items, list):
                raise PaystackUnavailable("Paystack listed banks without a data list")
            for item in items:
                if isinstance(item, dict) and item.get("code") and item.get("active", True):
                    found.append(
                        Bank(name=str(item.get("name", "")), code=str(item["code"]), currency=str(item["currency"]))
                    )
            meta = envelope.get("meta")
            cursor = str(meta.get("next") or "") if isinstance(meta, dict) else ""
            if not cursor or not items:
                return found

    async def transfer(
        self,
        *,
        amount: int,
        recipient_code: str,
        reason: str,
        currency: str,
        reference: str,
        timeout_s: float | None = None,
    ) -> Transfer:
        body = {
            "source": "balance",
            "amount": amount,
            "recipient": recipient_code,
            "reason": reason,
            "currency": currency,
            "reference": reference,
        }
        data = await self._call("POST", "/transfer", json=body, safe=True, timeout_s=timeout_s)
        return _transfer(data, reference)

    async def verify_transfer(self, reference: str, *, timeout_s: float | None = None) -> Transfer:
        """Verify Transfer; PaystackNotFound if Paystack holds no transfer with our reference."""
        data = await self._call("GET", f"/transfer/verify/{reference}", safe=True, timeout_s=timeout_s)
        return _transfer(data, reference)

    async def transfers(self) -> AsyncIterator[Transfer]:
        """Every transfer of the integration (List Transfers), page by page."""
        async for data in self._pages("/transfer"):
            yield _transfer(data, "")

    # -- plumbing ----------------------------------------------------------------------
    async def _pages(self, path: str, query: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every item of a Paystack list, following its `meta` page by page (oldest pages last)."""
        page = 1
        while True:
            params = {**(query or {}), "perPage": str(LIST_PAGE_SIZE), "page": str(page)}
            envelope = await self._call("GET", path, safe=True, params=params, whole=True)
            items = envelope.get("data")
            if not isinstance(items, list):
                raise PaystackRejected(f"Paystack listed {path} without a data list")
            for item in items:
                if isinstance(item, dict):
                    yield item
            meta = envelope.get("meta") or {}
            page_count = int(meta.get("pageCount") or 0) if isinstance(meta, dict) else 0
            if not items or page >= page_count:
                return
            page += 1

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        safe: bool = False,
        timeout_s: float | None = None,
        params: Mapping[str, str] | None = None,
        whole: bool = False,
    ) -> dict[str, Any]:
        """One call within `timeout_s` (at most the configured timeout), repeated as the module says;
        `safe`: repeating it cannot do twice what it asks. `whole` returns the envelope rather than its
        `data` (lists carry `meta` beside it)."""
        loop = asyncio.get_running_loop()
        budget = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        deadline = loop.time() + budget
        for attempt in range(1, ATTEMPTS + 1):
            outcome = await self._attempt(method, path, json=json, params=params, safe=safe, deadline=deadline)
            if not isinstance(outcome, Retry):
                return outcome if whole else self._data(outcome)
            wait_s = max(outcome.after_s, BACKOFF_S * attempt)
            if attempt == ATTEMPTS or outcome.after_s > MAX_RETRY_AFTER_S or loop.time() + wait_s >= deadline:
                raise outcome.error
            await asyncio.sleep(wait_s)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        safe: bool,
        deadline: float,
    ) -> dict[str, Any] | Retry:
        """One request: Paystack's envelope, a Retry if it may be asked again, or the refusal raised."""
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._http.request(method, path, json=json, params=params)
        except (httpx.TransportError, TimeoutError) as exc:
            log.warning("paystack unreachable", extra={"path": path, "error": type(exc).__name__})
            error = PaystackUnavailable(f"Paystack could not be reached ({type(exc).__name__})")
            # A refused connection never carried the request; anything later may have reached Paystack.
            if safe or isinstance(exc, httpx.ConnectError):
                return Retry(error, 0.0)
            raise error from None
        if response.status_code == 429:
            # Paystack's rate limit: nothing was done, so any call may be repeated once it allows.
            return Retry(PaystackUnavailable("Paystack is limiting our request rate"), _retry_after_s(response))
        if response.status_code >= 500:
            error = PaystackUnavailable(f"Paystack answered {response.status_code}")
            if safe:
                return Retry(error, 0.0)
            raise error
        return self._envelope(response)

    @staticmethod
    def _envelope(response: httpx.Response) -> dict[str, Any]:
        try:
            envelope = response.json()
        except ValueError:
            raise PaystackUnavailable(f"Paystack answered {response.status_code} without JSON") from None
        if not isinstance(envelope, dict):
            raise PaystackUnavailable(f"Paystack answered {response.status_code} without a JSON object")
        message = str(envelope.get("message", ""))
        code = str(envelope.get("code") or "")
        if response.status_code == 401:
            # Our secret key is wrong: every call will fail until the deployment is fixed.
            log.error("paystack refused the secret key", extra={"paystack_message": message})
            raise PaystackUnavailable("Paystack refused our secret key")
        if response.status_code == 408:
            # Paystack timed out waiting for our request: it did not decide.
            raise PaystackUnavailable(f"Paystack answered 408: {message}")
        if response.status_code == 404:
            raise PaystackNotFound(message or "Paystack answered 404", code=code)
        if response.status_code >= 400 or envelope.get("status") is not True:
            raise PaystackRejected(message or f"Paystack answered {response.status_code}", code=code)
        return envelope

    @staticmethod
    def _data(envelope: dict[str, Any]) -> dict[str, Any]:
        data = envelope.get("data")
        if not isinstance(data, dict):
            # A success without its object says nothing of what was done: not a refusal.
            raise PaystackUnavailable("Paystack answered without a data object")
        return data


def _retry_after_s(response: httpx.Response) -> float:
    """Paystack's Retry-After in seconds (a number; a date or nothing counts as one second)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _charge(data: dict[str, Any], reference: str) -> Charge:
    return Charge(
        status=str(data.get("status", "")),
        reference=str(data.get("reference", reference)),
        amount=int(data.get("amount", 0)),
        currency=str(data.get("currency", "")),
        paid_at=data.get("paid_at") or data.get("paidAt"),
        gateway_response=str(data.get("gateway_response", "")),
        data=data,
    )


def _refund(data: dict[str, Any]) -> Refund:
    return Refund(id=str(data.get("id", "")), status=str(data.get("status", "")), data=data)


def _transfer(data: dict[str, Any], reference: str) -> Transfer:
    return Transfer(
        transfer_code=str(data.get("transfer_code", "")),
        status=str(data.get("status", "")),
        reference=str(data.get("reference") or reference),
        data=data,
    )
