"""The banks the simulator knows: List Banks, Resolve Account Number, and recipients' bank names.

A small subset of Paystack's bank list *(sim)*: the Nigerian banks carry the
CBN codes and, where Paystack's samples show them, the ids Paystack prints
(Guaranty Trust Bank is id 9 in the Resolve Account Number guide); the
Ghanaian, South African and Kenyan entries are a few of each type. Items are
printed as Paystack's OpenAPI `MiscellaneousListBanksResponseArray` lists
them (the doc sample's fields plus `supports_transfer` and
`available_for_direct_debit`), and South African banks add `supported_types`
when asked with `enabled_for_verification`, as the Verify Account Number
guide's sample shows.

Accounts: the simulator's banks hold every well-formed account number except
`UNRESOLVABLE_ACCOUNT_NUMBER`, and name its holder deterministically from the
number, so a test can know the name `/bank/resolve` will answer.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.paystack_sim.errors import ErrorCode, PaystackError, missing
from services.paystack_sim.listing import Window
from services.paystack_sim.records import iso

# Simulator's choice: the one account number no bank holds.
UNRESOLVABLE_ACCOUNT_NUMBER = "0000000000"
# Paystack's message for an account it cannot resolve, with HTTP 422 (as widely reported; not in its samples).
UNRESOLVABLE_MESSAGE = "Could not resolve account name. Check parameters or try again."
_LISTED_SINCE_MS = 1_600_000_000_000  # every bank's createdAt/updatedAt *(sim)*


@dataclass(frozen=True)
class Bank:
    id: int
    name: str
    slug: str
    code: str
    country: str
    currency: str
    type: str
    pay_with_bank: bool = False
    # A bank a customer can pay into by transfer (dedicated accounts) *(sim)*: the pay_with_bank_transfer filter.
    pay_with_bank_transfer: bool = False
    available_for_direct_debit: bool = False
    # South Africa: account verification (`enabled_for_verification`) for these account types.
    supported_types: tuple[str, ...] = ()

    @property
    def account_length(self) -> int | None:
        """Nigerian account numbers (NUBAN) are 10 digits; other countries' vary."""
        return 10 if self.type == "nuban" else None


def _ng(
    bank_id: int,
    name: str,
    slug: str,
    code: str,
    *,
    pay_with_bank: bool = False,
    pay_with_bank_transfer: bool = False,
    available_for_direct_debit: bool = False,
) -> Bank:
    return Bank(
        bank_id,
        name,
        slug,
        code,
        "Nigeria",
        "NGN",
        "nuban",
        pay_with_bank=pay_with_bank,
        pay_with_bank_transfer=pay_with_bank_transfer,
        available_for_direct_debit=available_for_direct_debit,
    )


def _za(bank_id: int, name: str, slug: str, code: str) -> Bank:
    return Bank(bank_id, name, slug, code, "South Africa", "ZAR", "basa", supported_types=("business", "personal"))


BANKS = (
    _ng(1, "Access Bank", "access-bank", "044", available_for_direct_debit=True),
    _ng(3, "Access Bank (Diamond)", "access-bank-diamond", "063"),
    _ng(4, "Ecobank Nigeria", "ecobank-nigeria", "050"),
    _ng(6, "Fidelity Bank", "fidelity-bank", "070"),
    _ng(7, "First Bank of Nigeria", "first-bank-of-nigeria", "011"),
    _ng(8, "First City Monument Bank", "first-city-monument-bank", "214"),
    _ng(9, "Guaranty Trust Bank", "guaranty-trust-bank", "058", pay_with_bank=True, available_for_direct_debit=True),
    _ng(16, "Sterling Bank", "sterling-bank", "232"),
    _ng(18, "United Bank For Africa", "united-bank-for-africa", "033"),
    _ng(20, "Wema Bank", "wema-bank", "035", pay_with_bank_transfer=True),
    _ng(21, "Zenith Bank", "zenith-bank", "057", pay_with_bank=True),
    Bank(28, "GCB Bank Limited", "gcb-bank-limited", "040100", "Ghana", "GHS", "ghipss"),
    Bank(29, "Ecobank Ghana", "ecobank-ghana", "130100", "Ghana", "GHS", "ghipss"),
    Bank(30, "MTN", "mtn", "MTN", "Ghana", "GHS", "mobile_money"),
    Bank(31, "Vodafone", "vodafone", "VOD", "Ghana", "GHS", "mobile_money"),
    Bank(32, "AirtelTigo", "airteltigo", "ATL", "Ghana", "GHS", "mobile_money"),
    _za(140, "Absa Bank Limited, South Africa", "absa-za", "632005"),
    _za(141, "Capitec Bank Limited", "capitec-bank-limited-za", "470010"),
    _za(142, "First National Bank", "first-national-bank-za", "250655"),
    _za(143, "Nedbank", "nedbank-za", "198765"),
    _za(144, "Standard Bank South Africa", "standard-bank-za", "051001"),
    Bank(150, "Equity Bank Kenya", "equity-bank-kenya", "68", "Kenya", "KES", "kepss"),
    Bank(152, "M-PESA", "mpesa", "MPESA", "Kenya", "KES", "mobile_money"),
    Bank(151, "KCB Bank Kenya", "kcb-bank-kenya", "01", "Kenya", "KES", "kepss"),
)
_BY_CODE = {bank.code: bank for bank in BANKS}
_COUNTRIES = {"nigeria": "Nigeria", "ghana": "Ghana", "south africa": "South Africa", "kenya": "Kenya"}
# Paystack's bank-list flags, each a filter when true.
_FLAGS = ("pay_with_bank", "pay_with_bank_transfer", "enabled_for_verification", "include_nip_sort_code")

