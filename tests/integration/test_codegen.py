"""Contracts lint clean, generated code is fresh, migrations match models, Envoy accepts its config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command

from services.common.db import alembic_config
from services.stack import gen
from services.stack.envoy_config import SERVICES, EdgeConfig, write
from tests.conftest import migrated_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_buf_lint_passes_on_our_module() -> None:
    gen.copy_third_party_protos()
    result = subprocess.run([str(BIN / "buf"), "lint", "proto"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


RELEASED = ROOT / "contracts" / "released.binpb"


def breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "buf"), "breaking", "proto", "--against", str(RELEASED)]
    return subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)


def test_contracts_do_not_break_the_released_contract() -> None:
    gen.copy_third_party_protos()
    result = breaking(ROOT)
    assert result.returncode == 0, "a change breaks released clients:\n" + result.stdout + result.stderr


def test_the_breaking_check_refuses_a_deleted_field(tmp_path: Path) -> None:
    # The check above can fail: the same command on a copy of the contracts without one field.
    gen.copy_third_party_protos()
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(gen.DEPS_DIR, tmp_path / gen.DEPS_DIR.relative_to(ROOT))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    ledger = tmp_path / "proto" / "gofund" / "ledger" / "v1" / "ledger.proto"
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(line for line in lines if "int64 amount = " not in line))
    result = breaking(tmp_path)
    assert result.returncode != 0
    assert 'name "amount"' in result.stdout


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_gen_and_descriptor_match_the_contracts(tmp_path: Path) -> None:
    gen.generate(tmp_path)
    fresh = tree(tmp_path / "gen")
    committed = {k: v for k, v in tree(ROOT / "gen").items() if "__pycache__" not in k}
    assert sorted(fresh) == sorted(committed), "run `make gen` and commit gen/"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], "run `make gen` and commit gen/"
    assert (tmp_path / "envoy" / "gofund.binpb").read_bytes() == (ROOT / "envoy" / "gofund.binpb").read_bytes()
    assert tree(tmp_path / "openapi") == tree(ROOT / "openapi"), "run `make gen` and commit openapi/"


def test_descriptor_includes_error_details_for_envoy() -> None:
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "envoy" / "gofund.binpb").read_bytes()).file
    names = {f.name for f in files}
    assert "google/rpc/error_details.proto" in names
    assert {f"gofund/{s}/v1/{s}_service.proto" for s in SERVICES} <= names


@pytest.mark.parametrize("service", ["identity", "goals", "ledger"])
def test_models_and_migrations_agree(service: str, postgres_port: int) -> None:
    url = migrated_database(postgres_port, service)
    command.check(alembic_config(service, url))  # raises if autogenerate would change anything


def test_envoy_validates_the_rendered_config(tmp_path: Path) -> None:
    config = EdgeConfig(
        public_port=18080,
        admin_port=19901,
        upstreams={name: [("127.0.0.1", 50051 + i), ("127.0.0.1", 51051 + i)] for i, name in enumerate(SERVICES)},
    )
    path = write(config, tmp_path / "envoy.yaml")
    result = subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "-c", str(path), "--base-id", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr
