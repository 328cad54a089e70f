"""Render envoy/envoy.yaml (a template) for one deployment.

The dev stack and the tests render it with loopback endpoints; docker-compose
renders it with service host names (STRICT_DNS). Placeholders are `${NAME}`
(string.Template); a missing one is an error, never an empty string.

Two groups of routes are generated here rather than written in the template:
the guards of the JSON API, from the `google.api.http` rules in the descriptor
set (so they follow the protos), and the web app's files, from the build
directory's listing (Envoy answers each file as a direct response held in
memory, with a route per file: only files that exist are reachable, and
nothing is read from disk per request).
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "envoy" / "envoy.yaml"
DESCRIPTOR = ROOT / "envoy" / "gofund.binpb"
WEB_DIST = ROOT / "web" / "dist"
OPENAPI_DIR = ROOT / "openapi"
SERVICES = ("identity", "goals", "ledger", "payments")
PUBLIC_SERVICES = tuple(f"gofund.{name}.v1.{name.capitalize()}Service" for name in SERVICES)
# The indentation of an entry of the virtual host's `routes:` list in the template.
ROUTE_INDENT = " " * 24
# Vite names what it builds under assets/ by content hash: a changed file is a new
# name, so those may be cached for good; everything else is revalidated.
HASHED_DIRECTORY = "assets"
LONG_CACHE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
# What browsers need labelled exactly (mimetypes' table differs between systems).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
}
NO_TRANSCODING = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}


@dataclass(frozen=True)
class EdgeConfig:
    public_port: int
    admin_port: int
    # service -> [(host, port), ...]; several entries are replicas.
    upstreams: Mapping[str, Sequence[tuple[str, int]]]
    listen_address: str = "127.0.0.1"
    descriptor_path: Path = DESCRIPTOR
    # STATIC for IP addresses, STRICT_DNS for host names (docker-compose).
    cluster_type: str = "STATIC"
    health_interval: str = "1s"
    # Login and registration requests per minute through this Envoy (a shared bucket).
    auth_rate_per_minute: int = 60
    # Paystack webhook deliveries per minute through this Envoy.
    webhook_rate_per_minute: int = 1200
    # The deadline of every unary route, passed to the service as grpc-timeout.
    unary_timeout_ms: int = 15_000
    # The origins CORS lets call the API from a browser.
    web_origins: Sequence[str] = ("http://localhost:5173", "http://127.0.0.1:5173")
    # A stream with nothing in either direction for this long is cut. The services
    # send heartbeats far more often (GOFUND_STREAM_HEARTBEAT_MS, 15 s by default).
    stream_idle_timeout_s: int = 300
    # The built web app (index.html and assets/); None or missing: `/` answers 503.
    web_root: Path | None = WEB_DIST
    # Where Envoy reads the files listed from web_root (another path when it runs
    # in a container that mounts the directory); None: web_root itself.
    served_web_root: Path | None = None
    # The OpenAPI document and its reference page; None or missing: not routed.
    openapi_dir: Path | None = OPENAPI_DIR
    served_openapi_dir: Path | None = None


# -- the JSON API's guards ------------------------------------------------------------------
@dataclass(frozen=True)
class HttpRule:
    method: str
    template: str

    @property
    def variables(self) -> list[str]:
        return [name.split("=")[0] for name in re.findall(r"\{([^}]+)\}", self.template)]

    @property
    def regex(self) -> str:
        """The paths the template matches: a variable is one segment (no `:`, which
        starts a custom verb such as `:watch`)."""
        parts = re.split(r"(\{[^}]+\})", self.template)
        return "^" + "".join("[^/:?]+" if part.startswith("{") else re.escape(part) for part in parts) + "$"

    @property
    def path_regex(self) -> str:
        """`regex` for the whole :path header, query string included."""
        return self.regex.removesuffix("$") + "([?].*)?$"

    @property
    def sample(self) -> str:
        return re.sub(r"\{[^}]+\}", "x", self.template)


def http_rules(descriptor_path: Path) -> list[HttpRule]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes()).file
    rules = []
    for file in files:
        for service in file.service:
            if f"{file.package}.{service.name}" not in PUBLIC_SERVICES:
                continue
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    rule = method.options.Extensions[annotations_pb2.http]
                    bindings = [rule, *rule.additional_bindings]
                    for binding in bindings:
                        kind = binding.WhichOneof("pattern")
                        if kind in ("get", "put", "post", "delete", "patch"):
                            rules.append(HttpRule(kind.upper(), getattr(binding, kind)))
    return rules


def _lower_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _path_match(rule: HttpRule, *headers: dict[str, Any]) -> dict[str, Any]:
    # The template's literal start as the prefix (so every route names a prefix or
    # a path), the whole template as a regex over :path (query string included).
    prefix = rule.template.split("{", 1)[0]
    path = {"name": ":path", "string_match": {"safe_regex": {"regex": rule.path_regex}}}
    return {"prefix": prefix, "headers": [path, *headers]}


def method_guards(rules: Sequence[HttpRule]) -> list[tuple[HttpRule, list[str]]]:
    """Each distinct path shape and the methods it takes; the edge answers 405 to any
    other on a path of that shape (services/stack/openapi.py documents where). Templates
    that can match the same path (a literal segment where another has a variable) pool
    their methods."""
    shapes = {rule.regex: rule for rule in rules}
    return [
        (
            rule,
            sorted(
                {
                    other.method
                    for other in rules
                    if re.fullmatch(regex, other.sample) or re.fullmatch(other.regex, rule.sample)
                }
            ),
        )
        for regex, rule in sorted(shapes.items())
    ]


def guard_routes(rules: Sequence[HttpRule]) -> Iterator[dict[str, Any]]:
    # One template per distinct path shape (`GET` and `PATCH /v1/goals/{goal_id}` are one).
    shapes = {rule.regex: rule for rule in rules}
    # A query parameter naming a path variable (in either JSON spelling): the
    # transcoder's body-collision check does not look at the query, where the
    # query's value would silently win over the path's.
    for _regex, rule in sorted(shapes.items()):
        for variable in sorted(set(rule.variables)):
            for spelling in sorted({variable, _lower_camel(variable)}):
                match = _path_match(rule)
                match["query_parameters"] = [{"name": spelling, "present_match": True}]
                yield {
                    "match": match,
                    "direct_response": {
                        "status": 400,
                        "body": {"inline_string": f"{spelling}: the path gives it; the query cannot name it again"},
                    },
                    "typed_per_filter_config": NO_TRANSCODING,
                }
    # A method the path does not have.
    for rule, methods in method_guards(rules):
        allowed = ", ".join(methods)
        method = {
            "name": ":method",
            "string_match": {"safe_regex": {"regex": f"^({'|'.join([*methods, 'OPTIONS'])})$"}},
            "invert_match": True,
        }
        yield {
            "match": _path_match(rule, method),
            "direct_response": {"status": 405, "body": {"inline_string": f"this path takes {allowed}"}},
            "response_headers_to_add": [{"header": {"key": "allow", "value": allowed}}],
            "typed_per_filter_config": NO_TRANSCODING,
        }


# -- the web app and the document -------------------------------------------------------------
def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _file_route(url_path: str, file: Path, cache_control: str) -> dict[str, Any]:
    return {
        "match": {
            "path": url_path,
            "headers": [{"name": ":method", "string_match": {"safe_regex": {"regex": "^(GET|HEAD)$"}}}],
        },
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": content_type(file)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
            {"header": {"key": "cache-control", "value": cache_control}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-content-type-options", "value": "nosniff"}},
        ],
        "typed_per_filter_config": NO_TRANSCODING,
    }


def static_routes(config: EdgeConfig) -> tuple[list[dict[str, Any]], int]:
    """The file routes, and the largest file's size (Envoy's direct-response limit must cover it)."""
    routes: list[dict[str, Any]] = []
    largest = 0
    web_root = config.web_root
    if web_root is not None and (web_root / "index.html").is_file():
        served = config.served_web_root or web_root
        for file in sorted(p for p in web_root.rglob("*") if p.is_file()):
            relative = file.relative_to(web_root)
            largest = max(largest, file.stat().st_size)
            cache = LONG_CACHE if relative.parts[0] == HASHED_DIRECTORY else NO_CACHE
            routes.append(_file_route("/" + relative.as_posix(), served / relative, cache))
            if relative == Path("index.html"):
                routes.append(_file_route("/", served / relative, NO_CACHE))
    else:
        routes.append(
            {
                "match": {"path": "/"},
                "direct_response": {
                    "status": 503,
                    "body": {
                        "inline_string": "the web app is not built: build web/ (npm ci, npm run build) and restart"
                    },
                },
                "typed_per_filter_config": NO_TRANSCODING,
            }
        )
    openapi_dir = config.openapi_dir
    if openapi_dir is not None:
        served = config.served_openapi_dir or openapi_dir
        for url_path, name in (("/openapi.json", "openapi.json"), ("/reference", "reference.html")):
            if (openapi_dir / name).is_file():
                largest = max(largest, (openapi_dir / name).stat().st_size)
                routes.append(_file_route(url_path, served / name, NO_CACHE))
    return routes, largest


# -- rendering ---------------------------------------------------------------------------------
def _endpoints(addresses: Sequence[tuple[str, int]]) -> str:
    # JSON is valid YAML flow style, so the list drops straight into the template.
    return json.dumps(
        [{"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}} for h, p in addresses]
    )


def _route_lines(routes: Sequence[Mapping[str, Any]]) -> str:
    # One JSON (YAML flow) route per line; Template does not re-read what it
    # substitutes, so a regex's `$` stays as it is.
    return "\n".join(f"{ROUTE_INDENT}- {json.dumps(route)}" for route in routes)


def render(config: EdgeConfig) -> str:
    files, largest = static_routes(config)
    values = {
        "ADMIN_PORT": str(config.admin_port),
        "PUBLIC_PORT": str(config.public_port),
        "LISTEN_ADDRESS": config.listen_address,
        "DESCRIPTOR_PATH": str(config.descriptor_path),
        "CLUSTER_TYPE": config.cluster_type,
        "HEALTH_INTERVAL": config.health_interval,
        "AUTH_RATE_PER_MINUTE": str(config.auth_rate_per_minute),
        "WEBHOOK_RATE_PER_MINUTE": str(config.webhook_rate_per_minute),
        "UNARY_TIMEOUT": f"{config.unary_timeout_ms / 1000:g}s",
        # gRPC's wire form: at most 8 digits and a unit (m = milliseconds).
        "UNARY_GRPC_TIMEOUT": f"{config.unary_timeout_ms}m",
        "WEB_ORIGINS": json.dumps([{"exact": origin} for origin in config.web_origins]),
        "STREAM_IDLE_TIMEOUT": f"{config.stream_idle_timeout_s}s",
        # Envoy's default is 4 KiB; room for the largest file, at least 1 MiB.
        "MAX_FILE_BYTES": str(max(largest, 1 << 20)),
        "STATIC_ROUTES": _route_lines(files),
        # The guards read the descriptor this renderer can see (in a container the
        # path Envoy reads is another, the content is the same).
        "GUARD_ROUTES": _route_lines(list(guard_routes(http_rules(DESCRIPTOR)))),
    }
    for service in SERVICES:
        values[f"{service.upper()}_ENDPOINTS"] = _endpoints(config.upstreams[service])
    return Template(TEMPLATE.read_text()).substitute(values)


def write(config: EdgeConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config))
    return path
