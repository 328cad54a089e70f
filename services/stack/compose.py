"""Envoy's config for docker-compose, rendered from the one template (envoy/envoy.yaml).

docker-compose.yml mounts `deploy/envoy/envoy.yaml`: the template rendered for the
compose network. Each cluster is the compose service of the same name on its
default port, resolved by DNS (STRICT_DNS), so `docker compose up --scale ledger=3`
gives Envoy three ledger endpoints; the listener is on all interfaces; the
descriptor set is where the envoy container mounts it. The edge settings (rate
limits, timeouts) are EdgeConfig's defaults; the web origins are the development
ones (GOFUND_WEB_ORIGINS unset) unless given here.

The compose edge serves no files: the web app is built outside the image (npm)
and Envoy answers each file as a route of its own, listed at render time, so the
committed render (which must not depend on what is built here) leaves `/` at
503 WEB_APP_NOT_BUILT and routes no document. A deployment that serves them renders
its own copy with `--web-root`/`--openapi-dir` and mounts those directories into
the envoy container at the same paths.

A unit test fails when the committed file is not a fresh render, so after a
template change run `python -m services.stack.compose` and commit the result.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from services.common.config import Settings, development_web_origins
from services.stack.envoy_config import ROOT, SERVICES, EdgeConfig, render

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
# Where the envoy container mounts envoy/gofund.binpb (see docker-compose.yml).
CONTAINER_DESCRIPTOR = Path("/etc/envoy/gofund.binpb")


def default_port(field: str) -> int:
    """A port's default from the settings: what a container listens on unless told otherwise."""
    return int(Settings.model_fields[field].default)


def compose_edge_config(
    *, web_origins: Sequence[str] | None = None, web_root: Path | None = None, openapi_dir: Path | None = None
) -> EdgeConfig:
    return EdgeConfig(
        public_port=default_port("envoy_port"),
        admin_port=default_port("envoy_admin_port"),
        upstreams={name: [(name, default_port(f"{name}_port"))] for name in SERVICES},
        listen_address="0.0.0.0",  # noqa: S104 - inside the container; compose publishes the port
        descriptor_path=CONTAINER_DESCRIPTOR,
        cluster_type="STRICT_DNS",
        web_origins=tuple(web_origins) if web_origins else development_web_origins(default_port("envoy_port")),
        web_root=web_root,
        openapi_dir=openapi_dir,
    )


def render_compose_envoy(
    *, web_origins: Sequence[str] | None = None, web_root: Path | None = None, openapi_dir: Path | None = None
) -> str:
    return render(compose_edge_config(web_origins=web_origins, web_root=web_root, openapi_dir=openapi_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.stack.compose", description=__doc__)
    parser.add_argument("--output", type=Path, default=COMPOSE_ENVOY, help="where to write (default: %(default)s)")
    parser.add_argument(
        "--web-origins",
        help="the origins CORS admits, comma-separated (a deployment's own copy: with --output outside the repo "
        "and GOFUND_ENVOY_CONFIG pointing at it; the committed file keeps the defaults)",
    )
    parser.add_argument("--web-root", type=Path, help="the built web app (web/dist) to serve at /, for your own copy")
    parser.add_argument(
        "--openapi-dir", type=Path, help="the OpenAPI document's directory (openapi/), for your own copy"
    )
    args = parser.parse_args(argv)
    customised = args.web_origins is not None or args.web_root is not None or args.openapi_dir is not None
    if customised and args.output.resolve() == COMPOSE_ENVOY:
        parser.error("the committed deploy/envoy/envoy.yaml keeps the defaults; pass --output for your own copy")
    origins = [o.strip() for o in args.web_origins.split(",") if o.strip()] if args.web_origins else None
    root = args.web_root.resolve() if args.web_root else None
    openapi = args.openapi_dir.resolve() if args.openapi_dir else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_compose_envoy(web_origins=origins, web_root=root, openapi_dir=openapi))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
