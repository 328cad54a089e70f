"""The edge as a browser meets it: every error Envoy raises is JSON with an ErrorInfo,
path fields cannot be overridden, CORS for the configured origins, streams framed
by Accept (NDJSON or SSE with ids), gRPC-Web, grpcurl refused at once, and the web
app and the OpenAPI document served on the API's origin.

Most run on the shared stack; the few that need another Envoy (no upstream alive,
a web build of their own) render one from the same template, start it on free
ports and stop it themselves."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from gofund.goals.v1 import goals_service_pb2, goals_service_pb2_grpc

from services.stack import embedded
from services.stack.envoy_config import OPENAPI_DIR, SERVICES, EdgeConfig, write
from services.stack.stack import Stack
from tests.e2e.conftest import BIN, edge
from tests.e2e.money import api, new_user, ok, open_goal
from tests.helpers import eventually_sync

UNUSED_UUID = "00000000-0000-4000-8000-000000000001"
OTHER_UUID = "00000000-0000-4000-8000-000000000002"


def edge_error(response: httpx.Response, status: int) -> tuple[int, str]:
    """(gRPC code, ErrorInfo reason) of an edge error, after checking its shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    info = next(d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
    assert info["domain"] == "edge.gofund"
    return body["code"], info["reason"]


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        pytest.param('{"title": "x", ', "Unexpected end of string", id="malformed-json"),
        pytest.param('{"title": 5}', "title", id="wrong-type"),
        pytest.param('{"target_amount": 1.5}', "target_amount", id="fractional-int64"),
        pytest.param('{"target_amount": 99999999999999999999}', "target_amount", id="overflowing-int64"),
    ],
)
def test_a_body_the_transcoder_cannot_read_is_a_json_invalid_body(stack: Stack, body: str, quoted: str) -> None:
    owner = new_user(stack)
    response = api(stack, "POST", "/v1/goals", owner, content=body, headers={"content-type": "application/json"})
    assert edge_error(response, 400) == (3, "INVALID_BODY")
    # The transcoder's own words, which quote only what the client sent.
    assert quoted in response.json()["message"]


def test_a_bad_enum_value_is_a_json_invalid_query_parameter(stack: Stack) -> None:
    listed = api(stack, "GET", "/v1/goals?status=GOAL_STATUS_NOPE")
    assert edge_error(listed, 400) == (3, "INVALID_QUERY_PARAMETER")
    assert "GOAL_STATUS_NOPE" in listed.json()["message"]


def test_an_unknown_query_parameter_is_a_json_invalid_query_parameter(stack: Stack) -> None:
    response = api(stack, "GET", "/v1/goals?colour=red")
    assert edge_error(response, 400) == (3, "INVALID_QUERY_PARAMETER")
    assert "colour" in response.json()["message"]


