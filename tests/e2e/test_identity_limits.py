"""Identity's abuse limits through real Envoy: per client address (the one Envoy saw, never a
client's X-Forwarded-For) and per account, answered 429 RATE_LIMITED with Retry-After.

Distinct clients are distinct loopback addresses: each test binds its client sockets to an
address of its own (127.0.0.x), so its floods never spend another test's budget."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from services.identity.domain import Limits
from services.stack.stack import Stack
from tests.e2e.conftest import edge
from tests.e2e.money import PASSWORD, User, new_user
from tests.helpers import reason_of, within_one_window


def client(stack: Stack, address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (a loopback address of its own)."""
    return httpx.Client(base_url=edge(stack), transport=httpx.HTTPTransport(local_address=address), timeout=20)


def login(http: httpx.Client, login_: str, password: str = PASSWORD, **headers: str) -> httpx.Response:
    return http.post("/v1/sessions", json={"login": login_, "password": password}, headers=headers)


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert reason_of(response) == "RATE_LIMITED"
    assert int(response.headers["retry-after"]) > 0


def test_a_session_records_the_address_envoy_saw_not_the_clients_x_forwarded_for(stack: Stack) -> None:
    user = new_user(stack)
    with client(stack, "127.0.0.21") as http:
        response = login(http, user.email, **{"x-forwarded-for": "6.6.6.6", "x-envoy-external-address": "6.6.6.6"})
        assert response.status_code == 200, response.text
        assert response.json()["session"]["ip_address"] == "127.0.0.21"
        listed = http.get("/v1/users/me/sessions", headers={"authorization": f"Bearer {response.json()['token']}"})
    assert {s["ip_address"] for s in listed.json()["sessions"] if s["current"]} == {"127.0.0.21"}


def test_a_login_flood_from_one_address_leaves_other_addresses_logging_in(stack: Stack) -> None:
    victim_of_nothing = new_user(stack)
    within_one_window(Limits.login_failures_per_client.window)

    def guess(_: int) -> httpx.Response:
        with client(stack, "127.0.0.22") as http:
            return login(http, f"nobody-{uuid.uuid4().hex}@example.com", "wrong password!")

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(guess, range(60)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {401, 429}, statuses
    limited = [a for a in answers if a.status_code == 429]
    assert limited, statuses
    assert_rate_limited(limited[-1])
    # The flooding address is refused even with a right password...
    with client(stack, "127.0.0.22") as http:
        assert_rate_limited(login(http, victim_of_nothing.email))
    # ...and everyone else logs in as usual.
    with client(stack, "127.0.0.23") as http:
        response = login(http, victim_of_nothing.email)
    assert response.status_code == 200, response.text


def test_failed_logins_against_one_account_are_limited_from_any_address(stack: Stack) -> None:
    target = new_user(stack)
    within_one_window(Limits.login_failures_per_account.window)
    answers = []
    for i in range(12):
        with client(stack, f"127.0.1.{i + 1}") as http:
            answers.append(login(http, target.email, "wrong password!"))
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert_rate_limited(answers[10])
    assert (
        "retry_after_s"
        in next(d for d in answers[10].json()["details"] if d["@type"].endswith("ErrorInfo"))["metadata"]
    )


def request_code(stack: Stack, user: User) -> httpx.Response:
    with client(stack, "127.0.0.24") as http:
        return http.post("/v1/users/me:requestEmailVerification", json={}, headers=user.auth)


def guess_code(stack: Stack, user: User, code: str) -> httpx.Response:
    with client(stack, "127.0.0.24") as http:
        return http.post("/v1/users/me:verifyEmail", json={"code": code}, headers=user.auth)


def latest_code(stack: Stack, user: User) -> str:
    mails = [json.loads(line) for line in (stack.data_dir / "mail.jsonl").read_text().splitlines()]
    body = [m for m in mails if m["to"] == user.email][-1]["body"]
    found = re.search(r"\b(\d{6})\b", body)
    assert found is not None
    return found.group(1)


def wrong_code(right: str) -> str:
    return f"{(int(right) + 1) % 1_000_000:06d}"


def test_code_guesses_are_capped_across_newly_requested_codes(stack: Stack) -> None:
    user = new_user(stack)
    within_one_window(Limits.code_guesses_per_account.window)
    answers = []
    for _ in range(2):  # two codes of 5 guesses each: 10 wrong guesses, the hour's cap
        assert request_code(stack, user).status_code == 200
        right = latest_code(stack, user)
        answers += [guess_code(stack, user, wrong_code(right)).status_code for _ in range(5)]
    assert answers == [400] * 10
    # A third code would reset the code's own 5 attempts; the hourly cap holds.
    assert request_code(stack, user).status_code == 200
    assert_rate_limited(guess_code(stack, user, latest_code(stack, user)))


def test_verification_requests_are_limited_per_account(stack: Stack) -> None:
    user = new_user(stack)
    within_one_window(Limits.code_requests_per_account.window)
    statuses = [request_code(stack, user).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert_rate_limited(request_code(stack, user))
