"""Envoy's config for docker-compose, rendered from the one template (envoy/envoy.yaml).

docker-compose.yml mounts `deploy/envoy/envoy.yaml`: the template rendered for the
compose network. Each cluster is the compose service of the same name on its
default port, resolved by DNS (STRICT_DNS), so `docker compose up --scale ledger=3`
gives Envoy three ledger endpoints; the listener is on all interfaces; the
descriptor set is where the envoy container mounts it. The edge settings (rate
limits, timeouts, web origin) are EdgeConfig's defaults unless given here.

A unit test fails when the committed file is not a fresh render, so after a
template change run `python -m services.stack.compose` and commit the result.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from services.common.config import Settings
from services.stack.envoy_config import ROOT, SERVICES, EdgeConfig, render

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
# Where the envoy container mounts envoy/gofund.binpb (see docker-compose.yml).
CONTAINER_DESCRIPTOR = Path("/etc/envoy/gofund.binpb")


def default_port(field: str) -> int:
    """A port's default from the settings: what a container listens on unless told otherwise."""
    return int(Settings.model_fields[field].default)


def compose_edge_config(*, web_origin: str | None = None) -> EdgeConfig:
    config = EdgeConfig(
        public_port=default_port("envoy_port"),
        admin_port=default_port("envoy_admin_port"),
        upstreams={name: [(name, default_port(f"{name}_port"))] for name in SERVICES},
        listen_address="0.0.0.0",  # noqa: S104 - inside the container; compose publishes the port
        descriptor_path=CONTAINER_DESCRIPTOR,
        cluster_type="STRICT_DNS",
    )
    if web_origin is not None:
        config = dataclasses.replace(config, web_origin=web_origin)
    return config


def render_compose_envoy(*, web_origin: str | None = None) -> str:
    return render(compose_edge_config(web_origin=web_origin))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.stack.compose", description=__doc__)
    parser.add_argument("--output", type=Path, default=COMPOSE_ENVOY, help="where to write (default: %(default)s)")
    parser.add_argument(
        "--web-origin",
        help="the web app's origin CORS admits; for a deployment's own copy, with --output outside the repo "
        "and GOFUND_ENVOY_CONFIG pointing at it (the committed file keeps the default)",
    )
    args = parser.parse_args(argv)
    if args.web_origin is not None and args.output.resolve() == COMPOSE_ENVOY:
        parser.error("the committed deploy/envoy/envoy.yaml keeps the defaults; pass --output for your own copy")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_compose_envoy(web_origin=args.web_origin))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