_FIRST_NAMES = ("ADA", "CHINEDU", "FUNMI", "IBRAHIM", "KEMI", "NGOZI", "OLU", "TUNDE", "YEMI", "ZAINAB")
_LAST_NAMES = ("ADEYEMI", "BELLO", "EZE", "IBE", "MUSA", "NWOSU", "OBI", "OKAFOR", "OYELARAN", "USMAN")


def bank(code: str) -> Bank | None:
    return _BY_CODE.get(code)


def account_holder(account_number: str) -> str:
    """The name the simulator's bank holds for an account: the same for the same number, every time."""
    digest = hashlib.sha256(account_number.encode()).digest()
    return f"{_LAST_NAMES[digest[0] % len(_LAST_NAMES)]} {_FIRST_NAMES[digest[1] % len(_FIRST_NAMES)]}"


def resolve(account_number: str, bank_code: str) -> tuple[Bank, str]:
    """The bank and the holder's name for an account, or Paystack's refusal."""
    if not account_number:
        raise missing("Account number is required")
    if not bank_code:
        raise missing("Bank code is required")  # simulator's choice of words
    found = bank(bank_code)
    if found is None:
        raise PaystackError(f"Unknown bank code: {bank_code}", 422, code=ErrorCode.UNRESOLVABLE_ACCOUNT)
    well_formed = account_number.isdigit() and found.account_length in (None, len(account_number))
    if not well_formed or account_number == UNRESOLVABLE_ACCOUNT_NUMBER:
        raise PaystackError(UNRESOLVABLE_MESSAGE, 422, code=ErrorCode.UNRESOLVABLE_ACCOUNT)
    return found, account_holder(account_number)


def _flag(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name, "").strip().lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise PaystackError(f"{name} must be true or false")  # simulator's choice of words


def listed(query: Mapping[str, str]) -> list[Bank]:
    """List Banks' matches, newest (highest id) first as Paystack's sample lists them.

    With neither `country` nor `currency` the list is Nigeria's, the integration's country *(sim)*.
    """
    country = query.get("country", "").strip().lower()
    if country and country not in _COUNTRIES:
        raise PaystackError(f"country must be one of {', '.join(_COUNTRIES)}")  # simulator's choice of words
    currency = query.get("currency", "").strip().upper()
    if not country and not currency:
        country = "nigeria"
    kind, gateway = query.get("type", "").strip(), query.get("gateway", "").strip()
    flags = {name: _flag(query, name) for name in _FLAGS}
    return sorted(
        (
            b
            for b in BANKS
            if (not country or b.country == _COUNTRIES[country])
            and (not currency or b.currency == currency)
            and (not kind or b.type == kind)
            # No simulated bank takes mandates through a gateway.
            and not gateway
            and (not flags["pay_with_bank"] or b.pay_with_bank)
            and (not flags["pay_with_bank_transfer"] or b.pay_with_bank_transfer)
            and (not flags["enabled_for_verification"] or bool(b.supported_types))
        ),
        key=lambda b: b.id,
        reverse=True,
    )


def cursor(bank_id: int) -> str:
    """Paystack's cursor: base64 of `bank:<id>` (its sample's `next` is `YmFuazoxNjk=`, bank:169)."""
    return base64.b64encode(f"bank:{bank_id}".encode()).decode()


def _cursor_id(name: str, raw: str) -> int:
    try:
        kind, _, number = base64.b64decode(raw, validate=True).decode().partition(":")
        if kind == "bank" and number.isdigit():
            return int(number)
    except ValueError:
        pass
    raise PaystackError(f"{name} is not a cursor this list gave")  # simulator's choice of words


def page(banks: list[Bank], query: Mapping[str, str], at: Window) -> tuple[list[Bank], dict[str, Any]]:
    """One page by Paystack's cursor (`next`/`previous`), or by `page`, and its cursor `meta`."""
    per_page = at.per_page
    after, before = query.get("next", "").strip(), query.get("previous", "").strip()
    if after:
        start = next((i for i, b in enumerate(banks) if b.id < _cursor_id("next", after)), len(banks))
    elif before:
        end = next((i for i, b in enumerate(banks) if b.id <= _cursor_id("previous", before)), len(banks))
        start = max(0, end - per_page)
    else:
        start = at.skipped
    shown = banks[start : start + per_page]
    more = start + per_page < len(banks)
    meta = {
        "next": cursor(shown[-1].id) if shown and more else None,
        "previous": cursor(shown[0].id) if shown and start > 0 else None,
        "perPage": per_page,
    }
    return shown, meta


def printed(record: Bank, *, verification: bool) -> dict[str, Any]:
    at = iso(_LISTED_SINCE_MS)
    item: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "slug": record.slug,
        "code": record.code,
        # Paystack prints "" for Nigerian banks and the code again for South African ones.
        "longcode": record.code if record.country == "South Africa" else "",
        "gateway": None,
        "pay_with_bank": record.pay_with_bank,
        "supports_transfer": True,
        "available_for_direct_debit": record.available_for_direct_debit,
        "active": True,
        "is_deleted": False,
        "country": record.country,
        "currency": record.currency,
        "type": record.type,
        "createdAt": at,
        "updatedAt": at,
    }
    if verification and record.supported_types:
        item["supported_types"] = list(record.supported_types)
    return item
