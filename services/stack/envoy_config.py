"""Render envoy/envoy.yaml (a template) for one deployment.

The dev stack and the tests render it with loopback endpoints; docker-compose
renders it with service host names (STRICT_DNS). Placeholders are `${NAME}`
(string.Template); a missing one is an error, never an empty string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "envoy" / "envoy.yaml"
DESCRIPTOR = ROOT / "envoy" / "gofund.binpb"
SERVICES = ("identity", "goals", "ledger", "payments")


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
    # The web app's origin, the one CORS lets call the API from a browser.
    web_origin: str = "http://localhost:3000"


def _endpoints(addresses: Sequence[tuple[str, int]]) -> str:
    # JSON is valid YAML flow style, so the list drops straight into the template.
    return json.dumps(
        [{"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}} for h, p in addresses]
    )


def render(config: EdgeConfig) -> str:
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
        "WEB_ORIGIN": config.web_origin,
    }
    for service in SERVICES:
        values[f"{service.upper()}_ENDPOINTS"] = _endpoints(config.upstreams[service])
    return Template(TEMPLATE.read_text()).substitute(values)


def write(config: EdgeConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config))
    return path
