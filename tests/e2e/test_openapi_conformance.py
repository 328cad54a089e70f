"""schemathesis against the edge, driven by the OpenAPI document the edge serves.

Every operation of GET /openapi.json gets positive and negative examples (fixed
seed, derandomized, a fixed budget per operation), and every response must be
no 5xx, conform to the document (status code, content type, body schema), and,
for a 4xx/5xx, be a JSON google.rpc.Status with an ErrorInfo naming a reason.
The document is the one the edge serves (GET /openapi.json), never a file
beside it: what is checked is what clients get.

Left out: the Paystack webhook (its signature cannot be forged by a fuzzer, and
its Envoy bucket is shared with the simulator's real deliveries on this stack).
The streams are in: a fuzzer's ids never name a goal or account, so they end at
once with an error, which is what is checked.

The stack is shared, so writes stay harmless: the requests come from an address
of their own (127.0.0.41), so the edge's per-address buckets they drain are
nobody else's; the user is new; nothing pays (CreateContribution only starts a
payment), so reconciliation at teardown has no money to account for; logging
out (DELETE /v1/sessions/current) runs last, with a token of its own.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.stack.stack import Stack
from tests.e2e.conftest import edge

SEED = 14
EXAMPLES_PER_OPERATION = 12
CLIENT_ADDRESS = "127.0.0.41"
REQUEST_TIMEOUT_S = 10
SKIPPED = {"PaymentsService_HandlePaystackWebhook"}
# Revokes the token it is called with: run after everything else, with a token of its own.
LAST = ("IdentityService_DeleteCurrentSession",)
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class SourceAddressAdapter(HTTPAdapter):
    """Connects from one loopback address (requests has no option for it)."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(CLIENT_ADDRESS))
    return session


def error_is_status_with_reason(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """A 4xx/5xx body is a JSON google.rpc.Status with an ErrorInfo that names a reason."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error as {content_type!r}: {response.text[:200]!r}"
    try:
        body = json.loads(response.text)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {response.text[:200]!r}") from None
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), int), body
    assert isinstance(body.get("message"), str), body
    infos = [d for d in body.get("details", []) if isinstance(d, dict) and d.get("@type") == ERROR_INFO]
    assert any(info.get("reason") for info in infos), f"no ErrorInfo reason in {body}"
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_is_status_with_reason,
]


@dataclass
class Findings:
    """Failures by class (operation, check, status, content type), with one reproduction each."""

    by_class: dict[tuple[str, str, int, str], str] = field(default_factory=dict)
    counts: dict[tuple[str, str, int, str], int] = field(default_factory=dict)

    def add(self, operation: str, check: str, response: schemathesis.Response | None, curl: str) -> None:
        status = response.status_code if response is not None else 0
        media = response.headers.get("content-type", [""])[0].split(";")[0] if response is not None else ""
        key = (operation, check, status, media)
        self.by_class.setdefault(key, curl)
        self.counts[key] = self.counts.get(key, 0) + 1

    def report(self) -> str:
        lines = []
        for key in sorted(self.by_class):
            operation, check, status, media = key
            count = self.counts[key]
            lines.append(f"{operation}: {check} ({status} {media or '-'}) x{count}\n    {self.by_class[key]}")
        return "\n".join(lines)


def register_and_log_in(session: requests.Session, base: str) -> tuple[str, str, str]:
    """A new user through the edge; returns (token, second token, user id)."""
    name = f"openapi{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    created = session.post(
        f"{base}/v1/users",
        json={"email": f"{name}@example.com", "username": name, "password": password},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert created.status_code == 200, created.text
    tokens = []
    for _ in range(2):
        login = session.post(
            f"{base}/v1/sessions", json={"login": name, "password": password}, timeout=REQUEST_TIMEOUT_S
        )
        assert login.status_code == 200, login.text
        tokens.append(login.json()["token"])
    return tokens[0], tokens[1], created.json()["user"]["id"]


def load_document(base: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=REQUEST_TIMEOUT_S)


def operations_in_order(schema: schemathesis.BaseSchema) -> Iterator[schemathesis.APIOperation]:
    found = [result.ok() for result in schema.get_all_operations()]
    by_id = {op.definition.raw["operationId"]: op for op in found}
    yield from (op for op in found if op.definition.raw["operationId"] not in (*LAST, *SKIPPED))
    yield from (by_id[name] for name in LAST if name in by_id)


def needs_token(operation: schemathesis.APIOperation) -> bool:
    return any("bearerAuth" in requirement for requirement in operation.definition.raw.get("security", []))


def fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    call: Callable[[schemathesis.Case], None],
) -> None:
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception:  # an operation with nothing to negate has no negative examples
        return

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        call(case)

    try:
        run()
    except Unsatisfiable:
        # Nothing to negate (no parameters, or none whose every wrong value the
        # transport can carry): only positive examples for this one.
        assert mode is GenerationMode.NEGATIVE


@pytest.mark.timeout(600)
def test_the_edge_conforms_to_its_openapi_document(stack: Stack) -> None:
    base = edge(stack)
    session = client_session()
    token, logout_token, _ = register_and_log_in(session, base)
    schema = load_document(base)
    findings = Findings()
    operation_ids = []

    for operation in operations_in_order(schema):
        operation_id = operation.definition.raw["operationId"]
        operation_ids.append(operation_id)
        bearer = logout_token if operation_id in LAST else token
        headers = {"Authorization": f"Bearer {bearer}"} if needs_token(operation) else {}

        def call(case: schemathesis.Case, operation_id: str = operation_id, headers: dict[str, str] = headers) -> None:
            response = None
            try:
                response = case.call(base_url=base, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
                case.validate_response(response, checks=CHECKS, headers=headers)
            except schemathesis.errors.FailureGroup as group:
                for failure in group.exceptions:
                    title = failure.title
                    if "error_is_status_with_reason" in title:
                        title = failure.message.splitlines()[0][:60]
                    findings.add(operation_id, title, response, case.as_curl_command(headers=headers))
            except requests.RequestException as error:
                findings.add(operation_id, type(error).__name__, None, case.as_curl_command(headers=headers))

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, call)

    # Every API operation the served document has was fuzzed (schemathesis leaves out
    # the route of the document it was loaded from).
    served = {op["operationId"] for item in schema.raw_schema["paths"].values() for op in item.values()}
    assert set(operation_ids) == served - SKIPPED - {"Edge_GetOpenApiDocument"}
    assert "GoalsService_CreateGoal" in operation_ids
    assert not findings.by_class, f"failures by class:\n{findings.report()}"
