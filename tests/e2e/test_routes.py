"""Every route of API.md answers through Envoy with the documented JSON wrapper.

One walk through the public API as a client sees it: each call checks the HTTP
status and the key the response wraps its resource in (and, for errors, the
`ErrorInfo` reason). Behaviour in depth is tested elsewhere; this is the map.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from services.stack.stack import Stack
from tests.e2e.conftest import edge
from tests.e2e.money import api, contributed, goal_status, new_user, ok, open_goal
from tests.helpers import reason_of


def wraps(response: httpx.Response, *keys: str) -> dict[str, Any]:
    body = ok(response)
    assert set(keys) <= set(body), (keys, body)
    return body


def test_every_identity_route(stack: Stack) -> None:
    user = new_user(stack)
    wraps(api(stack, "GET", "/v1/users/me", user), "user")
    patched = wraps(
        api(stack, "PATCH", "/v1/users/me", user, json={"first_name": "Ada", "phone": "+2348012345678"}), "user"
    )
    assert patched["user"]["phone"] == "+2348012345678"
    sessions = wraps(api(stack, "GET", "/v1/users/me/sessions", user), "sessions")["sessions"]
    assert any(s["current"] for s in sessions)
    assert ok(api(stack, "POST", "/v1/users/me:requestEmailVerification", user, json={})) == {}
    wrong = api(stack, "POST", "/v1/users/me:verifyEmail", user, json={"code": "000000"})
    assert wrong.status_code == 400
    assert ok(api(stack, "POST", "/v1/users/me:requestPhoneVerification", user, json={})) == {}
    wrong_phone = api(stack, "POST", "/v1/users/me:verifyPhone", user, json={"code": "000000"})
    assert (wrong_phone.status_code, reason_of(wrong_phone)) == (400, "INVALID_CODE")
    denied = api(stack, "GET", "/v1/roles", user)
    assert (denied.status_code, reason_of(denied)) == (403, "MISSING_PERMISSION")
    for method, path in (
        ("POST", "/v1/roles"),
        ("POST", f"/v1/users/{user.id}/roles"),
        ("DELETE", f"/v1/users/{user.id}/roles/member"),
    ):
        assert api(stack, method, path, user, json={} if method == "POST" else None).status_code == 403, path
    assert ok(api(stack, "DELETE", "/v1/sessions/current", user)) == {}
    assert api(stack, "GET", "/v1/users/me", user).status_code == 401


def test_every_goals_route(stack: Stack) -> None:
    owner, backer = new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=10_000)
    wraps(api(stack, "GET", f"/v1/goals/{goal['id']}"), "goal")
    listed = wraps(api(stack, "GET", f"/v1/goals?owner_id={owner.id}&status=GOAL_STATUS_OPEN"), "goals")
    assert [g["id"] for g in listed["goals"]] == [goal["id"]]
    assert "next_page_token" in listed
    renamed = wraps(api(stack, "PATCH", f"/v1/goals/{goal['id']}", owner, json={"title": "A new title"}), "goal")
    assert renamed["goal"]["title"] == "A new title"
    contribution = contributed(stack, backer, goal, 10_000)
    wraps(api(stack, "GET", f"/v1/contributions/{contribution['id']}", backer), "contribution")
    own = wraps(api(stack, "GET", f"/v1/goals/{goal['id']}/contributions", owner), "contributions", "next_page_token")
    assert [c["id"] for c in own["contributions"]] == [contribution["id"]]
    goal_status(stack, goal["id"], "FUNDED")
    proof = wraps(
        api(stack, "POST", f"/v1/goals/{goal['id']}/proofs", owner, json={"title": "Done", "description": "."}),
        "proof",
    )["proof"]
    assert [p["id"] for p in wraps(api(stack, "GET", f"/v1/goals/{goal['id']}/proofs"), "proofs")["proofs"]] == [
        proof["id"]
    ]
    tally = wraps(api(stack, "GET", f"/v1/proofs/{proof['id']}"), "proof")["proof"]
    assert {"approve_weight", "reject_weight", "voting_ends_at"} <= set(tally)
    vote = wraps(api(stack, "POST", f"/v1/proofs/{proof['id']}/votes", backer, json={"is_approved": False}), "vote")
    assert vote["vote"]["weight"] == "10000"
    other = open_goal(stack, owner, target=5_000)
    cancelled = wraps(api(stack, "POST", f"/v1/goals/{other['id']}:cancel", owner, json={"reason": "moved"}), "goal")
    assert cancelled["goal"]["status"] in ("GOAL_STATUS_CANCELLED", "GOAL_STATUS_REFUNDING", "GOAL_STATUS_REFUNDED")
    missing = api(stack, "GET", f"/v1/goals/{uuid.uuid4()}")
    assert (missing.status_code, reason_of(missing)) == (404, "GOAL_NOT_FOUND")


def test_every_ledger_and_payments_route(stack: Stack) -> None:
    owner, payer = new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=10_000)
    account = wraps(api(stack, "GET", f"/v1/accounts/{goal['account_id']}"), "account")["account"]
    assert account["account_type"] == "ACCOUNT_TYPE_GOAL"
    contribution = contributed(stack, payer, goal, 2_500)
    balance = wraps(api(stack, "GET", f"/v1/accounts/{goal['account_id']}/balance"), "balance")["balance"]
    assert balance["balance"] == "2500"
    entries = wraps(api(stack, "GET", f"/v1/accounts/{goal['account_id']}/entries"), "entries", "next_page_token")
    assert [e["amount"] for e in entries["entries"]] == ["2500"]
    watch_url = f"{edge(stack)}/v1/accounts/{goal['account_id']}/balance:watch"
    with httpx.stream("GET", watch_url, timeout=20) as watch:
        first: dict[str, Any] = json.loads(next(watch.iter_lines()))
    assert (first["account_id"], first["balance"]) == (goal["account_id"], "2500")
    payment_id = contribution["payment_id"]
    assert wraps(api(stack, "GET", f"/v1/payments/{payment_id}", payer), "payment")["payment"]["status"] == (
        "PAYMENT_STATUS_SUCCESS"
    )
    wraps(api(stack, "POST", f"/v1/payments/{payment_id}:verify", payer, json={}), "payment")
    recipient = {"account_number": "0123456789", "bank_code": "058", "name": "Ada", "currency": "NGN",
                 "idempotency_key": uuid.uuid4().hex}  # fmt: skip
    wraps(api(stack, "POST", "/v1/payout-recipients", owner, json=recipient), "recipient")
    wraps(api(stack, "GET", "/v1/banks?currency=NGN"), "banks")
    unsigned = api(stack, "POST", "/v1/webhooks/paystack", content=b"{}", headers={"content-type": "application/json"})
    assert (unsigned.status_code, reason_of(unsigned)) == (401, "INVALID_SIGNATURE")
    denied = api(stack, "GET", "/v1/webhook-events", owner)
    assert (denied.status_code, reason_of(denied)) == (403, "MISSING_PERMISSION")