def test_a_method_a_path_does_not_take_is_405_json_with_allow(stack: Stack) -> None:
    response = api(stack, "PUT", "/v1/goals")
    assert edge_error(response, 405) == (12, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET, POST"
    deleted = api(stack, "DELETE", f"/v1/goals/{UNUSED_UUID}")
    assert edge_error(deleted, 405) == (12, "METHOD_NOT_ALLOWED")
    assert deleted.headers["allow"] == "GET, PATCH"


def test_a_method_http_does_not_know_is_400_json(stack: Stack) -> None:
    # HTTP/1's parser refuses it before any route; still the JSON error shape.
    response = api(stack, "FROB", "/v1/goals")
    assert edge_error(response, 400) == (3, "INVALID_REQUEST")


def test_an_unknown_route_is_404_json(stack: Stack) -> None:
    for path in ("/v2/goals", "/v1/nothing-here", "/favicon-nope.ico"):
        assert edge_error(api(stack, "GET", path), 404) == (5, "ROUTE_NOT_FOUND"), path


@pytest.mark.parametrize("name", ["!", "~", "^", "#", "*", "$", "x-a'b", "x|y", "trace~id"])
def test_a_header_name_grpc_metadata_cannot_carry_is_dropped_not_a_500(stack: Stack, name: str) -> None:
    # HTTP allows these names; a gRPC server refuses a whole call for one (500
    # "Illegal header key"), so the edge drops them and the call goes through.
    response = api(stack, "GET", "/v1/goals?page_size=1", headers={name: "x", "x-fine.name_1": "kept"})
    assert response.status_code == 200, response.text
    assert "goals" in response.json()


# A malformed grpc-timeout or -bin value used to reach grpc-python, which failed the
# call (500) and broke Envoy's shared upstream connection, so each test also checks
# that the next plain call goes through.
@pytest.mark.parametrize("value", ["zz", "999999999S", "10", "10s", "1.5S", "-1S", "5 S"])
def test_a_malformed_grpc_timeout_is_400_json_invalid_grpc_timeout(stack: Stack, value: str) -> None:
    response = api(stack, "GET", "/v1/goals?page_size=1", headers={"grpc-timeout": value})
    assert edge_error(response, 400) == (3, "INVALID_GRPC_TIMEOUT")
    assert "grpc-timeout" in response.json()["message"]
    posted = api(stack, "POST", "/v1/goals", json={"title": "x"}, headers={"grpc-timeout": value})
    assert edge_error(posted, 400) == (3, "INVALID_GRPC_TIMEOUT")
    assert api(stack, "GET", "/v1/goals?page_size=1").status_code == 200


@pytest.mark.parametrize("value", ["5S", "99999999m", "1H", "30000000u"])
def test_a_client_grpc_timeout_in_grpcs_form_still_works(stack: Stack, value: str) -> None:
    response = api(stack, "GET", "/v1/goals?page_size=1", headers={"grpc-timeout": value})
    assert response.status_code == 200, response.text
    assert "goals" in response.json()


@pytest.mark.parametrize("value", ["nope", "br", "gzip,deflate", ""])
def test_a_grpc_encoding_the_services_cannot_take_is_400_json_invalid_grpc_encoding(stack: Stack, value: str) -> None:
    response = api(stack, "GET", "/v1/goals?page_size=1", headers={"grpc-encoding": value})
    assert edge_error(response, 400) == (3, "INVALID_GRPC_ENCODING")
    assert api(stack, "GET", "/v1/goals?page_size=1", headers={"grpc-encoding": "gzip"}).status_code == 200


@pytest.mark.parametrize("name", ["grpc-status", "grpc-message"])
def test_a_trailer_name_sent_as_a_request_header_is_dropped_not_a_500(stack: Stack, name: str) -> None:
    response = api(stack, "GET", "/v1/goals?page_size=1", headers={name: "zz"})
    assert response.status_code == 200, response.text
    assert "goals" in response.json()


@pytest.mark.parametrize("value", ["YWI=", "YWI", "YQ==", "!!", "not base64 at all"])
def test_a_binary_header_from_a_json_client_is_dropped_not_a_500(stack: Stack, value: str) -> None:
    response = api(stack, "GET", "/v1/goals?page_size=1", headers={"x-foo-bin": value, "grpc-trace-bin": value})
    assert response.status_code == 200, response.text
    assert "goals" in response.json()
    assert api(stack, "GET", "/v1/goals?page_size=1").status_code == 200


def test_a_native_grpc_client_with_its_deadline_and_binary_metadata_is_unaffected(stack: Stack) -> None:
    # The library sends grpc-timeout in gRPC's form and -bin values as base64 (which
    # the edge drops: no service reads binary metadata).
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.envoy_port}") as channel:
        stub = goals_service_pb2_grpc.GoalsServiceStub(channel)
        _, call = stub.ListGoals.with_call(
            goals_service_pb2.ListGoalsRequest(page_size=1),
            metadata=[("x-foo-bin", b"\xff\x00ab"), ("x-trace", "kept")],
            timeout=10,
        )
    assert call.code() is grpc.StatusCode.OK


