"""Bad input is a clear INVALID_ARGUMENT, never a 500, and a refused request writes nothing.

All four services on real PostgreSQL and the Mongo-wire server (`paying_platform`).
Each NUL-byte case reached PostgreSQL before, which cannot store NUL in text:
500 INTERNAL, and for CreateGoal a GOAL account left behind in the ledger.
Crafted page tokens reached a query (or a comparison) the same way.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from gofund.goals.v1 import goals_service_pb2
from gofund.identity.v1 import identity_service_pb2
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc
from gofund.payments.v1 import payments_service_pb2
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.helpers import reason as reason_of_error
from tests.helpers import rejected
from tests.integration.fixtures.goals import Platform, User
from tests.integration.fixtures.identity import PASSWORD

pytestmark = pytest.mark.asyncio
NUL = "\x00"


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The (field, reason) pairs of the call's BadRequest detail."""
    found: list[tuple[str, str]] = []
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    found.extend((v.field, v.reason) for v in bad_request.field_violations)
    return found


def assert_invalid(error: grpc.aio.AioRpcError, reason: str, *fields: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert reason_of_error(error) == reason, error
    for field in fields:
        assert (field, reason) in violations(error), violations(error)


def unsigned_token(cursor: dict[str, Any]) -> str:
    """A token as the services issued them before they were signed: base64 of the JSON cursor."""
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")


async def count(platform: Platform, url: str, table: str) -> int:
    rows = await platform.sql(url, f"SELECT count(*) FROM {table}")  # noqa: S608 - a table name of ours
    return int(rows[0][0])


async def goal_accounts(platform: Platform) -> int:
    rows = await platform.sql(platform.ledger_url, "SELECT count(*) FROM accounts WHERE account_type = 'GOAL'")
    return int(rows[0][0])


def identity_url(platform: Platform) -> str:
    return str(platform.settings.identity_database_url)


# -- control characters ----------------------------------------------------------------------
async def test_nul_in_registration_names_is_invalid_characters_and_no_user_is_made(paying_platform: Platform) -> None:
    users = await count(paying_platform, identity_url(paying_platform), "users")
    name = "h" + uuid.uuid4().hex[:12]
    for field, value in (("first_name", f"Ada{NUL}"), ("last_name", f"{NUL}Lovelace"), ("username", name + NUL)):
        fields = {"email": f"{name}@example.com", "username": name, "password": PASSWORD, field: value}
        error = await rejected(paying_platform.identity.CreateUser(identity_service_pb2.CreateUserRequest(**fields)))
        assert_invalid(error, "INVALID_CHARACTERS", field)
    assert await count(paying_platform, identity_url(paying_platform), "users") == users


async def test_nul_in_a_login_is_invalid_characters_and_no_session_is_made(paying_platform: Platform) -> None:
    sessions = await count(paying_platform, identity_url(paying_platform), "sessions")
    error = await rejected(
        paying_platform.identity.CreateSession(
            identity_service_pb2.CreateSessionRequest(login=f"someone{NUL}", password=PASSWORD)
        )
    )
    assert_invalid(error, "INVALID_CHARACTERS", "login")
    assert await count(paying_platform, identity_url(paying_platform), "sessions") == sessions


async def test_nul_in_a_profile_update_is_refused_and_the_profile_is_unchanged(paying_platform: Platform) -> None:
    user = await paying_platform.fresh_user()
    before = await paying_platform.identity.GetCurrentUser(
        identity_service_pb2.GetCurrentUserRequest(), metadata=user.auth
    )
    error = await rejected(
        paying_platform.identity.UpdateCurrentUser(
            identity_service_pb2.UpdateCurrentUserRequest(
                first_name=f"Grace{NUL}", update_mask=field_mask_pb2.FieldMask(paths=["first_name"])
            ),
            metadata=user.auth,
        )
    )
    assert_invalid(error, "INVALID_CHARACTERS", "first_name")
    after = await paying_platform.identity.GetCurrentUser(
        identity_service_pb2.GetCurrentUserRequest(), metadata=user.auth
    )
    assert after.user == before.user


@pytest.mark.parametrize("field", ["title", "description", "request_id"])
async def test_nul_in_a_new_goal_is_refused_and_leaves_no_goal_and_no_ledger_account(
    paying_platform: Platform, field: str
) -> None:
    owner = await paying_platform.user()
    goals = await count(paying_platform, paying_platform.goals_url, "goals")
    accounts = await goal_accounts(paying_platform)
    fields: dict[str, Any] = {
        "title": "Roof for the clinic",
        "description": "Iron sheets.",
        "request_id": uuid.uuid4().hex,
    }
    fields[field] += NUL
    error = await rejected(paying_platform.goal(owner, **fields))
    assert_invalid(error, "INVALID_CHARACTERS", field)
    assert await count(paying_platform, paying_platform.goals_url, "goals") == goals
    assert await goal_accounts(paying_platform) == accounts


async def test_a_refused_new_goal_opens_no_ledger_account(paying_platform: Platform) -> None:
    owner = await paying_platform.user()
    accounts = await goal_accounts(paying_platform)
    for fields in (
        {"title": "Bad\x7f title"},  # DEL
        {"description": "C1 control \x85 inside"},
        {"title": "x"},  # too short
        {"deadline": paying_platform.deadline(days=400)},  # too far
    ):
        error = await rejected(paying_platform.goal(owner, **fields))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert await goal_accounts(paying_platform) == accounts


async def test_tabs_and_newlines_are_text_and_still_accepted(paying_platform: Platform) -> None:
    owner = await paying_platform.user()
    goal = await paying_platform.goal(owner, description="Line one.\r\n\tIndented line two.")
    assert goal.description == "Line one.\r\n\tIndented line two."


async def test_nul_in_a_goal_update_or_a_cancel_reason_is_refused_and_the_goal_is_unchanged(
    paying_platform: Platform,
) -> None:
    owner = await paying_platform.user()
    goal = await paying_platform.goal(owner)
    error = await rejected(
        paying_platform.goals.public.UpdateGoal(
            goals_service_pb2.UpdateGoalRequest(goal_id=goal.id, title=f"New{NUL} title"), metadata=owner.auth
        )
    )
    assert_invalid(error, "INVALID_CHARACTERS", "title")
    error = await rejected(
        paying_platform.goals.public.CancelGoal(
            goals_service_pb2.CancelGoalRequest(goal_id=goal.id, reason=f"changed my mind{NUL}"), metadata=owner.auth
        )
    )
    assert_invalid(error, "INVALID_CHARACTERS", "reason")
    assert await paying_platform.get(goal.id) == goal


async def test_nul_in_a_contribution_key_is_refused_and_nothing_is_recorded(paying_platform: Platform) -> None:
    owner, payer = await paying_platform.users(2)
    goal = await paying_platform.goal(owner)
    contributions = await count(paying_platform, paying_platform.goals_url, "contributions")
    error = await rejected(
        paying_platform.goals.public.CreateContribution(
            goals_service_pb2.CreateContributionRequest(
                goal_id=goal.id, amount=500, currency=goal.currency, idempotency_key=f"key{NUL}"
            ),
            metadata=payer.auth,
        )
    )
    assert_invalid(error, "INVALID_CHARACTERS", "idempotency_key")
    assert await count(paying_platform, paying_platform.goals_url, "contributions") == contributions


async def test_nested_repeated_and_map_fields_are_checked_and_named_by_their_path(paying_platform: Platform) -> None:
    posting = ledger_pb2.Posting(account_id=str(uuid.uuid4()), entry_type=ledger_pb2.ENTRY_TYPE_DEBIT, amount=1)
    error = await rejected(
        paying_platform.ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=f"hardening-{uuid.uuid4()}",
                postings=[posting, ledger_pb2.Posting(currency=f"NG{NUL}")],
                metadata={"note": "bell \x07", "ok": "fine"},
            )
        )
    )
    assert_invalid(error, "INVALID_CHARACTERS", "postings[1].currency", 'metadata["note"]')
    assert len(violations(error)) == 2


