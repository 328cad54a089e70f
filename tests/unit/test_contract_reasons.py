"""The contracts say which ErrorInfo reasons each service answers, and the code answers those.

A reason is an UPPER_SNAKE word (with an underscore) named in parentheses after
a gRPC code in a proto comment — `INVALID_ARGUMENT (INVALID_GOAL_ID, ...)` — or
given to an error table (`ErrorMapping`) or a validator (`require`,
`FieldViolation`, `missing`) in the service's code. Every reason a service's
protos promise is produced by its code (or by the shared runtime for every
service: authentication, the character check); every reason its code produces
is promised somewhere in its protos. (Per service, not per RPC: which RPC
raises which domain error is not visible without running it.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "goals", "ledger", "payments")
REASON = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
CODES = tuple(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)
# A code, then its reasons: the parenthesized groups up to the next code or the end of the sentence
# ("FAILED_PRECONDITION (NOT_PENDING) if ..., (PENDING_ALREADY_RESOLVED) if ...").
_PROMISE = re.compile(r"\b(" + "|".join(CODES) + r")\s*(\([^)]*\)(?:[^;.()]*\([^)]*\))*)")
# Calls whose string arguments are reasons: the error tables, the validators and their helpers.
_PRODUCERS = {"ErrorMapping", "FieldViolation", "require", "missing", "_invalid", "parse_id", "check_id"}
# The shared runtime answers these on every service (services/common): promised by each service's protos.
COMMON_REASONS = {
    "LOGIN_REQUIRED",
    "INVALID_TOKEN",
    "SERVICE_CREDENTIAL_REQUIRED",
    "USER_TOKEN_ON_INTERNAL_SERVICE",
    "SERVICE_CREDENTIAL_ON_PUBLIC_SERVICE",
    "INVALID_CHARACTERS",
    "MALFORMED_REQUEST",
}
# Fallbacks of the shared error table that a precise reason always replaces
# (every violation and every mapped error carries its own): never answered.
FALLBACKS = {"VALIDATION_FAILED", "UNAUTHENTICATED", "PERMISSION_DENIED"}


def promised(service: str) -> set[str]:
    comments = " ".join(
        line.split("//", 1)[1]
        for path in sorted((ROOT / "proto" / "gofund" / service / "v1").glob("*.proto"))
        for line in path.read_text().splitlines()
        if "//" in line
    )
    found: set[str] = set()
    for match in _PROMISE.finditer(" ".join(comments.split())):
        found |= set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", match.group(2))) - set(CODES)
    return found


def produced_in(paths: list[Path], *, producers: set[str] | None = _PRODUCERS) -> set[str]:
    """Reasons given to `producers` in `paths` (None: any such string at all, for what a contract may promise)."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if producers is None:
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and REASON.match(node.value):
                    found.add(node.value)
                continue
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if producers is not None and name not in producers:
                continue
            for argument in [*node.args, *(k.value for k in node.keywords)]:
                for inner in ast.walk(argument):
                    if isinstance(inner, ast.Constant) and isinstance(inner.value, str) and REASON.match(inner.value):
                        found.add(inner.value)
    return found


def produced(service: str, producers: set[str] | None = _PRODUCERS) -> set[str]:
    return produced_in(sorted((ROOT / "services" / service).glob("*.py")), producers=producers) - FALLBACKS


def shared() -> set[str]:
    """What the shared runtime can answer for any service: the common reasons, and those of the
    helpers a service may use (paging, permissions, idempotency keys, rate limits)."""
    return produced_in(sorted((ROOT / "services" / "common").glob("*.py")), producers=None) - FALLBACKS


def test_the_shared_runtime_produces_the_common_reasons() -> None:
    assert COMMON_REASONS - shared() == set()


@pytest.mark.parametrize("service", SERVICES)
def test_every_reason_a_contract_promises_is_produced(service: str) -> None:
    # Any such string counts here (a reason passed through a helper, or its default, is still produced).
    assert promised(service) - produced(service, None) - shared() == set()


@pytest.mark.parametrize("service", SERVICES)
def test_every_reason_a_service_produces_is_in_its_contract(service: str) -> None:
    assert (produced(service) | COMMON_REASONS) - promised(service) == set()


def test_the_reason_finder_reads_proto_comments_and_code_calls(tmp_path: Path) -> None:
    code = tmp_path / "x.py"
    code.write_text('check.require(ok, "f", "d", "A_B" if x else "C_D")\nErrorMapping(Code.X, "E_F")\nprint("G_H")\n')
    assert produced_in([code]) == {"A_B", "C_D", "E_F"}
    text = "Errors: INVALID_ARGUMENT (INVALID_X, INVALID_Y when z), (INVALID_W) if v; NOT_FOUND (N_F). Not (A_B)."
    assert [m.group(2) for m in _PROMISE.finditer(text)] == ["(INVALID_X, INVALID_Y when z), (INVALID_W)", "(N_F)"]
