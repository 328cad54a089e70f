"""The OpenAPI document generated from the protos (services/stack/openapi.py).

Most tests generate the document afresh from a descriptor set buf builds now, so
they judge the generator, not the committed file (whose freshness
tests/integration/test_codegen.py checks). A few build small descriptors by hand
for what our protos do not use yet (additional bindings, a named body field).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2, http_pb2
from google.protobuf import any_pb2, descriptor_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from openapi_spec_validator import OpenAPIV31SpecValidator

from services.stack import gen, openapi
from services.stack.envoy_config import SERVICES, EdgeConfig, render

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
Document = dict[str, Any]


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen.copy_third_party_protos()
    path = tmp_path_factory.mktemp("openapi") / "with-comments.binpb"
    subprocess.run([str(BIN / "buf"), "build", "--as-file-descriptor-set", "-o", str(path)], cwd=ROOT, check=True)
    return path


@pytest.fixture(scope="module")
def descriptors(descriptor_set: Path) -> openapi.Descriptors:
    return openapi.load(descriptor_set)


@pytest.fixture(scope="module")
def document(descriptor_set: Path) -> Document:
    return openapi.generate(descriptor_set)


def operations(document: Document) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, verb, op) for path, item in document["paths"].items() for verb, op in item.items()]


def operation(document: Document, operation_id: str) -> dict[str, Any]:
    return next(op for _, _, op in operations(document) if op["operationId"] == operation_id)


def schema(document: Document, name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def resolve(document: Document, ref: dict[str, Any]) -> dict[str, Any]:
    return schema(document, ref["$ref"].rsplit("/", 1)[1])


def http_rules(descriptors: openapi.Descriptors) -> list[tuple[str, str, str]]:
    """(verb, OpenAPI path, method) for every google.api.http rule of the public services."""
    found = []
    for service in openapi.PUBLIC_SERVICES:
        for method in descriptors.services[service]:
            rule = method.proto.options.Extensions[annotations_pb2.http]
            for one in [rule, *rule.additional_bindings]:
                pattern = one.WhichOneof("pattern")
                if pattern is not None:
                    path = re.sub(r"\{([^}=]+)(=[^}]*)?\}", r"{\1}", getattr(one, pattern))
                    found.append((pattern, path, method.full_name))
    return found


def test_the_document_is_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"] == "3.1.0"
    errors = [str(e.message) for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []


def test_the_committed_document_is_valid_openapi_3_1() -> None:
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert [str(e.message) for e in OpenAPIV31SpecValidator(committed).iter_errors()] == []


def test_every_http_rule_is_exactly_one_operation(document: Document, descriptors: openapi.Descriptors) -> None:
    rules = http_rules(descriptors)
    assert len(rules) >= 40
    found = [(verb, path) for path, verb, _ in operations(document) if path.startswith("/v1/")]
    assert sorted(found) == sorted((verb, path) for verb, path, _ in rules)
    for verb, path, method in rules:
        op = document["paths"][path][verb]
        assert op["operationId"] == method.split(".", 3)[3].replace(".", "_")


def test_internal_services_have_no_operation(document: Document) -> None:
    ids = {op["operationId"] for _, _, op in operations(document)}
    assert not [i for i in ids if "Internal" in i]


def test_path_parameters_are_required_and_absent_from_bodies(document: Document) -> None:
    checked = 0
    for path, _, op in operations(document):
        variables = re.findall(r"\{([^}]+)\}", path)
        parameters = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
        assert sorted(parameters) == sorted(variables), path
        assert all(p["required"] for p in parameters.values())
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body and "$ref" in body and variables:
            assert not set(variables) & set(resolve(document, body)["properties"]), path
            checked += 1
    assert checked >= 8  # UpdateGoal, CancelGoal, CreateContribution, CreateProof, CreateVote, ...
    update_body = operation(document, "GoalsService_UpdateGoal")["requestBody"]["content"]["application/json"]
    update = resolve(document, update_body["schema"])
    assert set(update["properties"]) == {"title", "description", "update_mask"}


def test_request_bodies_are_open_and_say_unknown_fields_are_ignored(document: Document) -> None:
    # The transcoder drops a body field it does not know without refusing the call,
    # so the document must not claim `additionalProperties: false`.
    bodies = [
        op["requestBody"]["content"]["application/json"]["schema"]
        for _, _, op in operations(document)
        if "$ref" in op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ]
    assert len(bodies) >= 15
    for body in bodies:
        body_schema = resolve(document, body)
        assert "additionalProperties" not in body_schema, body
        assert body_schema["description"].endswith(openapi.UNKNOWN_FIELDS), body
    for name, component in document["components"]["schemas"].items():
        assert component.get("additionalProperties") is not False, name


def test_fields_outside_path_and_body_are_query_parameters_of_reads(document: Document) -> None:
    list_goals = operation(document, "GoalsService_ListGoals")
    assert [p["name"] for p in list_goals["parameters"]] == ["status", "owner_id", "page_size", "page_token"]
    assert {p["in"] for p in list_goals["parameters"]} == {"query"}
    assert "requestBody" not in list_goals
    banks = operation(document, "PaymentsService_ListBanks")["parameters"]
    assert banks[0]["name"] == "currency"
    assert banks[0]["required"] is True


def test_int64_is_a_string_with_format_int64(document: Document) -> None:
    target = schema(document, "Goal")["properties"]["target_amount"]
    assert target["type"] == "string"
    assert target["format"] == "int64"
    # Requests may send a number or a string, as the transcoder accepts both.
    request = schema(document, "CreateGoalRequest")["properties"]["target_amount"]
    assert request["type"] == ["string", "integer"]
    assert request["format"] == "int64"
    assert schema(document, "Goal")["properties"]["contributor_count"]["type"] == "integer"


def test_an_enum_lists_its_value_names(document: Document, descriptors: openapi.Descriptors) -> None:
    names = [v.name for v in descriptors.enums[".gofund.goals.v1.GoalStatus"].proto.value]
    status = schema(document, "GoalStatus")
    assert status["type"] == "string"
    assert status["enum"] == names
    assert "GOAL_STATUS_OPEN" in names
    assert schema(document, "Goal")["properties"]["status"]["$ref"] == "#/components/schemas/GoalStatus"


def test_proto_comments_become_descriptions_and_summaries(document: Document, descriptors: openapi.Descriptors) -> None:
    get_goal = next(m for m in descriptors.services["gofund.goals.v1.GoalsService"] if m.proto.name == "GetGoal")
    op = operation(document, "GoalsService_GetGoal")
    assert op["description"] == get_goal.comment
    assert op["description"].startswith("Returns one goal.\n\nCaller: anyone")
    assert op["summary"] == "Returns one goal."
    assert schema(document, "Goal")["properties"]["id"]["description"] == "The goal's id (UUID)."
    assert "GoalsService" in [t["name"] for t in document["tags"]]


def test_streams_are_documented_with_both_media_types(document: Document) -> None:
    for operation_id in ("GoalsService_WatchGoal", "LedgerService_WatchBalance"):
        content = operation(document, operation_id)["responses"]["200"]["content"]
        assert sorted(content) == ["application/x-ndjson", "text/event-stream"]
        description = operation(document, operation_id)["responses"]["200"]["description"]
        assert "`id: <seq>`" in description
    unary = operation(document, "GoalsService_GetGoal")["responses"]["200"]["content"]
    assert list(unary) == ["application/json"]


def stream_messages(heartbeat: bool, after_seq: bool) -> tuple[openapi.Message, openapi.Message]:
    response = descriptor_pb2.DescriptorProto(name="Progress")
    response.field.add(name="seq", number=1, type=3, label=1)
    if heartbeat:
        response.field.add(name="heartbeat", number=2, type=8, label=1)
    request = descriptor_pb2.DescriptorProto(name="WatchRequest")
    if after_seq:
        request.field.add(name="after_seq", number=1, type=3, label=1)
    return openapi.Message(".t.Progress", response, "", {}), openapi.Message(".t.WatchRequest", request, "", {})


def test_a_stream_with_heartbeats_says_how_each_framing_carries_them() -> None:
    description = openapi.stream_description(*stream_messages(heartbeat=True, after_seq=True))
    # As the edge frames them: NDJSON repeats the latest state, SSE sends a comment.
    assert '`"heartbeat": true` that repeats the latest state (the same `seq`' in description
    assert "`: heartbeat`" in description
    assert "`id: <seq>`" in description
    assert "`after_seq`" in description
    assert "`Last-Event-ID`" in description


def test_a_stream_without_heartbeat_or_resume_fields_claims_neither() -> None:
    description = openapi.stream_description(*stream_messages(heartbeat=False, after_seq=False))
    assert "heartbeat" not in description.lower()
    assert "Last-Event-ID" not in description
    assert "`id: <seq>`" in description


def test_a_resumable_stream_documents_after_seq_and_last_event_id(document: Document) -> None:
    names = [p["name"] for p in operation(document, "LedgerService_WatchBalance")["parameters"]]
    assert names == ["account_id", "after_seq", "Last-Event-ID"]


def test_responses_require_what_the_transcoder_always_prints(document: Document) -> None:
    goal = schema(document, "Goal")
    assert {"id", "title", "target_amount", "status", "raised_amount"} <= set(goal["required"])
    # Message-typed fields are absent when unset.
    assert "created_at" not in goal["required"]
    assert "additionalProperties" not in goal


def test_request_fields_required_by_field_behavior(document: Document) -> None:
    create = schema(document, "CreateGoalRequest")
    assert create["required"] == ["title", "target_amount", "currency", "deadline"]
    assert schema(document, "CreateVoteRequest").get("required") is None
    assert operation(document, "GoalsService_CreateGoal")["requestBody"]["required"] is True


def test_uuid_fields_are_marked_and_references_are_not(document: Document) -> None:
    assert operation(document, "GoalsService_GetGoal")["parameters"][0]["schema"]["format"] == "uuid"
    contribution = schema(document, "Contribution")["properties"]
    assert contribution["goal_id"]["format"] == "uuid"  # named after Goal, whose id is a UUID
    assert contribution["user_id"]["format"] == "uuid"
    assert "format" not in contribution["payment_reference"]
    # A UUID that may be empty: one string pattern (no anyOf, which type generators
    # widen to `string | unknown`), and its description says when it is empty.
    payment_id = contribution["payment_id"]
    assert set(payment_id) == {"type", "pattern", "description"}
    assert payment_id["type"] == "string"
    assert "empty" in payment_id["description"]
    pattern = re.compile(payment_id["pattern"])
    assert pattern.search("")
    assert pattern.search("0b6f6f3e-5b6e-4b8a-9d3c-6f0a1c2d3e4f")
    assert pattern.search("0B6F6F3E-5B6E-4B8A-9D3C-6F0A1C2D3E4F")
    assert not pattern.search("not-a-uuid")
    assert not pattern.search("0b6f6f3e-5b6e-4b8a-9d3c-6f0a1c2d3e4f0")
    owner = operation(document, "GoalsService_ListGoals")["parameters"][1]
    assert (owner["name"], owner["schema"]) == ("owner_id", {"type": "string", "pattern": openapi.UUID_OR_EMPTY})
    assert "empty" in owner["description"]
    assert not [s for s in document["components"]["schemas"].values() if "maxLength" in json.dumps(s)]
    assert "format" not in schema(document, "Entry")["properties"]["transaction_id"]
    assert "format" not in schema(document, "Account")["properties"]["entity_id"]


def test_timestamps_and_field_masks_print_as_strings(document: Document) -> None:
    assert schema(document, "Goal")["properties"]["deadline"]["format"] == "date-time"
    assert schema(document, "UpdateGoalRequest")["properties"]["update_mask"]["type"] == "string"


def test_errors_are_status_with_error_info_and_the_reasons_of_the_comment(document: Document) -> None:
    responses = operation(document, "GoalsService_GetGoal")["responses"]
    assert responses["404"]["x-error-reasons"]["NOT_FOUND"] == ["GOAL_NOT_FOUND", "ROUTE_NOT_FOUND"]
    assert "INVALID_GOAL_ID" in responses["400"]["x-error-reasons"]["INVALID_ARGUMENT"]
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Status"
    status = schema(document, "Status")
    assert status["required"] == ["code", "message", "details"]
    assert status["properties"]["code"]["type"] == "integer"
    items = status["properties"]["details"]["items"]["anyOf"]
    assert {"$ref": "#/components/schemas/ErrorInfo"} in items
    info = schema(document, "ErrorInfo")
    assert info["properties"]["@type"]["const"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert {"reason", "domain", "metadata"} <= set(info["properties"])
    # "Errors: as GetAccount" brings GetAccount's errors.
    balance = operation(document, "LedgerService_GetBalance")["responses"]
    assert "ACCOUNT_NOT_FOUND" in balance["404"]["x-error-reasons"]["NOT_FOUND"]


def test_edge_errors_are_documented_where_they_apply(document: Document) -> None:
    login = operation(document, "IdentityService_CreateSession")["responses"]
    assert "RATE_LIMITED" in login["429"]["x-error-reasons"]["RESOURCE_EXHAUSTED"]
    assert "REQUEST_TOO_LARGE" in login["413"]["x-error-reasons"]["INVALID_ARGUMENT"]
    assert {"INVALID_BODY", "INVALID_QUERY_PARAMETER", "INVALID_REQUEST", "INVALID_GRPC_TIMEOUT"} <= set(
        login["400"]["x-error-reasons"]["INVALID_ARGUMENT"]
    )
    get_goal = operation(document, "GoalsService_GetGoal")["responses"]
    assert "413" not in get_goal
    assert "429" not in get_goal
    # No body, so no INVALID_BODY; any route takes (and refuses) a query.
    get_goal_400 = set(get_goal["400"]["x-error-reasons"]["INVALID_ARGUMENT"])
    assert {"INVALID_QUERY_PARAMETER", "INVALID_REQUEST", "INVALID_GRPC_TIMEOUT"} <= get_goal_400
    # Streams too: a client's grpc-timeout is checked on every route.
    watch_400 = operation(document, "GoalsService_WatchGoal")["responses"]["400"]
    assert "INVALID_GRPC_TIMEOUT" in watch_400["x-error-reasons"]["INVALID_ARGUMENT"]
    assert "INVALID_GRPC_ENCODING" in watch_400["x-error-reasons"]["INVALID_ARGUMENT"]
    assert "grpc-timeout" in watch_400["description"]
    assert "INVALID_BODY" not in get_goal_400
    assert get_goal["503"]["x-error-reasons"] == {"UNAVAILABLE": ["UPSTREAM_UNAVAILABLE"]}
    assert get_goal["504"]["x-error-reasons"] == {"DEADLINE_EXCEEDED": ["UPSTREAM_TIMEOUT"]}
    assert "504" not in operation(document, "GoalsService_WatchGoal")["responses"]  # streams have no deadline
    # The webhook's raw body is not parsed by the transcoder.
    webhook = operation(document, "PaymentsService_HandlePaystackWebhook")["responses"]
    assert "INVALID_BODY" not in webhook["400"]["x-error-reasons"]["INVALID_ARGUMENT"]
    assert "REQUEST_TOO_LARGE" in webhook["413"]["x-error-reasons"]["INVALID_ARGUMENT"]


def test_405_is_documented_where_a_path_value_can_reach_another_routes_method_guard(document: Document) -> None:
    # GET /v1/goals/x:cancel is the cancel route's path, which takes POST only.
    get_goal = operation(document, "GoalsService_GetGoal")["responses"]
    assert get_goal["405"]["x-error-reasons"] == {"UNIMPLEMENTED": ["METHOD_NOT_ALLOWED"]}
    assert "405" in operation(document, "PaymentsService_GetPayment")["responses"]
    # No value of a path without variables, or of one no other shape extends, gets there.
    assert "405" not in operation(document, "GoalsService_ListGoals")["responses"]
    assert "405" not in operation(document, "GoalsService_CancelGoal")["responses"]
    assert "405" not in operation(document, "IdentityService_DeleteSession")["responses"]


def test_every_reason_the_edge_gives_an_operation_is_documented(document: Document) -> None:
    # The reasons Envoy's local replies give (envoy/envoy.yaml), each either on some
    # operation of the document or one no documented operation can get.
    template = (ROOT / "envoy" / "envoy.yaml").read_text()
    in_config = set(re.findall(r"reason: ([A-Z_]+), domain: edge\.gofund", template))
    not_operations = {
        "WEB_APP_NOT_BUILT",  # `/`, the web app
        "EDGE_ERROR",  # statuses no route has (408, 431, 502)
    }
    documented = {
        reason
        for _, _, op in operations(document)
        for response in op["responses"].values()
        for reasons in response.get("x-error-reasons", {}).values()
        for reason in reasons
    }
    assert len(in_config) >= 10
    assert in_config - not_operations <= documented


def test_edge_rate_limited_routes_are_those_with_an_envoy_bucket() -> None:
    config = EdgeConfig(
        public_port=18080,
        admin_port=19901,
        upstreams={name: [("127.0.0.1", 50051 + i)] for i, name in enumerate(SERVICES)},
    )
    rendered = yaml.safe_load(render(config))
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    limited = set()
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if "envoy.filters.http.local_ratelimit" in route.get("typed_per_filter_config", {}):
                limited.add(route["match"]["path"].lstrip("/").replace("/", "."))
    assert limited == openapi.EDGE_RATE_LIMITED


def test_security_follows_the_services_anonymous_lists(document: Document) -> None:
    assert operation(document, "GoalsService_GetGoal")["security"] == [{}, {"bearerAuth": []}]
    assert operation(document, "LedgerService_GetAccount")["security"] == [{}, {"bearerAuth": []}]
    assert operation(document, "GoalsService_CreateGoal")["security"] == [{"bearerAuth": []}]
    assert operation(document, "IdentityService_CreateUser")["security"] == [{}, {"bearerAuth": []}]
    assert operation(document, "PaymentsService_HandlePaystackWebhook")["security"] == []
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A session token from `POST /v1/sessions`, as `Authorization: Bearer <token>`.",
    }


def test_the_paystack_webhook_takes_a_raw_body_and_its_signature(document: Document) -> None:
    webhook = operation(document, "PaymentsService_HandlePaystackWebhook")
    body = webhook["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in body
    assert body["description"].startswith("The raw body")
    assert [p["name"] for p in webhook["parameters"]] == ["x-paystack-signature"]


def test_the_edge_document_route_is_documented(document: Document) -> None:
    assert document["paths"]["/openapi.json"]["get"]["security"] == []


def test_generation_is_deterministic(descriptor_set: Path, tmp_path: Path) -> None:
    openapi.write(descriptor_set, tmp_path / "a")
    openapi.write(descriptor_set, tmp_path / "b")
    for name in ("openapi.json", "reference.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_reference_page_is_self_contained_and_lists_every_operation(document: Document) -> None:
    page = openapi.render_html(document)
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for path, verb, op in operations(document):
        assert f'id="{op["operationId"]}"' in page
        assert f"{verb.upper()}</span>{path}" in page


# --- descriptors built by hand ------------------------------------------------------


def file_proto(module: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def synthetic_document() -> Document:
    shelf = descriptor_pb2.FileDescriptorProto(name="test/shelf.proto", package="test.v1", syntax="proto3")
    book = shelf.message_type.add(name="Book")
    book.field.add(name="id", number=1, type=9, label=1)
    book.field.add(name="pages", number=2, type=3, label=1)
    request = shelf.message_type.add(name="UpdateBookRequest")
    request.field.add(name="shelf_id", number=1, type=9, label=1)
    request.field.add(name="book", number=2, type=11, label=1, type_name=".test.v1.Book")
    request.field.add(name="notify", number=3, type=8, label=1)
    service = shelf.service.add(name="ShelfService")
    method = service.method.add(name="UpdateBook", input_type=".test.v1.UpdateBookRequest", output_type=".test.v1.Book")
    rule = http_pb2.HttpRule(patch="/v1/shelves/{shelf_id}/book", body="book")
    rule.additional_bindings.add(put="/v1/books/{book.id=*}", body="*")
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    files = [file_proto(m) for m in (any_pb2, duration_pb2, status_pb2, error_details_pb2)] + [shelf]
    generator = openapi.Generator(openapi.Descriptors(files), frozenset(), services=("test.v1.ShelfService",))
    return generator.document()


def test_additional_bindings_are_operations_of_their_own() -> None:
    document = synthetic_document()
    assert list(document["paths"]["/v1/shelves/{shelf_id}/book"]) == ["patch"]
    assert list(document["paths"]["/v1/books/{book.id}"]) == ["put"]
    assert operation(document, "ShelfService_UpdateBook_1")["parameters"][0]["name"] == "book.id"
    assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []


def test_a_named_body_field_is_the_body_and_the_rest_is_query() -> None:
    op = operation(synthetic_document(), "ShelfService_UpdateBook")
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/BookInput"
    assert [(p["name"], p["in"]) for p in op["parameters"]] == [("shelf_id", "path"), ("notify", "query")]


def test_a_nested_path_variable_is_removed_from_the_body() -> None:
    document = synthetic_document()
    body = operation(document, "ShelfService_UpdateBook_1")["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/UpdateBookRequest.1"
    book = resolve(document, body)["properties"]["book"]
    assert list(book["properties"]) == ["pages"]