async def test_bytes_that_are_not_the_request_message_are_invalid_argument(paying_platform: Platform) -> None:
    call = paying_platform.goals.channel.unary_unary(
        "/gofund.goals.v1.GoalsService/GetGoal",
        request_serializer=lambda raw: raw,
        response_deserializer=goals_service_pb2.GetGoalResponse.FromString,
    )
    error = await rejected(call(b"\x0a\xff\xff\xff\xff\x0f", timeout=5))  # a length running past the end
    assert_invalid(error, "MALFORMED_REQUEST")


# -- page tokens -----------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="module")
async def ledger_public(paying_platform: Platform) -> AsyncIterator[ledger_service_pb2_grpc.LedgerServiceStub]:
    async with grpc.aio.insecure_channel(paying_platform.settings.target("ledger")) as channel:
        yield ledger_service_pb2_grpc.LedgerServiceStub(channel)


def tampered(token: str) -> str:
    """A token we issued with its cursor changed and its signature kept."""
    payload, _, tag = token.partition(".")
    cursor = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    cursor["id"] = str(uuid.uuid4())
    return f"{unsigned_token(cursor)}.{tag}"


@pytest.mark.parametrize(
    "cursor",
    [{"before_seq": True}, {"before_seq": 1e30}, {"before_seq": 2**70}, {"before_seq": "5"}, {"before_seq": 5}],
    ids=["bool", "float", "beyond-int64", "string", "unsigned-but-well-formed"],
)
async def test_crafted_ledger_entry_page_tokens_are_invalid_page_token(
    paying_platform: Platform, ledger_public: ledger_service_pb2_grpc.LedgerServiceStub, cursor: dict[str, Any]
) -> None:
    owner = await paying_platform.user()
    goal = await paying_platform.goal(owner)
    error = await rejected(
        ledger_public.ListEntries(
            ledger_service_pb2.ListEntriesRequest(account_id=goal.account_id, page_token=unsigned_token(cursor)),
            metadata=owner.auth,
        )
    )
    assert_invalid(error, "INVALID_PAGE_TOKEN", "page_token")


