"""The OpenAPI 3.1 document of the public JSON API, generated from the protos.

`make gen` builds a descriptor set of proto/ with source info (so the proto
comments become descriptions) and calls `write`, which produces the committed
`openapi/openapi.json` and `openapi/reference.html`, a self-contained page
rendered from the same document.

Why a generator of our own: none that is maintained fits these machines. gnostic's
protoc-gen-openapi and grpc-gateway's protoc-gen-openapiv2 are Go programs and write
OpenAPI 3.0 and Swagger 2.0; buf's remote plugins need the network; the Python
packages on PyPI that mention either only ship option bindings. What the document
must say is narrow and ours anyway: the JSON Envoy's transcoder accepts and prints
with our print options. The rules, each as the transcoder behaves:

- Routes: one operation per `google.api.http` rule of the four public services,
  additional_bindings included. Path variables are path parameters (required) and
  never part of the body. `body: "*"` makes every other field the JSON body; a
  named body field makes that field the body (google.api.HttpBody: the raw bytes,
  as for Paystack's webhook) and the rest query parameters; without a body (GET,
  DELETE) every other field is a query parameter, nested messages as dotted names.
- JSON: snake_case names in responses (preserve_proto_field_names; requests also
  accept lowerCamelCase). int64/uint64 are strings with format int64/uint64 (a
  request may also send a number); enums are strings of their value names;
  Timestamp is an RFC 3339 string, Duration "<seconds>s", FieldMask one string of
  comma-separated paths; repeated fields are arrays, maps objects, other messages
  `$ref`s to a component named after the message.
- Required: in a request, the fields annotated `google.api.field_behavior =
  REQUIRED`. We annotate the protos, and do not derive the list from what the
  servicers validate, because the contract then says it to every client and tool
  that reads the protos (gRPC ones included), not only to readers of this document;
  the rule for annotating is "the service refuses the call without it", and path
  variables are required by their path. In a response, every field the
  transcoder always prints (always_print_primitive_fields): everything but
  message-typed fields and fields with presence (oneof members, proto3 optional).
- Objects are open (no `additionalProperties: false`): the transcoder ignores
  a request field it does not know (it neither refuses it nor passes it on),
  and request schemas say so; clients must tolerate response fields added later.
- UUIDs: a string field is `format: uuid` when its comment says "(UUID)", or when
  it is named after a resource whose own id says so (`goal_id`, `user_id`, ...).
  Payment references, transaction ids and event ids are not UUIDs and say so by
  omission. A field whose comment allows it to be empty is a string with a
  pattern for a UUID or "" (no `anyOf`, so generated types stay `string`).
- Who may call: the anonymous methods are read from the services' own lists
  (the code that enforces them), so the document cannot drift from the
  interceptor; every other route needs `Authorization: Bearer`.
- Errors: for each route, the gRPC codes and ErrorInfo reasons named in its
  comment (and its service's comment, and "as <Rpc>" references), mapped to HTTP
  statuses as Envoy maps them, with the body a google.rpc.Status; plus what the
  edge itself answers, where it can (400 INVALID_QUERY_PARAMETER,
  INVALID_GRPC_TIMEOUT and INVALID_REQUEST, INVALID_BODY with a JSON body, 404 ROUTE_NOT_FOUND with a
  path variable, 405 METHOD_NOT_ALLOWED where a variable's value can make the
  path another route's, 413 REQUEST_TOO_LARGE with a body, 429 RATE_LIMITED on
  the routes with an Envoy bucket, 503 UPSTREAM_UNAVAILABLE, 504
  UPSTREAM_TIMEOUT on unary routes).
- Server streams: 200 with `application/x-ndjson` (one message per line) and
  `text/event-stream` (one message per event, its `seq` as the event id), chosen
  by `Accept`, with heartbeats and resuming described as the edge does them.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from services.stack.envoy_config import HttpRule, method_guards

FieldDescriptor = descriptor_pb2.FieldDescriptorProto

PUBLIC_SERVICES = (
    "gofund.identity.v1.IdentityService",
    "gofund.goals.v1.GoalsService",
    "gofund.ledger.v1.LedgerService",
    "gofund.payments.v1.PaymentsService",
)

# Routes with an Envoy token bucket of their own (envoy/envoy.yaml; a unit test
# checks the two agree): the edge answers 429 RATE_LIMITED before any service.
EDGE_RATE_LIMITED = frozenset(
    {
        "gofund.identity.v1.IdentityService.CreateUser",
        "gofund.identity.v1.IdentityService.CreateSession",
        "gofund.payments.v1.PaymentsService.HandlePaystackWebhook",
    }
)

# gRPC code -> HTTP status, as Envoy's transcoder maps them (API.md).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# The edge's 400 reasons, as a 400 response's description explains them.
EDGE_400 = {
    "INVALID_BODY": "INVALID_BODY for a body it cannot read or one that names a path variable again",
    "INVALID_GRPC_TIMEOUT": (
        "INVALID_GRPC_TIMEOUT for a `grpc-timeout` header that is not gRPC's form "
        "(1 to 8 digits, then H, M, S, m, u or n)"
    ),
    "INVALID_GRPC_ENCODING": (
        "INVALID_GRPC_ENCODING for a `grpc-encoding` header other than identity, gzip or deflate"
    ),
    "INVALID_QUERY_PARAMETER": (
        "INVALID_QUERY_PARAMETER for a query parameter the route does not have, cannot read, or takes from the path"
    ),
    "INVALID_REQUEST": "INVALID_REQUEST for a request HTTP itself refuses",
}
STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_CODE_MENTION = re.compile(r"\b(" + "|".join(HTTP_STATUS) + r")\b(?:\s*\(([^()]*)\))?")
_REASON = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
_AS_OTHER_RPC = re.compile(r"\bas (?:for )?([A-Z][A-Za-z]+)\b")
_UUID_COMMENT = re.compile(r"\(UUID\)")
UNKNOWN_FIELDS = "Fields not listed here are ignored: the edge neither refuses them nor passes them on."
# A UUID in its hyphenated form (either case, as the services accept), or "".
UUID_OR_EMPTY = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"

# Fields that hold a user's id under another name (a UUID like every user id).
UUID_ALIASES = {"owner_id": "user", "voter_id": "user"}

INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64}
UINT64_TYPES = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
INT32_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
UINT32_TYPES = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# The well-known types print as JSON values of their own, not as objects.
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    ".google.protobuf.FieldMask": {
        "type": "string",
        "description": "Field paths separated by commas, in lowerCamelCase or snake_case.",
    },
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    ".google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    ".google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
    ".google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
}
HTTP_BODY = ".google.api.HttpBody"
ANY = ".google.protobuf.Any"
STATUS = ".google.rpc.Status"
ERROR_DETAILS = (".google.rpc.ErrorInfo", ".google.rpc.BadRequest")

STREAM_MEDIA_TYPES = ("application/x-ndjson", "text/event-stream")


def stream_description(response: Message, request: Message) -> str:
    """What a stream's 200 says: its framings, heartbeats and resuming, as the edge does them
    (envoy/envoy.yaml: the `ndjson` and `sse` scripts), for the fields the messages have."""
    fields = {f.name for f in response.proto.field}
    has_seq, has_heartbeat = "seq" in fields, "heartbeat" in fields
    resumable = has_seq and any(f.name == "after_seq" for f in request.proto.field)
    paragraphs = [
        "A server stream, framed as the request's `Accept` asks:",
        "- `application/x-ndjson` (the default): one JSON message per line.\n"
        "- `text/event-stream` (for EventSource): one server-sent event per message, "
        + ("`id: <seq>` and " if has_seq else "")
        + "`data: <the JSON message>`.",
    ]
    if has_heartbeat:
        paragraphs.append(
            "Heartbeats: after a quiet interval the stream sends one, so that "
            "nothing between client and edge cuts an idle connection. In NDJSON it is a message "
            'with `"heartbeat": true` that repeats the latest state (the same `seq`; not a change). '
            "In SSE it is a comment line, `: heartbeat`, which EventSource ignores."
        )
    if resumable:
        paragraphs.append(
            "Resuming: reconnect with the last `seq` seen as `after_seq`, or (SSE) as the "
            "`Last-Event-ID` header, which EventSource sends by itself when it reconnects."
        )
    paragraphs.append("The stream ends when the watched thing can change no more, or with an error.")
    return "\n\n".join(paragraphs)


def anonymous_methods() -> frozenset[str]:
    """Full names ("pkg.Service.Method") of the public methods callable without a token."""
    from services.goals.servicer import ANONYMOUS as GOALS
    from services.identity.servicer import ANONYMOUS as IDENTITY
    from services.payments.main import ANONYMOUS as PAYMENTS

    names = {f"gofund.identity.v1.{m.replace('/', '.')}" for m in IDENTITY}
    names |= {f"gofund.goals.v1.{m.replace('/', '.')}" for m in GOALS}
    names |= {f"gofund.payments.v1.{m.replace('/', '.')}" for m in PAYMENTS}
    return frozenset(names)


# Every LedgerService read is open (services/ledger/main.py): visibility is decided
# per account, a token only widening what the caller sees.
OPEN_SERVICES = frozenset({"gofund.ledger.v1.LedgerService"})


# --- comments ---------------------------------------------------------------------


def clean_comment(raw: str) -> str:
    """A proto comment as text: one leading space per line dropped, paragraphs kept."""
    lines = [line[1:] if line.startswith(" ") else line for line in raw.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def summary_of(description: str) -> str:
    """The first sentence of the first paragraph, on one line."""
    first = " ".join(description.split("\n\n", 1)[0].split())
    match = re.match(r"(.+?[.:;])(\s|$)", first)
    return (match.group(1) if match else first).rstrip(":;")


@dataclass
class Message:
    full_name: str  # ".pkg.Name"
    proto: descriptor_pb2.DescriptorProto
    comment: str
    field_comments: dict[str, str]


@dataclass
class Enum:
    full_name: str
    proto: descriptor_pb2.EnumDescriptorProto
    comment: str
    value_comments: dict[str, str]


@dataclass
class Method:
    service: str  # "pkg.Service"
    service_comment: str
    proto: descriptor_pb2.MethodDescriptorProto
    comment: str

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.proto.name}"


class Descriptors:
    """Messages, enums and services of a FileDescriptorSet, with their comments."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, Message] = {}
        self.enums: dict[str, Enum] = {}
        self.services: dict[str, list[Method]] = {}
        self.service_comments: dict[str, str] = {}
        for file in files:
            comments = {
                tuple(loc.path): clean_comment(loc.leading_comments)
                for loc in file.source_code_info.location
                if loc.leading_comments
            }
            prefix = f".{file.package}" if file.package else ""
            for index, message in enumerate(file.message_type):
                self._add_message(prefix, message, (4, index), comments)
            for index, enum in enumerate(file.enum_type):
                self._add_enum(prefix, enum, (5, index), comments)
            for s_index, service in enumerate(file.service):
                name = f"{file.package}.{service.name}"
                service_comment = comments.get((6, s_index), "")
                self.service_comments[name] = service_comment
                self.services[name] = [
                    Method(name, service_comment, method, comments.get((6, s_index, 2, m_index), ""))
                    for m_index, method in enumerate(service.method)
                ]

    def _add_message(
        self,
        prefix: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        comments: Mapping[tuple[int, ...], str],
    ) -> None:
        name = f"{prefix}.{message.name}"
        fields = {f.name: comments.get((*path, 2, i), "") for i, f in enumerate(message.field)}
        self.messages[name] = Message(name, message, comments.get(path, ""), fields)
        for index, nested in enumerate(message.nested_type):
            self._add_message(name, nested, (*path, 3, index), comments)
        for index, enum in enumerate(message.enum_type):
            self._add_enum(name, enum, (*path, 4, index), comments)

    def _add_enum(
        self,
        prefix: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
        comments: Mapping[tuple[int, ...], str],
    ) -> None:
        name = f"{prefix}.{enum.name}"
        values = {v.name: comments.get((*path, 2, i), "") for i, v in enumerate(enum.value)}
        self.enums[name] = Enum(name, enum, comments.get(path, ""), values)


