"""Revocation at once, everywhere: logout and role changes reach every service's auth cache
before the call that made them returns (identity pushes them; no waiting for a cache TTL)."""

from __future__ import annotations

import uuid

import grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

from services.stack.stack import Stack
from tests.e2e.money import PASSWORD, User, api, make_admin, new_user, platform_account
from tests.helpers import reason_of


def authenticated_reads() -> dict[str, str]:
    """One authenticated read per service, each of which resolves the caller's token."""
    missing = uuid.uuid4()
    return {
        "identity": "/v1/users/me",
        "goals": f"/v1/goals/{missing}",
        "ledger": f"/v1/accounts/{missing}",
        "payments": f"/v1/payments/{missing}",
    }


def statuses(stack: Stack, user: User, paths: dict[str, str]) -> dict[str, tuple[int, str]]:
    answers = {name: api(stack, "GET", path, user) for name, path in paths.items()}
    return {name: (r.status_code, reason_of(r) if r.status_code >= 400 else "") for name, r in answers.items()}


def test_a_logged_out_token_is_refused_by_every_service_right_after_logout_returns(stack: Stack) -> None:
    user = new_user(stack)
    paths = authenticated_reads()
    # Each service now holds the token's principal in its cache (for up to 5 s).
    before = statuses(stack, user, paths)
    assert all(status != 401 for status, _ in before.values()), before
    out = api(stack, "DELETE", "/v1/sessions/current", user)
    assert (out.status_code, out.json()) == (200, {})
    after = statuses(stack, user, paths)
    assert after == dict.fromkeys(paths, (401, "INVALID_TOKEN")), after


def test_a_session_revoked_from_another_session_is_refused_by_every_service_at_once(stack: Stack) -> None:
    user = new_user(stack)
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.identity_port}") as channel:
        other_session = identity_service_pb2_grpc.IdentityServiceStub(channel).CreateSession(
            identity_service_pb2.CreateSessionRequest(login=user.email, password=PASSWORD), timeout=10
        )
    other = User(user.id, other_session.token, user.email)
    paths = authenticated_reads()
    assert all(status != 401 for status, _ in statuses(stack, user, paths).values())
    sessions = api(stack, "GET", "/v1/users/me/sessions", other).json()["sessions"]
    (first,) = [s for s in sessions if not s["current"]]
    revoked = api(stack, "DELETE", f"/v1/users/me/sessions/{first['id']}", other)
    assert revoked.status_code == 200, revoked.text
    assert statuses(stack, user, paths) == dict.fromkeys(paths, (401, "INVALID_TOKEN"))
    assert all(status != 401 for status, _ in statuses(stack, other, paths).values())


def test_a_revoked_role_takes_effect_on_the_ledger_at_once(stack: Stack) -> None:
    admin, auditor = new_user(stack), new_user(stack)
    make_admin(stack, admin)
    role = "auditor_" + uuid.uuid4().hex[:8]
    created = api(stack, "POST", "/v1/roles", admin, json={"name": role, "permissions": ["ledger:read_any"]})
    assert created.status_code == 200, created.text
    escrow = f"/v1/accounts/{platform_account(stack, 'ESCROW')}/balance"
    # Without ledger:read_any a platform account is not there at all for the caller.
    refused = api(stack, "GET", escrow, auditor)
    assert (refused.status_code, reason_of(refused)) == (404, "ACCOUNT_NOT_FOUND")
    granted = api(stack, "POST", f"/v1/users/{auditor.id}/roles", admin, json={"role_name": role})
    assert granted.status_code == 200, granted.text
    assert api(stack, "GET", escrow, auditor).status_code == 200  # the ledger caches this principal
    taken = api(stack, "DELETE", f"/v1/users/{auditor.id}/roles/{role}", admin)
    assert taken.status_code == 200, taken.text
    after = api(stack, "GET", escrow, auditor)
    assert (after.status_code, reason_of(after)) == (404, "ACCOUNT_NOT_FOUND")