async def test_crafted_session_page_tokens_are_invalid_page_token(paying_platform: Platform) -> None:
    user = await paying_platform.fresh_user()
    for token in (unsigned_token({"before": "x"}), unsigned_token({"before": "2026-01-01T00:00:00+00:00"}), "a.b"):
        error = await rejected(
            paying_platform.identity.ListCurrentUserSessions(
                identity_service_pb2.ListCurrentUserSessionsRequest(page_token=token), metadata=user.auth
            )
        )
        assert_invalid(error, "INVALID_PAGE_TOKEN", "page_token")


async def test_session_pages_still_follow_on_from_the_token_given(paying_platform: Platform) -> None:
    user = await paying_platform.fresh_user()
    username = (
        await paying_platform.identity.GetCurrentUser(identity_service_pb2.GetCurrentUserRequest(), metadata=user.auth)
    ).user.username
    for _ in range(2):
        await paying_platform.identity.CreateSession(
            identity_service_pb2.CreateSessionRequest(login=username, password=PASSWORD)
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await paying_platform.identity.ListCurrentUserSessions(
            identity_service_pb2.ListCurrentUserSessionsRequest(page_size=1, page_token=token), metadata=user.auth
        )
        seen.extend(s.id for s in page.sessions)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 3


async def admin(platform: Platform) -> User:
    user = await platform.fresh_user()
    service = platform.runners[0].service
    assert service is not None
    await service.servicers[0][1].identity.grant(user.id, "admin")  # type: ignore[attr-defined]
    return user


@pytest.mark.parametrize(
    "cursor",
    [
        {"received_at": "9999-12-31T23:59:59-14:00", "event_id": "x"},  # past the year 9999 in UTC
        {"received_at": "9999-12-31T23:59:59+00:00", "event_id": "x"},
        {"received_at": "2026-01-01T00:00:00+00:00", "event_id": "x"},  # unsigned but well-formed
    ],
    ids=["beyond-9999-utc", "far-future", "unsigned-but-well-formed"],
)
async def test_crafted_webhook_event_page_tokens_are_invalid_page_token(
    paying_platform: Platform, cursor: dict[str, Any]
) -> None:
    operator = await admin(paying_platform)
    error = await rejected(
        paying_platform.payments.ListWebhookEvents(
            payments_service_pb2.ListWebhookEventsRequest(page_token=unsigned_token(cursor)),
            metadata=operator.auth,
        )
    )
    assert_invalid(error, "INVALID_PAGE_TOKEN", "page_token")


async def test_goal_pages_follow_on_and_a_changed_or_unsigned_token_is_refused(paying_platform: Platform) -> None:
    owner = await paying_platform.fresh_user()
    made = {(await paying_platform.goal(owner)).id for _ in range(3)}
    seen: list[str] = []
    token, tokens = "", []
    while True:
        page = await paying_platform.goals.public.ListGoals(
            goals_service_pb2.ListGoalsRequest(owner_id=owner.id, page_size=2, page_token=token)
        )
        seen.extend(g.id for g in page.goals)
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    assert sorted(seen) == sorted(made)
    payload = json.loads(base64.urlsafe_b64decode(tokens[0].partition(".")[0] + "=="))
    for bad in (tampered(tokens[0]), unsigned_token(payload), tokens[0] + "x"):
        error = await rejected(
            paying_platform.goals.public.ListGoals(
                goals_service_pb2.ListGoalsRequest(owner_id=owner.id, page_size=2, page_token=bad)
            )
        )
        assert_invalid(error, "INVALID_PAGE_TOKEN", "page_token")


async def test_a_token_of_one_service_is_refused_by_another(
    paying_platform: Platform, ledger_public: ledger_service_pb2_grpc.LedgerServiceStub
) -> None:
    owner = await paying_platform.fresh_user()
    for _ in range(2):
        await paying_platform.goal(owner)
    page = await paying_platform.goals.public.ListGoals(
        goals_service_pb2.ListGoalsRequest(owner_id=owner.id, page_size=1)
    )
    goal = page.goals[0]
    error = await rejected(
        ledger_public.ListEntries(
            ledger_service_pb2.ListEntriesRequest(account_id=goal.account_id, page_token=page.next_page_token),
            metadata=owner.auth,
        )
    )
    assert_invalid(error, "INVALID_PAGE_TOKEN", "page_token")


# -- URLs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["https://[::1", "https://exa\nmple.com/x", "https://[::1]:99999999/"])
async def test_a_malformed_proof_url_is_invalid_media_url(paying_platform: Platform, url: str) -> None:
    owner = await paying_platform.user()
    error = await rejected(
        paying_platform.goals.public.CreateProof(
            goals_service_pb2.CreateProofRequest(
                goal_id=str(uuid.uuid4()), title="Receipts", description="All of them.", media_urls=[url]
            ),
            metadata=owner.auth,
        )
    )
    assert_invalid(error, "INVALID_MEDIA_URL", "media_urls[0]")
