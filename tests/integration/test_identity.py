"""Identity over real gRPC on real PostgreSQL, with a real SMTP sink, and auth as every service applies it."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

import grpc
import pytest
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from google.protobuf import field_mask_pb2

from services.common.server import ServiceRunner
from tests.conftest import CREDENTIAL, migrated_database, settings_with
from tests.helpers import eventually, reason, rejected
from tests.integration.fixtures.identity import PASSWORD, IdentityUnderTest, bearer

pytestmark = pytest.mark.asyncio


# -- registration -------------------------------------------------------------------
async def test_registration_returns_the_user_with_the_member_role(identity: IdentityUnderTest) -> None:
    user = await identity.register(last_name="Lovelace", phone="+2348012345678")
    assert user.roles == ["member"]
    assert (user.email_verified, user.phone_verified, user.last_name) == (False, False, "Lovelace")
    assert "password" not in str(user).lower()


async def test_bad_registration_lists_every_bad_field(identity: IdentityUnderTest) -> None:
    request = identity_service_pb2.CreateUserRequest(
        email="not-an-email", username="a b", password="short", phone="0801234"
    )
    error = await rejected(identity.public.CreateUser(request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    for field in ("email", "username", "password", "phone"):
        assert field in (error.details() or "")
    assert reason(error) == "INVALID_EMAIL"


async def test_email_and_username_are_unique_whatever_their_case(identity: IdentityUnderTest) -> None:
    user = await identity.register()
    same_email = await rejected(
        identity.public.CreateUser(
            identity_service_pb2.CreateUserRequest(
                email=user.email.upper(), username="x" + uuid.uuid4().hex[:8], password=PASSWORD
            )
        )
    )
    same_name = await rejected(
        identity.public.CreateUser(
            identity_service_pb2.CreateUserRequest(
                email=f"{uuid.uuid4().hex}@example.com", username=user.username.upper(), password=PASSWORD
            )
        )
    )
    assert same_email.code() is grpc.StatusCode.ALREADY_EXISTS
    assert (reason(same_email), reason(same_name)) == ("EMAIL_TAKEN", "USERNAME_TAKEN")


async def test_concurrent_registrations_of_one_email_make_one_user(identity: IdentityUnderTest) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    requests = [
        identity_service_pb2.CreateUserRequest(
            email=email, username=f"race{i}{uuid.uuid4().hex[:6]}", password=PASSWORD
        )
        for i in range(5)
    ]
    outcomes = await asyncio.gather(*(identity.public.CreateUser(r) for r in requests), return_exceptions=True)
    created = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [reason(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert refused == ["EMAIL_TAKEN"] * 4


# -- sessions -------------------------------------------------------------------------
async def test_login_by_email_or_username_gives_a_working_token(identity: IdentityUnderTest) -> None:
    user = await identity.register()
    # The last hop is the one Envoy appended; anything before it the client wrote.
    by_email = await identity.login(user.email.upper(), **{"x-forwarded-for": "6.6.6.6, 203.0.113.7"})
    by_username = await identity.login(user.username)
    assert by_email.token != by_username.token
    assert len(by_email.token) == 43  # 32 random bytes, URL-safe base64
    assert by_email.session.ip_address == "203.0.113.7"
    assert by_email.session.device_name == "laptop"
    me = await identity.public.GetCurrentUser(
        identity_service_pb2.GetCurrentUserRequest(), metadata=bearer(by_email.token)
    )
    assert me.user.id == user.id


async def test_unknown_user_and_wrong_password_get_the_same_answer(identity: IdentityUnderTest) -> None:
    user = await identity.register()
    wrong_password = await rejected(identity.login(user.email, "wrong password!"))
    unknown_user = await rejected(identity.login(f"nobody-{uuid.uuid4().hex}@example.com"))
    for error in (wrong_password, unknown_user):
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "INVALID_CREDENTIALS"
    assert wrong_password.details() == unknown_user.details()


async def test_calls_without_or_with_a_bad_token_are_unauthenticated(identity: IdentityUnderTest) -> None:
    missing = await rejected(identity.public.GetCurrentUser(identity_service_pb2.GetCurrentUserRequest()))
    forged = await rejected(
        identity.public.GetCurrentUser(identity_service_pb2.GetCurrentUserRequest(), metadata=bearer("A" * 43))
    )
    assert (reason(missing), reason(forged)) == ("LOGIN_REQUIRED", "INVALID_TOKEN")


async def test_logout_stops_the_token_at_once(identity: IdentityUnderTest) -> None:
    _, token = await identity.user_with_token()
    await identity.public.DeleteCurrentSession(
        identity_service_pb2.DeleteCurrentSessionRequest(), metadata=bearer(token)
    )
    error = await rejected(
        identity.public.GetCurrentUser(identity_service_pb2.GetCurrentUserRequest(), metadata=bearer(token))
    )
    assert reason(error) == "INVALID_TOKEN"
    internal = await rejected(identity.internal.Authenticate(identity_service_pb2.AuthenticateRequest(token=token)))
    assert internal.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_an_expired_session_is_refused(identity: IdentityUnderTest) -> None:
    # Expired in the database before any use, so no cached answer stands in the way.
    user = await identity.register()
    session = await identity.login(user.email)
    token = session.token
    identity.sql("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = %s", session.session.id)
    error = await rejected(
        identity.public.GetCurrentUser(identity_service_pb2.GetCurrentUserRequest(), metadata=bearer(token))
    )
    assert reason(error) == "INVALID_TOKEN"


async def test_sessions_are_listed_and_one_can_be_revoked(identity: IdentityUnderTest) -> None:
    user = await identity.register()
    first, second = await identity.login(user.email), await identity.login(user.username)
    listed = await identity.public.ListCurrentUserSessions(
        identity_service_pb2.ListCurrentUserSessionsRequest(), metadata=bearer(second.token)
    )
    assert {(s.id, s.current) for s in listed.sessions} == {(first.session.id, False), (second.session.id, True)}
    await identity.public.DeleteSession(
        identity_service_pb2.DeleteSessionRequest(session_id=first.session.id), metadata=bearer(second.token)
    )
    assert (
        reason(
            await rejected(
                identity.public.GetCurrentUser(
                    identity_service_pb2.GetCurrentUserRequest(), metadata=bearer(first.token)
                )
            )
        )
        == "INVALID_TOKEN"
    )
    other_user_token = (await identity.user_with_token())[1]
    error = await rejected(
        identity.public.DeleteSession(
            identity_service_pb2.DeleteSessionRequest(session_id=second.session.id), metadata=bearer(other_user_token)
        )
    )
    assert reason(error) == "SESSION_NOT_FOUND"  # someone else's session is not yours to see


async def test_sessions_made_in_the_same_instant_are_each_listed_once_across_pages(
    identity: IdentityUnderTest,
) -> None:
    user = await identity.register()
    sessions = [await identity.login(user.email) for _ in range(4)]
    identity.sql("UPDATE sessions SET created_at = '2026-12-01T10:00:00Z' WHERE user_id = %s", user.id)
    seen: list[str] = []
    token = ""
    while True:
        page = await identity.public.ListCurrentUserSessions(
            identity_service_pb2.ListCurrentUserSessionsRequest(page_size=1, page_token=token),
            metadata=bearer(sessions[0].token),
        )
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(s.session.id for s in sessions)


async def test_revoking_a_session_twice_succeeds_and_a_malformed_id_is_invalid(identity: IdentityUnderTest) -> None:
    user = await identity.register()
    first, second = await identity.login(user.email), await identity.login(user.username)
    for _ in range(2):  # DeleteSession is idempotent, as its contract says
        await identity.public.DeleteSession(
            identity_service_pb2.DeleteSessionRequest(session_id=first.session.id), metadata=bearer(second.token)
        )
    malformed = await rejected(
        identity.public.DeleteSession(
            identity_service_pb2.DeleteSessionRequest(session_id="not-a-uuid"), metadata=bearer(second.token)
        )
    )
    assert (malformed.code(), reason(malformed)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SESSION_ID")


async def test_a_login_without_a_login_or_a_password_is_invalid_not_unauthenticated(
    identity: IdentityUnderTest,
) -> None:
    for login, password, expected in (("", PASSWORD, "MISSING_LOGIN"), ("someone", "", "MISSING_PASSWORD")):
        error = await rejected(identity.login(login, password))
        assert (error.code(), reason(error)) == (grpc.StatusCode.INVALID_ARGUMENT, expected)


async def test_a_password_too_long_is_told_so(identity: IdentityUnderTest) -> None:
    error = await rejected(identity.register(password="x" * 2000))
    assert reason(error) == "PASSWORD_TOO_LONG"
    assert "at most" in error.details()


async def test_a_malformed_user_id_is_invalid_for_other_services(identity: IdentityUnderTest) -> None:
    error = await rejected(identity.internal.GetUser(identity_service_pb2.GetUserRequest(user_id="nope")))
    assert (error.code(), reason(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_USER_ID")


# -- profile ----------------------------------------------------------------------------
async def test_profile_update_follows_the_mask(identity: IdentityUnderTest) -> None:
    _, token = await identity.user_with_token()
    request = identity_service_pb2.UpdateCurrentUserRequest(
        first_name="Grace", last_name="Hopper", update_mask=field_mask_pb2.FieldMask(paths=["last_name"])
    )
    updated = await identity.public.UpdateCurrentUser(request, metadata=bearer(token))
    assert (updated.user.first_name, updated.user.last_name) == ("Ada", "Hopper")
    bad = await rejected(
        identity.public.UpdateCurrentUser(
            identity_service_pb2.UpdateCurrentUserRequest(phone="123"), metadata=bearer(token)
        )
    )
    assert reason(bad) == "INVALID_PHONE"
    email_change = await rejected(
        identity.public.UpdateCurrentUser(
            identity_service_pb2.UpdateCurrentUserRequest(update_mask=field_mask_pb2.FieldMask(paths=["email"])),
            metadata=bearer(token),
        )
    )
    assert reason(email_change) == "INVALID_UPDATE_MASK"


# -- verification ---------------------------------------------------------------------
def code_in(text: str) -> str:
    match = re.search(r"\b(\d{6})\b", text)
    assert match is not None
    return match.group(1)


async def test_email_is_verified_with_the_code_from_the_mail(identity: IdentityUnderTest) -> None:
    user, token = await identity.user_with_token()
    await identity.public.RequestEmailVerification(
        identity_service_pb2.RequestEmailVerificationRequest(), metadata=bearer(token)
    )
    (mail,) = [m for m in identity.sink.messages if m["to"] == user.email]
    verified = await identity.public.VerifyEmail(
        identity_service_pb2.VerifyEmailRequest(code=code_in(mail["body"])), metadata=bearer(token)
    )
    assert verified.user.email_verified is True
    again = await rejected(
        identity.public.RequestEmailVerification(
            identity_service_pb2.RequestEmailVerificationRequest(), metadata=bearer(token)
        )
    )
    assert reason(again) == "EMAIL_ALREADY_VERIFIED"


async def test_five_wrong_codes_lock_the_code_out(identity: IdentityUnderTest) -> None:
    user, token = await identity.user_with_token()
    await identity.public.RequestEmailVerification(
        identity_service_pb2.RequestEmailVerificationRequest(), metadata=bearer(token)
    )
    code = code_in(next(m["body"] for m in identity.sink.messages if m["to"] == user.email))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        error = await rejected(
            identity.public.VerifyEmail(identity_service_pb2.VerifyEmailRequest(code=wrong), metadata=bearer(token))
        )
        assert reason(error) == "INVALID_CODE"
    locked = await rejected(
        identity.public.VerifyEmail(identity_service_pb2.VerifyEmailRequest(code=code), metadata=bearer(token))
    )
    assert reason(locked) == "TOO_MANY_ATTEMPTS"


async def test_phone_is_verified_with_the_code_the_sender_logged(
    identity: IdentityUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = await identity.user_with_token()
    no_phone = await rejected(
        identity.public.RequestPhoneVerification(
            identity_service_pb2.RequestPhoneVerificationRequest(), metadata=bearer(token)
        )
    )
    assert reason(no_phone) == "PHONE_NOT_SET"
    await identity.public.UpdateCurrentUser(
        identity_service_pb2.UpdateCurrentUserRequest(phone="+233201234567"), metadata=bearer(token)
    )
    with caplog.at_level(logging.INFO, logger="gofund.identity.notify"):
        await identity.public.RequestPhoneVerification(
            identity_service_pb2.RequestPhoneVerificationRequest(), metadata=bearer(token)
        )
    (record,) = [r for r in caplog.records if getattr(r, "to", "") == "+233201234567"]
    verified = await identity.public.VerifyPhone(
        identity_service_pb2.VerifyPhoneRequest(code=code_in(record.body)),
        metadata=bearer(token),  # type: ignore[attr-defined]
    )
    assert verified.user.phone_verified is True


# -- roles ------------------------------------------------------------------------------
async def make_admin(identity: IdentityUnderTest, user_id: str) -> None:
    service = identity.runner.service
    assert service is not None
    await service.servicers[0][1].identity.grant(user_id, "admin")  # type: ignore[attr-defined]


async def test_roles_need_the_permission_and_assignment_changes_what_a_user_may_do(identity: IdentityUnderTest) -> None:
    admin, admin_token = await identity.user_with_token()
    await make_admin(identity, admin.id)
    member, member_token = await identity.user_with_token()
    refused = await rejected(
        identity.public.ListRoles(identity_service_pb2.ListRolesRequest(), metadata=bearer(member_token))
    )
    assert (refused.code(), reason(refused)) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_PERMISSION")
    name = "mods" + uuid.uuid4().hex[:6]
    await identity.public.CreateRole(
        identity_service_pb2.CreateRoleRequest(name=name, permissions=["roles:manage", "proofs:moderate"]),
        metadata=bearer(admin_token),
    )
    assigned = await identity.public.AssignRole(
        identity_service_pb2.AssignRoleRequest(user_id=member.id, role_name=name), metadata=bearer(admin_token)
    )
    assert sorted(assigned.user.roles) == sorted(["member", name])
    roles = await identity.public.ListRoles(identity_service_pb2.ListRolesRequest(), metadata=bearer(member_token))
    assert name in [r.name for r in roles.roles]
    principal = await identity.internal.Authenticate(identity_service_pb2.AuthenticateRequest(token=member_token))
    assert "proofs:moderate" in principal.principal.permissions
    await identity.public.RevokeRole(
        identity_service_pb2.RevokeRoleRequest(user_id=member.id, role_name=name), metadata=bearer(admin_token)
    )
    again = await rejected(
        identity.public.ListRoles(identity_service_pb2.ListRolesRequest(), metadata=bearer(member_token))
    )
    assert reason(again) == "MISSING_PERMISSION"


# -- the auth rules every service applies -----------------------------------------------
async def test_a_user_token_on_an_internal_service_is_permission_denied(identity: IdentityUnderTest) -> None:
    _, token = await identity.user_with_token()
    error = await rejected(
        identity_service_pb2_grpc.IdentityInternalServiceStub(identity.channel).GetUser(
            identity_service_pb2.GetUserRequest(user_id=str(uuid.uuid4())), metadata=bearer(token)
        )
    )
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "USER_TOKEN_ON_INTERNAL_SERVICE")
    nothing = await rejected(
        identity_service_pb2_grpc.IdentityInternalServiceStub(identity.channel).GetUser(
            identity_service_pb2.GetUserRequest(user_id=str(uuid.uuid4()))
        )
    )
    assert (nothing.code(), reason(nothing)) == (grpc.StatusCode.UNAUTHENTICATED, "SERVICE_CREDENTIAL_REQUIRED")


async def test_the_service_credential_on_a_public_service_is_permission_denied(identity: IdentityUnderTest) -> None:
    error = await rejected(
        identity.public.GetCurrentUser(identity_service_pb2.GetCurrentUserRequest(), metadata=CREDENTIAL)
    )
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CREDENTIAL_ON_PUBLIC_SERVICE")


async def test_another_service_refuses_a_logged_out_token(
    identity: IdentityUnderTest, postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from services.ledger.main import build as build_ledger

    settings = settings_with(
        postgres_port,
        mongodb_port,
        tmp_path_factory.mktemp("ledger-auth"),
        ledger_database_url=migrated_database(postgres_port, "ledger"),
        identity_target=f"127.0.0.1:{identity.port}",
    )
    ledger = ServiceRunner(build_ledger, settings, port=0)
    ledger_port = await ledger.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ledger_port}") as channel:
            stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
            probe = ledger_service_pb2.GetAccountRequest(account_id=str(uuid.uuid4()))
            _, token = await identity.user_with_token()
            known = await rejected(stub.GetAccount(probe, metadata=bearer(token)))
            assert reason(known) == "ACCOUNT_NOT_FOUND"  # authenticated through identity, then a normal answer
            await identity.public.DeleteCurrentSession(
                identity_service_pb2.DeleteCurrentSessionRequest(), metadata=bearer(token)
            )

            # The ledger may trust its cached answer for at most GOFUND_AUTH_CACHE_MS (5 s); poll past it.
            async def token_refused() -> grpc.aio.AioRpcError | None:
                try:
                    await stub.GetAccount(probe, metadata=bearer(token))
                except grpc.aio.AioRpcError as error:
                    return error if reason(error) == "INVALID_TOKEN" else None
                return None

            refused = await eventually(token_refused, 8, "the ledger to refuse the deleted session", interval_s=0.1)
            assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await ledger.stop()


async def test_secrets_never_reach_a_log_line_or_an_answer(
    identity: IdentityUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        user = await identity.register(password="unique-secret-password-42")
        session = await identity.login(user.email, "unique-secret-password-42")
        await identity.public.GetCurrentUser(
            identity_service_pb2.GetCurrentUserRequest(), metadata=bearer(session.token)
        )
        await rejected(identity.login(user.email, "another-secret-guess-77"))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in ("unique-secret-password-42", "another-secret-guess-77", session.token, "$argon2id$"):
        assert secret not in logged
    assert "argon2" not in str(session.user)
