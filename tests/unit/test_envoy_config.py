import yaml

from services.stack.envoy_config import SERVICES, EdgeConfig, render


def config(**overrides: object) -> EdgeConfig:
    values: dict[str, object] = {
        "public_port": 18080,
        "admin_port": 19901,
        "upstreams": {name: [("127.0.0.1", 50051 + i)] for i, name in enumerate(SERVICES)},
    }
    values.update(overrides)
    return EdgeConfig(**values)  # type: ignore[arg-type]


def test_rendered_config_has_no_placeholder_left() -> None:
    assert "${" not in render(config())


def test_admin_listens_on_loopback_only() -> None:
    rendered = yaml.safe_load(render(config(listen_address="0.0.0.0")))
    assert rendered["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_replicas_become_endpoints_of_one_cluster() -> None:
    upstreams = {name: [("127.0.0.1", 50051)] for name in SERVICES}
    upstreams["ledger"] = [("127.0.0.1", 6001), ("127.0.0.1", 6002)]
    rendered = yaml.safe_load(render(config(upstreams=upstreams)))
    ledger = next(c for c in rendered["static_resources"]["clusters"] if c["name"] == "ledger")
    endpoints = ledger["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [6001, 6002]


def test_every_cluster_is_health_checked_without_panic_routing() -> None:
    rendered = yaml.safe_load(render(config()))
    clusters = rendered["static_resources"]["clusters"]
    assert sorted(c["name"] for c in clusters) == sorted(SERVICES)
    for cluster in clusters:
        assert cluster["health_checks"][0]["grpc_health_check"] == {}
        assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 0


def test_only_public_services_have_native_grpc_routes() -> None:
    rendered = yaml.safe_load(render(config()))
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    matched = [r["match"].get("prefix") or r["match"].get("path") for r in routes]
    assert matched
    assert all("Internal" not in m for m in matched)