def load(descriptor_set: Path) -> Descriptors:
    # The extension modules are imported above, so their options parse as extensions.
    assert annotations_pb2.http
    assert field_behavior_pb2.field_behavior
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    return Descriptors(files)


# --- schemas ----------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def component_name(full_name: str) -> str:
    """A message's or enum's name without its package ("Goal", "BadRequest.FieldViolation")."""
    parts = full_name.lstrip(".").split(".")
    index = next((i for i, part in enumerate(parts) if part[:1].isupper()), len(parts) - 1)
    return ".".join(parts[index:])


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _with_description(schema: dict[str, Any], description: str) -> dict[str, Any]:
    # Beside a $ref too: 3.1 allows it, and the field's comment says what this use means.
    return {**schema, "description": description} if description else schema


@dataclass
class SchemaBuilder:
    descriptors: Descriptors
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    uuid_entities: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        entities = set()
        for message in self.descriptors.messages.values():
            for f in message.proto.field:
                if f.name == "id" and _UUID_COMMENT.search(message.field_comments.get("id", "")):
                    entities.add(_snake(message.proto.name))
        self.uuid_entities = frozenset(entities)

    # Scalars

    def is_uuid(self, f: FieldDescriptor, comment: str) -> bool:
        if f.type != FieldDescriptor.TYPE_STRING:
            return False
        if _UUID_COMMENT.search(comment):
            return True
        if not f.name.endswith("_id"):
            return False
        entity = UUID_ALIASES.get(f.name, f.name.removesuffix("_id"))
        return entity in self.uuid_entities

    def scalar(  # noqa: PLR0911 (one return per proto3 JSON mapping reads best)
        self, f: FieldDescriptor, comment: str, *, request: bool
    ) -> dict[str, Any]:
        kind = f.type
        if kind == FieldDescriptor.TYPE_STRING:
            if self.is_uuid(f, comment):
                if re.search(r"\bempty\b", comment, re.IGNORECASE):
                    # One pattern rather than `anyOf: [{format: uuid}, {maxLength: 0}]`,
                    # which type generators widen to `string | unknown`; the field's
                    # comment (its description) says when it is empty.
                    return {"type": "string", "pattern": UUID_OR_EMPTY}
                return {"type": "string", "format": "uuid"}
            return {"type": "string"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind in INT64_TYPES or kind in UINT64_TYPES:
            unsigned = kind in UINT64_TYPES
            fmt = "uint64" if unsigned else "int64"
            if not request:
                return {"type": "string", "format": fmt, "pattern": "^[0-9]+$" if unsigned else "^-?[0-9]+$"}
            # Requests may send a number or a decimal string (proto3 JSON); the
            # pattern keeps strings within range (18 digits always fit).
            return {
                "type": ["string", "integer"],
                "format": fmt,
                "pattern": "^[0-9]{1,18}$" if unsigned else "^-?[0-9]{1,18}$",
                "minimum": 0 if unsigned else INT64_MIN,
                "maximum": UINT64_MAX if unsigned else INT64_MAX,
            }
        if kind in INT32_TYPES:
            return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
        if kind in UINT32_TYPES:
            return {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1}
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return {"type": "number", "format": "double"}
        if kind == FieldDescriptor.TYPE_FLOAT:
            return {"type": "number", "format": "float"}
        raise ValueError(f"no JSON mapping for field type {kind} of {f.name}")

    # Fields

    def value(self, f: FieldDescriptor, comment: str, *, request: bool) -> dict[str, Any]:
        """The schema of one value of a field (an element, if it is repeated)."""
        if f.type == FieldDescriptor.TYPE_ENUM:
            return self.enum_ref(f.type_name)
        if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            if f.type_name in WELL_KNOWN:
                return dict(WELL_KNOWN[f.type_name])
            if f.type_name == ANY:
                return self.any_ref()
            return self.message_ref(f.type_name, request=request)
        return self.scalar(f, comment, request=request)

    def field_schema(self, f: FieldDescriptor, comment: str, *, request: bool, describe: bool = True) -> dict[str, Any]:
        entry = self._map_entry(f)
        if entry is not None:
            value_field = next(x for x in entry.proto.field if x.name == "value")
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.value(value_field, "", request=request),
            }
        elif f.label == FieldDescriptor.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value(f, comment, request=request)}
        else:
            schema = self.value(f, comment, request=request)
        return _with_description(schema, comment) if describe else schema

    def _map_entry(self, f: FieldDescriptor) -> Message | None:
        if f.type != FieldDescriptor.TYPE_MESSAGE or f.label != FieldDescriptor.LABEL_REPEATED:
            return None
        message = self.descriptors.messages.get(f.type_name)
        return message if message is not None and message.proto.options.map_entry else None

    @staticmethod
    def has_presence(f: FieldDescriptor) -> bool:
        return f.HasField("oneof_index") or f.proto3_optional

    def always_printed(self, f: FieldDescriptor) -> bool:
        if self.has_presence(f):
            return False
        if f.label == FieldDescriptor.LABEL_REPEATED:
            return True  # arrays and maps are printed empty
        return f.type != FieldDescriptor.TYPE_MESSAGE

    @staticmethod
    def annotated_required(f: FieldDescriptor) -> bool:
        return field_behavior_pb2.REQUIRED in f.options.Extensions[field_behavior_pb2.field_behavior]

    # Messages

    def object_schema(
        self, message: Message, *, request: bool, exclude: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """`exclude` names fields to leave out, nested ones dotted ("book.id": the nested
        message is then inlined without that field, as a path variable fills it)."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in message.proto.field:
            if f.name in exclude:
                continue
            comment = message.field_comments.get(f.name, "")
            nested = frozenset(e.split(".", 1)[1] for e in exclude if e.startswith(f.name + "."))
            if nested:
                inner = self.object_schema(self.descriptors.messages[f.type_name], request=request, exclude=nested)
                properties[f.name] = _with_description(inner, comment)
            else:
                properties[f.name] = self.field_schema(f, comment, request=request)
            if self.annotated_required(f) if request else self.always_printed(f):
                required.append(f.name)
        schema: dict[str, Any] = {"type": "object"}
        # Not `additionalProperties: false` for requests: the transcoder drops a
        # field it does not know without a word (Envoy has no option to refuse
        # one), and the document says what the edge does, not what it might.
        description = "\n\n".join(filter(None, [message.comment, UNKNOWN_FIELDS if request else ""]))
        if description:
            schema["description"] = description
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def _register(self, name: str, build: Any) -> str:
        if name not in self.components:
            self.components[name] = {}  # reserved first: a message may refer to itself
            self.components[name] = build()
        return name

    def message_ref(self, full_name: str, *, request: bool) -> dict[str, Any]:
        """A component for a message: its response form by its name, its request form (required
        by field_behavior, unknown fields ignored) as "<name>Input", so neither depends on which came first."""
        message = self.descriptors.messages[full_name]
        name = component_name(full_name) + ("Input" if request else "")
        return _ref(self._register(name, lambda: self.object_schema(message, request=request)))

    def body_ref(self, message: Message, exclude: frozenset[str], suffix: str = "") -> dict[str, Any]:
        """A request body: the message less its path (and query) fields, named after the message."""
        name = component_name(message.full_name) + suffix
        schema = self.object_schema(message, request=True, exclude=exclude)
        existing = self.components.get(name)
        if existing is not None and existing != schema:
            raise ValueError(f"{name}: two bindings need different bodies; give the second a suffix")
        self.components[name] = schema
        return _ref(name)

    def enum_ref(self, full_name: str) -> dict[str, Any]:
        enum = self.descriptors.enums[full_name]
        name = component_name(full_name)
        if name not in self.components:
            lines = [enum.comment] if enum.comment else []
            for value in enum.proto.value:
                comment = " ".join(enum.value_comments.get(value.name, "").split())
                lines.append(f"- `{value.name}`" + (f": {comment}" if comment else ""))
            self.components[name] = {
                "type": "string",
                "description": "\n".join(lines),
                "enum": [v.name for v in enum.proto.value],
            }
        return _ref(name)

    def any_ref(self) -> dict[str, Any]:
        if "Any" not in self.components:
            self.components["Any"] = {
                "type": "object",
                "description": (
                    "A message of any type, named by `@type` (type.googleapis.com/<full name>), with that "
                    "message's fields beside it."
                ),
                "properties": {"@type": {"type": "string"}},
                "required": ["@type"],
                "additionalProperties": True,
            }
        return _ref("Any")

    def status_ref(self) -> dict[str, Any]:
        if "Status" not in self.components:
            details = []
            for name in ERROR_DETAILS:
                key = self._register(component_name(name), lambda n=name: self._detail_schema(n))
                details.append(_ref(key))
            status = self.object_schema(self.descriptors.messages[STATUS], request=False)
            status["description"] = (
                "Every error, from a service or from the edge: the gRPC `code`, a `message` for "
                "developers, and `details`, which always hold a google.rpc.ErrorInfo whose `reason` "
                "names the error (the reasons each route gives are listed with its responses), and "
                "for invalid fields a google.rpc.BadRequest naming each one."
            )
            status["properties"]["details"]["items"] = {"anyOf": [*details, self.any_ref()]}
            status["required"] = ["code", "message", "details"]
            self.components["Status"] = status
        return _ref("Status")

    def _detail_schema(self, full_name: str) -> dict[str, Any]:
        schema = self.object_schema(self.descriptors.messages[full_name], request=False)
        type_url = f"type.googleapis.com/{full_name.lstrip('.')}"
        schema["properties"] = {"@type": {"const": type_url}, **schema["properties"]}
        schema["required"] = ["@type", *schema.get("required", [])]
        return schema


# --- routes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: Method
    verb: str
    template: str
    body: str
    index: int  # 0 for the main rule, n for its n-th additional binding


def routes_of(method: Method) -> Iterator[Route]:
    rule = method.proto.options.Extensions[annotations_pb2.http]
    rules: list[http_pb2.HttpRule] = [rule, *rule.additional_bindings]
    for index, one in enumerate(rules):
        pattern = one.WhichOneof("pattern")
        if pattern is None:
            continue
        if pattern == "custom":
            verb, template = one.custom.kind.lower(), one.custom.path
        else:
            verb, template = pattern, getattr(one, pattern)
        yield Route(method, verb, template, one.body, index)


_VARIABLE = re.compile(r"\{([A-Za-z0-9_.]+)(?:=([^}]*))?\}")


def openapi_path(template: str) -> tuple[str, list[str]]:
    """The OpenAPI path of an http rule template and its variables (`{name=*}` -> `{name}`)."""
    names = [m.group(1) for m in _VARIABLE.finditer(template)]
    return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", template), names


def _codes_in(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for match in _CODE_MENTION.finditer(text):
        reasons = set(_REASON.findall(match.group(2) or "")) - set(HTTP_STATUS)
        found.setdefault(match.group(1), set()).update(reasons)
    return found


def errors_of(method: Method, siblings: Mapping[str, Method]) -> dict[str, set[str]]:
    """gRPC code -> ErrorInfo reasons, from the RPC's comment, the RPCs it refers to, and its service's."""
    found = _codes_in(method.comment)
    for name in _AS_OTHER_RPC.findall(method.comment):
        other = siblings.get(name)
        if other is not None and other is not method:
            for code, reasons in _codes_in(other.comment).items():
                found.setdefault(code, set()).update(reasons)
    for code, reasons in _codes_in(method.service_comment).items():
        found.setdefault(code, set()).update(reasons)
    return found


@dataclass
class Generator:
    descriptors: Descriptors
    anonymous: frozenset[str]
    services: tuple[str, ...] = PUBLIC_SERVICES
    schemas: SchemaBuilder = field(init=False)
    operation_ids: set[str] = field(default_factory=set)
    method_guards: list[tuple[HttpRule, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.schemas = SchemaBuilder(self.descriptors)

    def document(self) -> dict[str, Any]:
        # The edge's 405 guards, from the same rules as envoy_config renders them.
        rules = [
            HttpRule(route.verb.upper(), route.template)
            for service in self.services
            for method in self.descriptors.services[service]
            for route in routes_of(method)
            if route.verb in ("get", "put", "post", "delete", "patch")
        ]
        self.method_guards = method_guards(rules)
        paths: dict[str, dict[str, Any]] = {}
        tags = []
        for service in self.services:
            methods = self.descriptors.services[service]
            tag = service.rsplit(".", 1)[1]
            tags.append({"name": tag, "description": self.descriptors.service_comments[service]})
            siblings = {m.proto.name: m for m in methods}
            for method in methods:
                for route in routes_of(method):
                    path, operation = self.operation(route, tag, siblings)
                    if route.verb in paths.get(path, {}):
                        raise ValueError(f"two rules for {route.verb.upper()} {path}")
                    paths.setdefault(path, {})[route.verb] = operation
        paths["/openapi.json"] = {"get": self.document_operation()}
        tags.append({"name": "Edge", "description": "What the edge serves besides the API."})
        components = {
            "schemas": {name: self.schemas.components[name] for name in sorted(self.schemas.components)},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A session token from `POST /v1/sessions`, as `Authorization: Bearer <token>`.",
                }
            },
        }
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "GoFund API",
                "version": "v1",
                "summary": "Goal-based crowdfunding with escrow, as JSON through the GoFund edge.",
                "description": INFO_DESCRIPTION,
            },
            "servers": [{"url": "/", "description": "The edge that serves this document."}],
            "tags": tags,
            "paths": paths,
            "components": components,
        }

    def security(self, method: Method) -> list[dict[str, list[str]]]:
        if method.proto.input_type == ".gofund.payments.v1.HandlePaystackWebhookRequest":
            return []  # Paystack's signature is its credential
        if method.full_name in self.anonymous or method.service in OPEN_SERVICES:
            return [{}, {"bearerAuth": []}]
        return [{"bearerAuth": []}]

    def operation(self, route: Route, tag: str, siblings: Mapping[str, Method]) -> tuple[str, dict[str, Any]]:
        method = route.method
        request = self.descriptors.messages[method.proto.input_type]
        path, variables = openapi_path(route.template)
        operation_id = f"{tag}_{method.proto.name}" + (f"_{route.index}" if route.index else "")
        if operation_id in self.operation_ids:
            raise ValueError(f"duplicate operationId {operation_id}")
        self.operation_ids.add(operation_id)
        operation: dict[str, Any] = {
            "tags": [tag],
            "operationId": operation_id,
            "summary": summary_of(method.comment),
            "description": method.comment,
        }
        parameters = [self.path_parameter(request, name) for name in variables]
        path_fields = frozenset(variables)
        body_schema: dict[str, Any] | None = None
        body_required = False
        body_kind = "json" if route.body else ""
        if route.body == "*":
            body_schema = self.schemas.body_ref(request, path_fields, suffix=f".{route.index}" if route.index else "")
            body_required = any(
                self.schemas.annotated_required(f) for f in request.proto.field if f.name not in path_fields
            )
        else:
            if route.body:
                body_field = next(f for f in request.proto.field if f.name == route.body)
                if body_field.type_name == HTTP_BODY:
                    # Taken raw (google.api.HttpBody), not parsed; Paystack sends JSON.
                    body_kind = "raw"
                    body_schema = {
                        "type": "object",
                        "description": "The raw body, passed on byte for byte. "
                        + request.field_comments.get(route.body, ""),
                    }
                else:
                    body_schema = self.schemas.field_schema(
                        body_field, request.field_comments.get(route.body, ""), request=True
                    )
                body_required = True
            excluded = path_fields | ({route.body} if route.body else set())
            parameters += list(self.query_parameters(request, excluded, variables))
        if method.proto.input_type == ".gofund.payments.v1.HandlePaystackWebhookRequest":
            parameters.append(
                {
                    "name": "x-paystack-signature",
                    "in": "header",
                    "required": True,
                    "description": "hex(HMAC-SHA512(secret key, raw body)), as Paystack signs its webhooks.",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
                }
            )
        stream = method.proto.server_streaming
        resumable = stream and any(f.name == "after_seq" for f in request.proto.field)
        if resumable:
            parameters.append(
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": (
                        "Sent by EventSource when it reconnects: the `seq` of the last event it saw. "
                        "Means the same as `after_seq`."
                    ),
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                }
            )
        if parameters:
            operation["parameters"] = parameters
        if body_schema is not None:
            operation["requestBody"] = {
                "required": body_required,
                "content": {"application/json": {"schema": body_schema}},
            }
        operation["security"] = self.security(method)
        responses: dict[str, Any] = {"200": self.success(method, stream)}
        responses.update(self.error_responses(route, siblings, body=body_kind, stream=stream))
        operation["responses"] = responses
        if method.proto.options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS:
            operation["x-idempotency"] = "NO_SIDE_EFFECTS"
        elif method.proto.options.idempotency_level == descriptor_pb2.MethodOptions.IDEMPOTENT:
            operation["x-idempotency"] = "IDEMPOTENT"
        return path, operation

    def path_parameter(self, request: Message, name: str) -> dict[str, Any]:
        f, comment = self._field_at(request, name)
        if f.type == FieldDescriptor.TYPE_STRING:
            # A path segment is never empty (an empty one is another route), nor "" a UUID.
            uuid = self.schemas.is_uuid(f, comment)
            schema: dict[str, Any] = (
                {"type": "string", "format": "uuid"} if uuid else {"type": "string", "minLength": 1}
            )
        else:
            schema = self.schemas.field_schema(f, comment, request=True, describe=False)
        return {"name": name, "in": "path", "required": True, "description": comment, "schema": schema}

    def _field_at(self, message: Message, dotted: str) -> tuple[FieldDescriptor, str]:
        head, _, rest = dotted.partition(".")
        f = next(x for x in message.proto.field if x.name == head)
        if not rest:
            return f, message.field_comments.get(head, "")
        return self._field_at(self.descriptors.messages[f.type_name], rest)

    def query_parameters(
        self, message: Message, excluded: Iterable[str], variables: list[str]
    ) -> Iterator[dict[str, Any]]:
        excluded = set(excluded) | set(variables)
        yield from self._query(message, "", excluded, depth=0)

    def _query(self, message: Message, prefix: str, excluded: set[str], depth: int) -> Iterator[dict[str, Any]]:
        for f in message.proto.field:
            name = prefix + f.name
            if name in excluded:
                continue
            comment = message.field_comments.get(f.name, "")
            is_message = f.type == FieldDescriptor.TYPE_MESSAGE and f.type_name not in WELL_KNOWN
            if self.schemas._map_entry(f) is not None or (is_message and f.label == FieldDescriptor.LABEL_REPEATED):
                continue  # the transcoder cannot fill maps or repeated messages from a query
            if is_message:
                if depth < 3:
                    yield from self._query(self.descriptors.messages[f.type_name], name + ".", excluded, depth + 1)
                continue
            schema = self.schemas.field_schema(f, comment, request=True, describe=False)
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": self.schemas.annotated_required(f),
                "description": comment,
                "schema": schema,
            }
            if f.label == FieldDescriptor.LABEL_REPEATED:
                parameter.update({"style": "form", "explode": True})
            yield parameter

    def success(self, method: Method, stream: bool) -> dict[str, Any]:
        response_ref = self.schemas.message_ref(method.proto.output_type, request=False)
        if not stream:
            return {"description": "OK", "content": {"application/json": {"schema": response_ref}}}
        return {
            "description": stream_description(
                self.descriptors.messages[method.proto.output_type],
                self.descriptors.messages[method.proto.input_type],
            ),
            "content": {media: {"schema": response_ref} for media in STREAM_MEDIA_TYPES},
        }

    def error_responses(
        self, route: Route, siblings: Mapping[str, Method], *, body: str, stream: bool
    ) -> dict[str, Any]:
        """`body`: "json" (parsed by the transcoder), "raw" (google.api.HttpBody) or ""."""
        method = route.method
        codes = errors_of(method, siblings)
        by_status: dict[int, dict[str, set[str]]] = {}
        for code, reasons in codes.items():
            by_status.setdefault(HTTP_STATUS[code], {}).setdefault(code, set()).update(reasons)
        # What the edge answers itself (envoy/envoy.yaml's local_reply_config): the
        # reasons of domain edge.gofund, on the routes where Envoy can give them.
        edge: list[tuple[int, str, str]] = [
            # A query parameter the route does not have, a bad value, or one naming a
            # path variable again; a request HTTP itself refuses.
            (400, "INVALID_ARGUMENT", "INVALID_QUERY_PARAMETER"),
            (400, "INVALID_ARGUMENT", "INVALID_REQUEST"),
            # A grpc-timeout header (any client may send one) not in gRPC's form.
            (400, "INVALID_ARGUMENT", "INVALID_GRPC_TIMEOUT"),
            # A grpc-encoding header the services cannot decompress.
            (400, "INVALID_ARGUMENT", "INVALID_GRPC_ENCODING"),
            (401, "UNAUTHENTICATED", ""),  # a token sent to any route is checked
            (503, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE"),  # no healthy replica behind the edge
        ]
        if body == "json":
            # A body the transcoder cannot read, or one naming a path variable again.
            edge.append((400, "INVALID_ARGUMENT", "INVALID_BODY"))
        if route.template.count("{"):
            edge.append((404, "NOT_FOUND", "ROUTE_NOT_FOUND"))
        if self.reaches_a_method_guard(route):
            edge.append((405, "UNIMPLEMENTED", "METHOD_NOT_ALLOWED"))
        if body:
            edge.append((413, "INVALID_ARGUMENT", "REQUEST_TOO_LARGE"))
        if method.full_name in EDGE_RATE_LIMITED:
            edge.append((429, "RESOURCE_EXHAUSTED", "RATE_LIMITED"))
        if not stream:
            edge.append((504, "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT"))
        for status, code, reason in edge:
            reasons = by_status.setdefault(status, {}).setdefault(code, set())
            if reason:
                reasons.add(reason)
        responses = {}
        for status in sorted(by_status):
            responses[str(status)] = self.error_response(status, by_status[status])
        return responses

    def reaches_a_method_guard(self, route: Route) -> bool:
        """Whether a value of a path variable can make this route's path another shape's, one
        that does not take this method, which the edge answers 405 (`GET /v1/goals/{goal_id}`
        with goal_id `x:cancel` is `/v1/goals/{goal_id}:cancel`, POST only). The transcoder
        lets a variable take any characters but `/`."""
        if "{" not in route.template:
            return False
        parts = re.split(r"(\{[^}]+\})", route.template)
        loose = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        own = HttpRule(route.verb.upper(), route.template).regex
        return any(
            shape.regex != own and re.fullmatch(loose, shape.sample) and route.verb.upper() not in methods
            for shape, methods in self.method_guards
        )

    def error_response(self, status: int, codes: Mapping[str, set[str]]) -> dict[str, Any]:
        parts = []
        for code in sorted(codes):
            reasons = sorted(codes[code])
            parts.append(f"{code}" + (f" ({', '.join(reasons)})" if reasons else ""))
        notes = {
            401: "Any route answers 401 (INVALID_TOKEN) when a token is sent that does not work.",
            404: "The edge answers ROUTE_NOT_FOUND for a path no route matches.",
            405: (
                "The edge answers METHOD_NOT_ALLOWED (with `Allow`) when a path variable's value "
                "makes the path another route's, one that does not take this method."
            ),
            413: "The body is over the edge's 1 MiB limit.",
            429: "The edge's per-address bucket for this route answers RATE_LIMITED; retry after `Retry-After`.",
            503: "The edge answers UPSTREAM_UNAVAILABLE when no replica of the service is healthy.",
            504: "The edge answers UPSTREAM_TIMEOUT when the route's deadline passes.",
        }
        edge_400 = (
            [EDGE_400[r] for r in sorted(codes.get("INVALID_ARGUMENT", ())) if r in EDGE_400] if status == 400 else []
        )
        if edge_400:
            notes[400] = "The edge answers " + "; ".join(edge_400) + "."
        description = (
            f"{STATUS_TEXT[status]}: " + "; ".join(parts) + "." + (f" {notes[status]}" if status in notes else "")
        )
        return {
            "description": description,
            "content": {"application/json": {"schema": self.schemas.status_ref()}},
            "x-error-reasons": {code: sorted(codes[code]) for code in sorted(codes)},
        }

    def document_operation(self) -> dict[str, Any]:
        return {
            "tags": ["Edge"],
            "operationId": "Edge_GetOpenApiDocument",
            "summary": "This document.",
            "description": "The OpenAPI 3.1 document of every public route, generated from the protos by `make gen`.",
            "security": [],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object", "required": ["openapi"]}}},
                }
            },
        }


INFO_DESCRIPTION = """\
The public API of GoFund's four services (identity, goals, ledger, payments), as
JSON through the edge (Envoy), generated from the protos (`make gen`).

- Responses use the proto field names (snake_case), print fields that hold zero
  values, and print enums by name. Requests accept snake_case and lowerCamelCase.
- `int64` values (all amounts, in minor units) are JSON strings; requests may
  send them as numbers or strings.
- Authenticated routes take `Authorization: Bearer <token>` (a session token
  from `POST /v1/sessions`).
- Every error is a google.rpc.Status: `{"code", "message", "details"}`, where
  `details` holds a google.rpc.ErrorInfo whose `reason` names the error.
- Server streams (`:watch`) are newline-delimited JSON or server-sent events,
  chosen by `Accept`.
"""


def generate(descriptor_set: Path) -> dict[str, Any]:
    return Generator(load(descriptor_set), anonymous_methods()).document()


def dumps(document: Mapping[str, Any]) -> str:
    """Deterministic JSON: key order as built, two-space indent, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(descriptor_set: Path, out_dir: Path) -> None:
    document = generate(descriptor_set)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "openapi.json").write_text(dumps(document), encoding="utf-8")
    (out_dir / "reference.html").write_text(render_html(document), encoding="utf-8")


