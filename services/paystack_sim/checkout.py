"""The hosted payment page `authorization_url` points at.

Plain HTML forms, no script: Pay and Decline each POST `outcome` to
`/checkout/{access_code}/pay`, which a test can also call with JSON. After the
form post the customer goes back to the merchant's `callback_url` with
`?trxref=<reference>&reference=<reference>`, as Paystack redirects, or sees a
result page when the transaction has no callback URL.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from services.paystack_sim.records import Transaction, TransactionStatus


def display_amount(amount: int, currency: str) -> str:
    """Subunits as the customer reads them: every supported currency has 100 subunits."""
    return f"{currency} {amount // 100:,}.{amount % 100:02d}"


def callback_location(record: Transaction) -> str | None:
    if record.callback_url is None:
        return None
    separator = "&" if "?" in record.callback_url else "?"
    return record.callback_url + separator + urlencode({"trxref": record.reference, "reference": record.reference})


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font-family:sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}"
        ".amount{font-size:2rem;font-weight:bold}button{font-size:1rem;padding:.5rem 1.5rem;margin-right:.5rem}"
        "</style></head>"
        f"<body><p><small>Paystack simulator (test mode)</small></p>{body}</body></html>\n"
    )


def checkout_page(record: Transaction, email: str) -> str:
    amount = escape(display_amount(record.requested_amount, record.currency))
    details = (
        f'<p class="amount" data-amount="{record.requested_amount}" data-currency="{escape(record.currency)}">'
        f"{amount}</p><p>{escape(email)}<br><small>Reference {escape(record.reference)}</small></p>"
    )
    if record.status is not TransactionStatus.ABANDONED:
        return _page("Checkout", f"{details}<p>This transaction is already {escape(record.status.value)}.</p>")
    action = f"/checkout/{escape(record.access_code)}/pay"
    buttons = "".join(
        f'<form method="post" action="{action}" style="display:inline">'
        f'<input type="hidden" name="outcome" value="{outcome}"><button type="submit">{label}</button></form>'
        for outcome, label in (("success", "Pay"), ("failed", "Decline"))
    )
    return _page("Checkout", details + buttons)


def result_page(record: Transaction) -> str:
    amount = escape(display_amount(record.amount, record.currency))
    return _page("Checkout", f'<p class="amount">{amount}</p><p>Payment {escape(record.status.value)}.</p>')


def message_page(message: str) -> str:
    return _page("Checkout", f"<p>{escape(message)}</p>")