def test_a_native_grpc_call_with_a_malformed_grpc_timeout_gets_grpc_invalid_argument(stack: Stack) -> None:
    # gRPC libraries never send a malformed grpc-timeout (grpc-python replaces one given
    # as metadata), so the call is made by hand over HTTP/2 with curl. It has no body:
    # the edge answers on the headers, and a body still being sent then is reset, which
    # curl reported as a stream error (exit 92) once in a CI run.
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (it makes the hand-made HTTP/2 gRPC call)")
    command = [curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "-X", "POST"]
    for header in ("content-type: application/grpc", "te: trailers", "grpc-timeout: zz"):
        command += ["-H", header]
    answered = subprocess.run(
        [*command, f"{edge(stack)}/gofund.goals.v1.GoalsService/ListGoals"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    lines = answered.stdout.decode().splitlines()
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    # A trailers-only gRPC answer (HTTP 200), not JSON: the edge's reason rides in grpc-message.
    assert lines[0].split()[1] == "200", lines
    assert (headers["content-type"], headers["grpc-status"]) == ("application/grpc", "3")
    assert "INVALID_GRPC_TIMEOUT" in headers["grpc-message"]


def test_the_access_log_records_the_code_the_client_got(stack: Stack) -> None:
    owner = new_user(stack)
    refused = api(stack, "POST", "/v1/goals", owner, content="{nope", headers={"content-type": "application/json"})
    from_service = api(stack, "GET", "/v1/goals/not-a-uuid")
    assert from_service.json()["code"] == 3

    def logged(request_id: str) -> dict[str, Any] | None:
        for line in (stack.logs_dir / "envoy.log").read_text().splitlines():
            if request_id in line and line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                return entry
        return None

    for request_id in (refused.headers["x-request-id"], from_service.headers["x-request-id"]):
        entry = eventually_sync(partial(logged, request_id), what="the access log line")
        # Envoy's guess from the HTTP status would be 13 for both.
        assert (entry["status"], entry["grpc_status"]) == (400, 3)


# -- path fields cannot be overridden --------------------------------------------------------
def test_a_body_field_naming_another_id_than_the_path_is_400(stack: Stack) -> None:
    owner = new_user(stack)
    mine = open_goal(stack, owner, target=1000)
    other = open_goal(stack, owner, target=1000)
    response = api(stack, "PATCH", f"/v1/goals/{mine['id']}", owner, json={"goal_id": other["id"], "title": "Moved"})
    assert edge_error(response, 400) == (3, "INVALID_BODY")
    assert ok(api(stack, "GET", f"/v1/goals/{other['id']}"))["goal"]["title"] == other["title"]
    same = api(stack, "PATCH", f"/v1/goals/{mine['id']}", owner, json={"goal_id": mine["id"], "title": "Same id"})
    assert ok(same)["goal"]["title"] == "Same id"


@pytest.mark.parametrize("name", ["goal_id", "goalId"])
def test_a_query_field_naming_another_id_than_the_path_is_400(stack: Stack, name: str) -> None:
    owner = new_user(stack)
    goal = open_goal(stack, owner, target=1000)
    response = api(stack, "GET", f"/v1/goals/{UNUSED_UUID}?{name}={goal['id']}")
    assert edge_error(response, 400) == (3, "INVALID_QUERY_PARAMETER")
    assert name in response.json()["message"]


# -- CORS ------------------------------------------------------------------------------------
def preflight(stack: Stack, origin: str, path: str = "/v1/goals") -> httpx.Response:
    return httpx.options(
        f"{edge(stack)}{path}",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, last-event-id, x-grpc-web",
        },
        timeout=10,
    )


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:5173", "http://localhost:4173"])
def test_the_web_dev_servers_are_allowed_origins_by_default(stack: Stack, origin: str) -> None:
    allowed = preflight(stack, origin)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == origin
    for header in ("authorization", "last-event-id", "x-grpc-web", "x-user-agent", "grpc-timeout"):
        assert header in allowed.headers["access-control-allow-headers"]
    read = httpx.get(f"{edge(stack)}/v1/goals?colour=red", headers={"origin": origin}, timeout=10)
    assert read.headers["access-control-allow-origin"] == origin  # errors are readable cross-origin too
    exposed = {h.strip() for h in read.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "grpc-status", "grpc-message", "retry-after"} <= exposed


def test_a_foreign_origin_gets_no_cors_headers(stack: Stack) -> None:
    refused = preflight(stack, "https://evil.example")
    assert not [h for h in refused.headers if h.startswith("access-control-")]
    read = httpx.get(f"{edge(stack)}/v1/goals", headers={"origin": "https://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in read.headers


# -- streams -----------------------------------------------------------------------------------
def first_bytes(stack: Stack, path: str, headers: dict[str, str], until: bytes) -> tuple[httpx.Response, bytes]:
    """Read a stream until `until` has arrived (the stream itself stays open)."""
    with httpx.stream("GET", f"{edge(stack)}{path}", headers=headers, timeout=20) as response:
        received = b""
        for chunk in response.iter_bytes():
            received += chunk
            if until in received:
                break
    return response, received


def test_a_stream_is_ndjson_by_default(stack: Stack) -> None:
    goal = open_goal(stack, new_user(stack), target=1000)
    response, received = first_bytes(stack, f"/v1/goals/{goal['id']}:watch", {}, b"\n")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    first = json.loads(received.split(b"\n")[0])
    assert (first["goal_id"], first["seq"]) == (goal["id"], "1")


@pytest.mark.parametrize("kind", ["goal", "balance"])
def test_a_stream_asked_for_as_event_stream_is_sse_with_the_seq_as_id(stack: Stack, kind: str) -> None:
    goal = open_goal(stack, new_user(stack), target=1000)
    path = f"/v1/goals/{goal['id']}:watch" if kind == "goal" else f"/v1/accounts/{goal['account_id']}/balance:watch"
    response, received = first_bytes(stack, path, {"accept": "text/event-stream"}, b"\n\n")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    event = received.split(b"\n\n")[0].decode()
    id_line, data_line = event.split("\n")
    data = json.loads(data_line.removeprefix("data: "))
    assert id_line == f"id: {data['seq']}"


def test_an_event_stream_resumes_after_its_last_event_id(stack: Stack) -> None:
    owner = new_user(stack)
    goal = open_goal(stack, owner, target=1000)
    path = f"/v1/goals/{goal['id']}:watch"
    _, first = first_bytes(stack, path, {"accept": "text/event-stream"}, b"\n\n")
    assert first.startswith(b"id: 1\n")
    # EventSource reconnects with the last id it saw: the stream resumes after it,
    # so the next event is a change, not the state the client already has.
    headers = {"accept": "text/event-stream", "last-event-id": "1"}
    with httpx.stream("GET", f"{edge(stack)}{path}", headers=headers, timeout=20) as resumed:
        assert resumed.status_code == 200
        ok(api(stack, "POST", f"/v1/goals/{goal['id']}:cancel", owner, json={"reason": "changed plans"}))
        received = b""
        for chunk in resumed.iter_bytes():
            received += chunk
            if b"id: " in received and received.endswith(b"\n\n"):
                break
    # Heartbeats (the service's, on a resumed or quiet stream) are SSE comments,
    # which EventSource ignores; the first event is the change.
    events = [e for e in received.decode().split("\n\n") if e]
    changes = [e for e in events if e != ": heartbeat"]
    # (The goal stream sends the latest state, so the cancellation may already
    # show as refunded: a later seq, never the 1 the client had.)
    id_line, data_line = changes[0].split("\n")
    seq = json.loads(data_line.removeprefix("data: "))["seq"]
    assert (id_line, int(seq) > 1) == (f"id: {seq}", True), events


# -- gRPC-Web and grpcurl --------------------------------------------------------------------
def grpc_web_frames(body: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while body:
        flags, length = body[0], struct.unpack(">I", body[1:5])[0]
        frames.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return frames


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_a_grpc_web_call_reaches_a_public_service(stack: Stack, text: bool) -> None:
    # A gRPC-Web request as a browser client frames it (no maintained Python client
    # exists): a length-prefixed message; the answer's last frame (flag 0x80) holds
    # the trailers.
    goal = open_goal(stack, new_user(stack), target=1000)
    message = goals_service_pb2.GetGoalRequest(goal_id=goal["id"]).SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(message)) + message
    kind = "application/grpc-web-text" if text else "application/grpc-web+proto"
    response = httpx.post(
        f"{edge(stack)}/gofund.goals.v1.GoalsService/GetGoal",
        content=base64.b64encode(frame) if text else frame,
        headers={"content-type": kind, "accept": kind, "x-grpc-web": "1", "origin": "http://localhost:5173"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(kind)
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
    # gRPC-Web text: base64 per chunk, each chunk padded on its own.
    pieces = re.findall(rb"[A-Za-z0-9+/]*={0,2}", response.content)
    body = b"".join(base64.b64decode(piece) for piece in pieces if piece) if text else response.content
    (data_flags, data), (trailer_flags, trailers) = grpc_web_frames(body)
    assert (data_flags, trailer_flags) == (0x00, 0x80)
    assert goals_service_pb2.GetGoalResponse.FromString(data).goal.id == goal["id"]
    assert b"grpc-status:0" in trailers


def test_grpc_web_cannot_reach_an_internal_service(stack: Stack) -> None:
    message = goals_service_pb2.ListGoalBooksRequest(page_size=1).SerializeToString()
    response = httpx.post(
        f"{edge(stack)}/gofund.goals.v1.GoalsInternalService/ListGoalBooks",
        content=b"\x00" + struct.pack(">I", len(message)) + message,
        headers={"content-type": "application/grpc-web+proto"},
        timeout=10,
    )
    assert response.headers["grpc-status"] == "12"  # UNIMPLEMENTED: no route


def test_grpcurl_list_through_the_edge_is_refused_at_once(stack: Stack) -> None:
    # grpcurl's own deadline is 10 s to connect and none for the call: a hang would
    # hit this subprocess timeout (an exception), a prompt refusal exits 1.
    listed = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", f"127.0.0.1:{stack.settings.envoy_port}", "list"],
        capture_output=True,
        text=True,
        timeout=8,
        check=False,
    )
    assert listed.returncode == 1
    assert "does not support the reflection API" in listed.stderr


# -- files on the API's origin ---------------------------------------------------------------------
def test_the_openapi_document_is_served_as_json(stack: Stack) -> None:
    if not (OPENAPI_DIR / "openapi.json").is_file():
        pytest.skip("openapi/openapi.json is not generated (make gen)")
    response = httpx.get(f"{edge(stack)}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["openapi"].startswith("3.1")
    reference = httpx.get(f"{edge(stack)}/reference", timeout=10)
    assert reference.status_code == 200
    assert reference.headers["content-type"] == "text/html; charset=utf-8"


@contextmanager
def side_edge(data_dir: Path, **config: Any) -> Iterator[str]:
    """Another Envoy from the same template (upstreams that no one listens on unless
    given), started and stopped here."""
    public, admin = embedded.free_port(), embedded.free_port()
    dead = ("127.0.0.1", embedded.free_port())
    config.setdefault("upstreams", {name: [dead] for name in SERVICES})
    path = write(EdgeConfig(public_port=public, admin_port=admin, **config), data_dir / "envoy.yaml")
    process = embedded.envoy(path, admin, data_dir / "envoy.log", base_id=admin)
    process.start()
    try:
        yield f"http://127.0.0.1:{public}"
    finally:
        process.stop()


def test_the_web_app_files_are_served_with_their_types_and_caching(tmp_path: Path) -> None:
    web = tmp_path / "dist"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text('<!doctype html><script type="module" src="/assets/index-Ab12.js"></script>')
    (web / "assets" / "index-Ab12.js").write_text("export {};")
    (web / "assets" / "index-Cd34.css").write_text("body { margin: 0 }")
    (web / "icon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    with side_edge(tmp_path, web_root=web, openapi_dir=None) as url:
        expected = {
            "/": ("text/html; charset=utf-8", "no-cache"),
            "/index.html": ("text/html; charset=utf-8", "no-cache"),
            "/assets/index-Ab12.js": ("text/javascript; charset=utf-8", "public, max-age=31536000, immutable"),
            "/assets/index-Cd34.css": ("text/css; charset=utf-8", "public, max-age=31536000, immutable"),
            "/icon.svg": ("image/svg+xml", "no-cache"),
        }
        for path, (kind, cache) in expected.items():
            response = httpx.get(f"{url}{path}", timeout=10)
            assert response.status_code == 200, path
            assert (response.headers["content-type"], response.headers["cache-control"]) == (kind, cache), path
            file = web / ("index.html" if path == "/" else path.lstrip("/"))
            assert response.content == file.read_bytes()
        assert edge_error(httpx.get(f"{url}/assets/missing.js", timeout=10), 404)[1] == "ROUTE_NOT_FOUND"


def test_without_a_web_build_the_root_is_503_web_app_not_built(tmp_path: Path) -> None:
    with side_edge(tmp_path, web_root=tmp_path / "not-built", openapi_dir=None) as url:
        assert edge_error(httpx.get(f"{url}/", timeout=10), 503) == (14, "WEB_APP_NOT_BUILT")


def test_no_healthy_upstream_is_503_json(tmp_path: Path) -> None:
    with side_edge(tmp_path, web_root=None, openapi_dir=None) as url:

        def unavailable() -> httpx.Response | None:
            response = httpx.get(f"{url}/v1/goals", timeout=10)
            return response if response.status_code == 503 else None

        response = eventually_sync(unavailable, what="Envoy to find no healthy upstream")
        assert edge_error(response, 503) == (14, "UPSTREAM_UNAVAILABLE")
        posted = httpx.post(f"{url}/v1/goals", json={"title": "x"}, timeout=10)
        assert edge_error(posted, 503) == (14, "UPSTREAM_UNAVAILABLE")


# A quiet stream beats (GOFUND_STREAM_HEARTBEAT_MS is short on the e2e stack), so
# Envoy's idle timeout never cuts it: in NDJSON a repeat of the latest state marked
# `heartbeat`, in SSE a comment EventSource ignores.
@pytest.mark.parametrize("kind", ["goal", "balance"])
def test_a_quiet_ndjson_stream_gets_heartbeats_repeating_its_latest_state(stack: Stack, kind: str) -> None:
    goal = open_goal(stack, new_user(stack), target=1000)
    path = f"/v1/goals/{goal['id']}:watch" if kind == "goal" else f"/v1/accounts/{goal['account_id']}/balance:watch"
    _, received = first_bytes(stack, path, {}, b'"heartbeat":true')
    first, beat = (json.loads(line) for line in received.split(b"\n")[:2])
    assert (first["heartbeat"], beat["heartbeat"]) == (False, True)
    assert beat == {**first, "heartbeat": True}  # the same state, the same seq: not a change


def test_a_quiet_event_stream_gets_heartbeats_as_comments(stack: Stack) -> None:
    goal = open_goal(stack, new_user(stack), target=1000)
    _, received = first_bytes(
        stack, f"/v1/goals/{goal['id']}:watch", {"accept": "text/event-stream"}, b": heartbeat\n\n"
    )
    events = received.decode().split("\n\n")
    assert events[0].startswith("id: 1\ndata: ")
    assert events[1] == ": heartbeat"