# --- the reference page -----------------------------------------------------------

CSS = """\
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;background:#fff}
header,main{max-width:980px;margin:0 auto;padding:0 1rem}
header{border-bottom:1px solid #d0d7de;padding-bottom:1rem}
h1{margin:1.2rem 0 .3rem}h2{margin-top:2.5rem;border-bottom:1px solid #d0d7de}
h3{font-size:1.05rem;margin:1.8rem 0 .4rem;font-family:ui-monospace,monospace;word-break:break-all}
h4{margin:.8rem 0 .2rem;font-size:.95rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;background:#f3f4f6;padding:0 .2em}
.op{border:1px solid #d0d7de;border-radius:6px;padding:.2rem 1rem 1rem;margin:1rem 0}
.verb{display:inline-block;min-width:4.2em;text-align:center;border-radius:4px;color:#fff;padding:0 .4em;
margin-right:.5em;font-size:.85rem}
.get{background:#1f6feb}.post{background:#1a7f37}.patch{background:#9a6700}.delete{background:#cf222e}
.put{background:#8250df}
table{border-collapse:collapse;width:100%;margin:.3rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{white-space:nowrap;font-family:ui-monospace,monospace}
.desc p{margin:.3rem 0}.muted{color:#57606a}
nav ul{columns:2;padding-left:1.2rem}@media (max-width:640px){nav ul{columns:1}}
a{color:#0969da}
"""


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _paragraphs(text: str) -> str:
    blocks = []
    for block in text.split("\n\n"):
        if block.startswith("- "):
            # A list: items start with "- ", continuation lines are indented.
            items = [" ".join(item.split()) for item in ("\n" + block).split("\n- ")[1:]]
            blocks.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
        elif block.strip():
            blocks.append(f"<p>{_inline(' '.join(block.split()))}</p>")
    return f'<div class="desc">{"".join(blocks)}</div>'


