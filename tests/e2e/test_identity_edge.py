"""Identity as web clients reach it: JSON through real Envoy, auth honoured by every service."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import uuid
from typing import Any

import httpx

from services.stack.stack import Stack
from tests.e2e.conftest import BIN, edge
from tests.helpers import eventually_sync, reason_of

PASSWORD = "correct horse battery"


def register(stack: Stack, **overrides: str) -> tuple[httpx.Response, dict[str, str]]:
    name = "e" + uuid.uuid4().hex[:12]
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD, "first_name": "Ada"}
    body.update(overrides)
    return httpx.post(f"{edge(stack)}/v1/users", json=body, timeout=10), body


def login(stack: Stack, login_: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{edge(stack)}/v1/sessions",
        json={"login": login_, "password": password},
        headers={"user-agent": "gofund-e2e/1.0"},
        timeout=10,
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def new_user(stack: Stack) -> tuple[dict[str, Any], str]:
    response, body = register(stack)
    assert response.status_code == 200, response.text
    session = login(stack, body["email"])
    assert session.status_code == 200, session.text
    return response.json()["user"], session.json()["token"]


def test_register_login_and_read_yourself_as_json(stack: Stack) -> None:
    response, body = register(stack, phone="+2348012345678")
    assert response.status_code == 200
    user = response.json()["user"]
    assert (user["email"], user["roles"], user["email_verified"]) == (body["email"], ["member"], False)
    assert "password" not in response.text
    session = login(stack, body["username"]).json()
    assert set(session) == {"token", "session", "user"}
    me = httpx.get(f"{edge(stack)}/v1/users/me", headers=bearer(session["token"]), timeout=10).json()["user"]
    assert me["id"] == user["id"]
    sessions = httpx.get(f"{edge(stack)}/v1/users/me/sessions", headers=bearer(session["token"]), timeout=10).json()
    (listed,) = sessions["sessions"]
    assert listed["current"] is True
    ipaddress.ip_address(listed["ip_address"])  # the client's address, from Envoy's X-Forwarded-For
    assert "gofund-e2e/1.0" in listed["user_agent"]


def test_bad_and_duplicate_registrations_answer_400_and_409_json(stack: Stack) -> None:
    bad, _ = register(stack, email="nope", password="short")
    assert bad.status_code == 400
    details = bad.json()["details"]
    violations = next(d for d in details if d["@type"].endswith("BadRequest"))["field_violations"]
    assert {v["field"] for v in violations} >= {"email", "password"}
    first, body = register(stack)
    assert first.status_code == 200
    again, _ = register(stack, email=body["email"].upper())
    assert again.status_code == 409
    assert reason_of(again) == "EMAIL_TAKEN"


def test_wrong_password_and_unknown_user_get_the_same_401(stack: Stack) -> None:
    _, body = register(stack)
    wrong = login(stack, body["email"], "wrong password!")
    unknown = login(stack, f"nobody-{uuid.uuid4().hex}@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_logout_stops_the_token_here_and_at_another_service(stack: Stack) -> None:
    _, token = new_user(stack)
    account = f"{edge(stack)}/v1/accounts/{uuid.uuid4()}"
    out = httpx.delete(f"{edge(stack)}/v1/sessions/current", headers=bearer(token), timeout=10)
    assert (out.status_code, out.json()) == (200, {})
    me = httpx.get(f"{edge(stack)}/v1/users/me", headers=bearer(token), timeout=10)
    assert (me.status_code, reason_of(me)) == (401, "INVALID_TOKEN")
    ledger = httpx.get(account, headers=bearer(token), timeout=10)
    assert (ledger.status_code, reason_of(ledger)) == (401, "INVALID_TOKEN")


def test_the_service_credential_is_stripped_at_the_edge(stack: Stack) -> None:
    response = httpx.get(
        f"{edge(stack)}/v1/users/me",
        headers={"x-gofund-service-credential": stack.settings.service_token},
        timeout=10,
    )
    # Had it reached identity it would be PERMISSION_DENIED; stripped, the call is simply anonymous.
    assert (response.status_code, reason_of(response)) == (401, "LOGIN_REQUIRED")


def test_email_verification_with_the_code_from_the_stacks_mail_sink(stack: Stack) -> None:
    user, token = new_user(stack)
    sent = httpx.post(f"{edge(stack)}/v1/users/me:requestEmailVerification", json={}, headers=bearer(token), timeout=10)
    assert sent.status_code == 200, sent.text
    mails = [json.loads(line) for line in (stack.data_dir / "mail.jsonl").read_text().splitlines()]
    (mail,) = [m for m in mails if m["to"] == user["email"]]
    code = re.search(r"\b(\d{6})\b", mail["body"]).group(1)  # type: ignore[union-attr]
    verified = httpx.post(
        f"{edge(stack)}/v1/users/me:verifyEmail", json={"code": code}, headers=bearer(token), timeout=10
    )
    assert verified.json()["user"]["email_verified"] is True


def test_gofund_admin_create_lets_a_user_manage_roles(stack: Stack) -> None:
    user, token = new_user(stack)
    refused = httpx.get(f"{edge(stack)}/v1/roles", headers=bearer(token), timeout=10)
    assert (refused.status_code, reason_of(refused)) == (403, "MISSING_PERMISSION")
    result = subprocess.run(
        [str(BIN / "gofund"), "admin", "create", "--email", user["email"]],
        env={**os.environ, **stack.overrides},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "admin" in result.stdout
    # The grant happened outside the identity process, whose cached answer for this
    # (already used) token lapses within GOFUND_AUTH_CACHE_MS (5 s).
    roles = eventually_sync(
        lambda: (r := httpx.get(f"{edge(stack)}/v1/roles", headers=bearer(token), timeout=10)).status_code != 403 and r,
        8,
        "the admin grant to reach the cached token",
        interval_s=0.2,
    )
    assert roles.status_code == 200
    assert {"member", "admin"} <= {r["name"] for r in roles.json()["roles"]}


def test_profile_patch_with_a_json_field_mask(stack: Stack) -> None:
    _, token = new_user(stack)
    response = httpx.patch(
        f"{edge(stack)}/v1/users/me",
        json={"first_name": "Grace", "last_name": "Hopper", "update_mask": "lastName"},
        headers=bearer(token),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert (user["first_name"], user["last_name"]) == ("Ada", "Hopper")


def test_an_admin_assigns_and_revokes_roles_over_json(stack: Stack) -> None:
    admin, admin_token = new_user(stack)
    subprocess.run(
        [str(BIN / "gofund"), "admin", "create", "--email", admin["email"]],
        env={**os.environ, **stack.overrides},
        capture_output=True,
        timeout=60,
        check=True,
    )
    member, member_token = new_user(stack)
    name = "mod" + uuid.uuid4().hex[:6]
    created = httpx.post(
        f"{edge(stack)}/v1/roles",
        json={"name": name, "permissions": ["roles:manage"]},
        headers=bearer(admin_token),
        timeout=10,
    )
    assert created.status_code == 200, created.text
    assigned = httpx.post(
        f"{edge(stack)}/v1/users/{member['id']}/roles",
        json={"role_name": name},
        headers=bearer(admin_token),
        timeout=10,
    )
    assert name in assigned.json()["user"]["roles"]
    assert httpx.get(f"{edge(stack)}/v1/roles", headers=bearer(member_token), timeout=10).status_code == 200
    revoked = httpx.delete(
        f"{edge(stack)}/v1/users/{member['id']}/roles/{name}", headers=bearer(admin_token), timeout=10
    )
    assert name not in revoked.json()["user"]["roles"]
    # Identity evicts its cached answer on a role change: the next call already lacks the permission.
    assert httpx.get(f"{edge(stack)}/v1/roles", headers=bearer(member_token), timeout=10).status_code == 403


# Keep this test last in the session: it uses up 127.0.0.1's login bucket at the edge (or, first,
# identity's limit on failed logins of this unknown account); either answers this JSON 429.
def test_login_is_rate_limited_at_the_edge_with_a_json_429(stack: Stack) -> None:
    limited = eventually_sync(
        lambda: (r := login(stack, "nobody@example.com", "whatever-password")).status_code == 429 and r,
        30,
        "a login to be rate limited",
        interval_s=0,
    )
    assert limited.headers["content-type"] == "application/json"
    assert limited.json()["details"][0]["reason"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) > 0
