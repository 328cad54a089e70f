"""The contracts match API.md: every public RPC has its route, internal ones have none."""

import json

import pytest
from gofund.goals.v1 import goals_service_pb2
from gofund.identity.v1 import identity_service_pb2
from gofund.ledger.v1 import ledger_service_pb2
from gofund.payments.v1 import payments_service_pb2
from google.api import annotations_pb2
from google.protobuf import descriptor, descriptor_pb2

from services.common.clients import retry_service_config

FILES = (identity_service_pb2, goals_service_pb2, ledger_service_pb2, payments_service_pb2)
PUBLIC = [f.DESCRIPTOR.services_by_name[n] for f in FILES for n in f.DESCRIPTOR.services_by_name if "Internal" not in n]
INTERNAL = [f.DESCRIPTOR.services_by_name[n] for f in FILES for n in f.DESCRIPTOR.services_by_name if "Internal" in n]

# Every route API.md lists, as (verb, path template).
API_MD_ROUTES = {
    ("post", "/v1/users"),
    ("post", "/v1/sessions"),
    ("delete", "/v1/sessions/current"),
    ("get", "/v1/users/me"),
    ("patch", "/v1/users/me"),
    ("get", "/v1/users/me/sessions"),
    ("post", "/v1/users/me:requestEmailVerification"),
    ("post", "/v1/users/me:verifyEmail"),
    ("post", "/v1/users/me:requestPhoneVerification"),
    ("post", "/v1/users/me:verifyPhone"),
    ("get", "/v1/roles"),
    ("post", "/v1/roles"),
    ("post", "/v1/users/{user_id}/roles"),
    ("delete", "/v1/users/{user_id}/roles/{role_name}"),
    ("post", "/v1/goals"),
    ("get", "/v1/goals/{goal_id}"),
    ("get", "/v1/goals"),
    ("patch", "/v1/goals/{goal_id}"),
    ("post", "/v1/goals/{goal_id}:cancel"),
    ("get", "/v1/goals/{goal_id}:watch"),
    ("post", "/v1/goals/{goal_id}/contributions"),
    ("get", "/v1/goals/{goal_id}/contributions"),
    ("get", "/v1/contributions/{contribution_id}"),
    ("post", "/v1/goals/{goal_id}/proofs"),
    ("get", "/v1/goals/{goal_id}/proofs"),
    ("get", "/v1/proofs/{proof_id}"),
    ("post", "/v1/proofs/{proof_id}/votes"),
    ("get", "/v1/accounts/{account_id}"),
    ("get", "/v1/accounts/{account_id}/balance"),
    ("get", "/v1/accounts/{account_id}/entries"),
    ("get", "/v1/accounts/{account_id}/balance:watch"),
    ("get", "/v1/payments/{payment_id}"),
    ("post", "/v1/payments/{payment_id}:verify"),
    ("post", "/v1/payout-recipients"),
    ("post", "/v1/webhooks/paystack"),
}


def http_rule(method: descriptor.MethodDescriptor) -> tuple[str, str] | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return verb, getattr(rule, verb)


def test_four_public_and_four_internal_services() -> None:
    assert sorted(s.name for s in PUBLIC) == [
        "GoalsService",
        "IdentityService",
        "LedgerService",
        "PaymentsService",
    ]
    assert sorted(s.name for s in INTERNAL) == [
        "GoalsInternalService",
        "IdentityInternalService",
        "LedgerInternalService",
        "PaymentsInternalService",
    ]


@pytest.mark.parametrize("service", PUBLIC, ids=lambda s: s.name)
def test_every_public_rpc_has_an_http_rule(service: descriptor.ServiceDescriptor) -> None:
    missing = [m.name for m in service.methods if http_rule(m) is None]
    assert missing == []


@pytest.mark.parametrize("service", INTERNAL, ids=lambda s: s.name)
def test_internal_rpcs_have_no_http_rule(service: descriptor.ServiceDescriptor) -> None:
    assert [m.name for m in service.methods if http_rule(m) is not None] == []


def test_every_api_md_route_is_served() -> None:
    served = {http_rule(m) for s in PUBLIC for m in s.methods}
    assert API_MD_ROUTES - served == set()


def test_streams_are_the_five_watch_rpcs() -> None:
    streams = {m.full_name for s in PUBLIC + INTERNAL for m in s.methods if m.server_streaming}
    assert streams == {
        "gofund.ledger.v1.LedgerService.WatchBalance",
        "gofund.ledger.v1.LedgerInternalService.WatchBalances",
        "gofund.goals.v1.GoalsService.WatchGoal",
        "gofund.identity.v1.IdentityInternalService.WatchRevocations",
        "gofund.payments.v1.PaymentsInternalService.WatchOutcomes",
    }


def test_webhook_takes_the_raw_body() -> None:
    method = payments_service_pb2.DESCRIPTOR.services_by_name["PaymentsService"].methods_by_name[
        "HandlePaystackWebhook"
    ]
    body_field = method.input_type.fields_by_name[http_rule_body(method)]
    assert body_field.message_type.full_name == "google.api.HttpBody"


def http_rule_body(method: descriptor.MethodDescriptor) -> str:
    return str(method.GetOptions().Extensions[annotations_pb2.http].body)


def test_reads_are_marked_free_of_side_effects() -> None:
    no_side_effects = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    gets = [m.full_name for s in PUBLIC for m in s.methods if (http_rule(m) or ("", ""))[0] == "get"]
    assert gets
    assert [g for g in gets if _method(g).GetOptions().idempotency_level != no_side_effects] == []


def _method(full_name: str) -> descriptor.MethodDescriptor:
    service_name, method_name = full_name.rsplit(".", 1)
    service = next(s for s in PUBLIC + INTERNAL if s.full_name == service_name)
    return service.methods_by_name[method_name]


def test_retries_are_configured_only_for_idempotent_methods() -> None:
    ledger_internal = ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerInternalService"]
    goals_public = goals_service_pb2.DESCRIPTOR.services_by_name["GoalsService"]
    config = json.loads(retry_service_config([ledger_internal, goals_public]))
    retried = {(n["service"].rsplit(".", 1)[1], n["method"]) for n in config["methodConfig"][0]["name"]}
    assert ("LedgerInternalService", "PostTransaction") in retried  # IDEMPOTENT on transaction_id
    assert ("GoalsService", "GetGoal") in retried  # NO_SIDE_EFFECTS
    assert ("GoalsService", "CreateVote") not in retried  # not idempotent
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