def _anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _type_of(schema: Mapping[str, Any]) -> str:
    """A short, linked description of a schema's type."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[1]
        return f'<a href="#{_anchor(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema and "type" not in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {_type_of(schema['additionalProperties'])}"
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "format" in schema:
        text += f" ({schema['format']})"
    elif schema.get("pattern") == UUID_OR_EMPTY:
        text += " (uuid or empty)"
    if "const" in schema:
        text = f"<code>{html.escape(str(schema['const']))}</code>"
    return html.escape(text) if "<" not in text else text


def _schema_table(schema: Mapping[str, Any]) -> str:
    properties = schema.get("properties")
    if not properties:
        return ""
    required = set(schema.get("required", []))
    rows = "".join(
        f'<tr><td class="n">{html.escape(name)}</td><td>{_type_of(prop)}</td>'
        f"<td>{'yes' if name in required else ''}</td><td>{_inline(prop.get('description', ''))}</td></tr>"
        for name, prop in properties.items()
    )
    return f"<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>{rows}</table>"


def _operation_html(path: str, verb: str, operation: Mapping[str, Any]) -> str:
    parts = [
        f'<section class="op" id="{html.escape(operation["operationId"])}">',
        f'<h3><span class="verb {verb}">{verb.upper()}</span>{html.escape(path)}</h3>',
        f"<p><strong>{_inline(operation['summary'])}</strong> "
        f'<span class="muted">({html.escape(operation["operationId"])})</span></p>',
        _paragraphs(operation.get("description", "")),
    ]
    security = operation.get("security", [])
    if not security:
        auth = "No token."
    elif {} in security:
        auth = "Token optional (<code>Authorization: Bearer</code>)."
    else:
        auth = "Needs <code>Authorization: Bearer &lt;token&gt;</code>."
    parts.append(f"<p><strong>Auth:</strong> {auth}</p>")
    parameters = operation.get("parameters", [])
    if parameters:
        rows = "".join(
            f'<tr><td class="n">{html.escape(p["name"])}</td><td>{p["in"]}</td><td>{_type_of(p["schema"])}</td>'
            f"<td>{'yes' if p.get('required') else ''}</td><td>{_inline(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append(
            "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>required</th>"
            f"<th>description</th></tr>{rows}</table>"
        )
    body = operation.get("requestBody")
    if body:
        for media, content in body["content"].items():
            schema = content["schema"]
            what = _type_of(schema) if "$ref" in schema else _inline(schema.get("description", "any"))
            parts.append(f"<h4>Request body</h4><p><code>{html.escape(media)}</code>: {what}</p>")
    responses = []
    for status, response in operation["responses"].items():
        media = ", ".join(f"<code>{html.escape(m)}</code>" for m in response.get("content", {}))
        schemas = {_type_of(c["schema"]) for c in response.get("content", {}).values()}
        responses.append(
            f'<tr><td class="n">{status}</td><td>{media}</td><td>{", ".join(sorted(schemas))}</td>'
            f"<td>{_inline(response['description'])}</td></tr>"
        )
    parts.append(
        "<h4>Responses</h4><table><tr><th>status</th><th>media type</th><th>body</th><th>description</th></tr>"
        + "".join(responses)
        + "</table></section>"
    )
    return "".join(parts)


def render_html(document: Mapping[str, Any]) -> str:
    """The reference page: every operation and schema, plain HTML and CSS, nothing loaded from elsewhere."""
    info = document["info"]
    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {t["name"]: [] for t in document["tags"]}
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            by_tag[operation["tags"][0]].append((path, verb, operation))
    toc = []
    sections = []
    for tag in document["tags"]:
        name = tag["name"]
        links = "".join(
            f'<li><a href="#{html.escape(op["operationId"])}"><code>{verb.upper()} {html.escape(path)}</code></a></li>'
            for path, verb, op in by_tag[name]
        )
        toc.append(f'<h4><a href="#tag-{name}">{html.escape(name)}</a></h4><ul>{links}</ul>')
        operations = "".join(_operation_html(path, verb, op) for path, verb, op in by_tag[name])
        sections.append(f'<h2 id="tag-{name}">{html.escape(name)}</h2>{_paragraphs(tag["description"])}{operations}')
    schemas = []
    for name, schema in document["components"]["schemas"].items():
        body = _schema_table(schema)
        if "enum" in schema:
            body = _paragraphs(schema.get("description", ""))
        else:
            body = _paragraphs(schema.get("description", "")) + body
        schemas.append(f'<section id="{_anchor(name)}"><h3>{html.escape(name)}</h3>{body}</section>')
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(info['title'])} reference</title><style>{CSS}</style></head><body>"
        f'<header><h1>{html.escape(info["title"])} <small class="muted">{html.escape(info["version"])}</small></h1>'
        f"{_paragraphs(info['description'])}"
        '<p>The document itself: <a href="openapi.json"><code>openapi.json</code></a> (OpenAPI 3.1).</p>'
        f"<nav>{''.join(toc)}</nav></header>"
        f'<main>{"".join(sections)}<h2 id="schemas">Schemas</h2>{"".join(schemas)}</main>'
        "</body></html>\n"
    )
