"""A small typed client for the parts of Paystack's API payments uses.

One `httpx.AsyncClient` per process (created in `main`, closed on shutdown),
base URL and secret key from the settings, so the same code talks to Paystack
or to the simulator. Paystack answers `{status, message, data}`; a `false`
status or a 4xx becomes `PaystackRejected` with Paystack's message, a 5xx, a
timeout or a refused connection becomes `PaystackUnavailable`.

Only reads are retried here (verify: repeating it changes nothing). A POST
whose answer is lost may or may not have happened at Paystack, so the callers
decide: they send our own references, which Paystack refuses to reuse, and
resume from what they stored before calling.

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

from services.payments.domain import PaystackNotFound, PaystackRejected, PaystackUnavailable, RecipientRejected

log = logging.getLogger("gofund.paystack")

READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.2
LIST_PAGE_SIZE = 100


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
    def __init__(self, base_url: str, secret_key: str, *, timeout_s: float) -> None:
        # httpx's timeouts bound each phase (connect, each read); this bounds the
        # whole call, so a caller holding a lease knows it outlives the call.
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {secret_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
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
        data = await self._call("POST", "/transaction/initialize", json=body, timeout_s=timeout_s)
        return Checkout(
            authorization_url=str(data["authorization_url"]),
            access_code=str(data.get("access_code", "")),
            reference=str(data.get("reference", reference)),
            data=data,
        )

    async def verify(self, reference: str, *, timeout_s: float | None = None) -> Charge:
        data = await self._call("GET", f"/transaction/verify/{reference}", read=True, timeout_s=timeout_s)
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
            data = await self._call("POST", "/transferrecipient", json=body)
        except PaystackRejected as exc:
            raise RecipientRejected(exc.message) from None
        return Recipient(recipient_code=str(data["recipient_code"]), data=data)

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
        data = await self._call("POST", "/transfer", json=body, timeout_s=timeout_s)
        return _transfer(data, reference)

    async def verify_transfer(self, reference: str, *, timeout_s: float | None = None) -> Transfer:
        """Verify Transfer; PaystackNotFound if Paystack holds no transfer with our reference."""
        data = await self._call("GET", f"/transfer/verify/{reference}", read=True, timeout_s=timeout_s)
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
            envelope = await self._call("GET", path, read=True, params=params, whole=True)
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
        read: bool = False,
        timeout_s: float | None = None,
        params: Mapping[str, str] | None = None,
        whole: bool = False,
    ) -> dict[str, Any]:
        """One call within `timeout_s` (at most the configured timeout); `whole` returns the
        envelope rather than its `data` (lists carry `meta` beside it)."""
        attempts = READ_ATTEMPTS if read else 1
        budget = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        deadline = asyncio.get_running_loop().time() + budget
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._http.request(method, path, json=json, params=params)
            except (httpx.TransportError, TimeoutError) as exc:
                if attempt < attempts and asyncio.get_running_loop().time() + READ_BACKOFF_S * attempt < deadline:
                    await asyncio.sleep(READ_BACKOFF_S * attempt)
                    continue
                log.warning("paystack unreachable", extra={"path": path, "error": type(exc).__name__})
                raise PaystackUnavailable(f"Paystack could not be reached ({type(exc).__name__})") from None
            if response.status_code >= 500:
                if attempt < attempts and asyncio.get_running_loop().time() + READ_BACKOFF_S * attempt < deadline:
                    await asyncio.sleep(READ_BACKOFF_S * attempt)
                    continue
                raise PaystackUnavailable(f"Paystack answered {response.status_code}")
            return self._data(response, whole=whole)
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _data(response: httpx.Response, *, whole: bool = False) -> dict[str, Any]:
        try:
            envelope = response.json()
        except ValueError:
            raise PaystackUnavailable(f"Paystack answered {response.status_code} without JSON") from None
        message = str(envelope.get("message", "")) if isinstance(envelope, dict) else ""
        if response.status_code == 401:
            # Our secret key is wrong: every call will fail until the deployment is fixed.
            log.error("paystack refused the secret key", extra={"paystack_message": message})
            raise PaystackUnavailable("Paystack refused our secret key")
        if response.status_code in (408, 429):
            # Paystack did not decide (a timeout, its rate limit): like an outage, the call may be repeated.
            raise PaystackUnavailable(f"Paystack answered {response.status_code}: {message}")
        if response.status_code == 404:
            raise PaystackNotFound(message or "Paystack answered 404")
        if response.status_code >= 400 or not isinstance(envelope, dict) or envelope.get("status") is not True:
            raise PaystackRejected(message or f"Paystack answered {response.status_code}")
        if whole:
            return envelope
        data = envelope.get("data")
        if not isinstance(data, dict):
            # A success without its object says nothing of what was done: not a refusal.
            raise PaystackUnavailable("Paystack answered without a data object")
        return data


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
