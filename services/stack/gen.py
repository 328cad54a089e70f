"""`make gen`: rebuild gen/ and Envoy's descriptor set from proto/.

Steps: copy the google/api and google/rpc protos we import (plus
error_details.proto, which Envoy needs to render error details as JSON) from the
googleapis-common-protos wheel into .build/proto-deps; lint our module; generate
Python with buf; build the descriptor set Envoy loads; write the OpenAPI
document and its reference page (openapi/) from a descriptor set with source
info, so the proto comments become its descriptions.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import google.api

from services.stack import openapi

ROOT = Path(__file__).resolve().parents[2]
DEPS_DIR = ROOT / ".build" / "proto-deps"
DESCRIPTOR = ROOT / "envoy" / "gofund.binpb"
OPENAPI_DIR = ROOT / "openapi"
THIRD_PARTY_PROTOS = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)


def buf_binary() -> str:
    return str(Path(sys.executable).parent / "buf")


def copy_third_party_protos() -> None:
    source_root = Path(next(iter(google.api.__path__))).parent.parent
    if DEPS_DIR.exists():
        shutil.rmtree(DEPS_DIR)
    for name in THIRD_PARTY_PROTOS:
        target = DEPS_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_root / name, target)


def run(*args: str) -> None:
    subprocess.run(args, cwd=ROOT, check=True)


def generate(output_root: Path = ROOT) -> None:
    """Write gen/ and envoy/gofund.binpb under `output_root` (the repo by default)."""
    copy_third_party_protos()
    buf = buf_binary()
    run(buf, "lint", "proto")
    run(buf, "generate", "--output", str(output_root))
    # Envoy gets every file (ours and the google ones, error_details included),
    # without source info: it only needs the types and the http rules.
    descriptor = output_root / DESCRIPTOR.relative_to(ROOT)
    descriptor.parent.mkdir(parents=True, exist_ok=True)
    run(buf, "build", "--exclude-source-info", "-o", str(descriptor))
    # The OpenAPI generator reads comments, so its descriptor set keeps source info.
    with_comments = output_root / ".build" / "openapi.binpb"
    with_comments.parent.mkdir(parents=True, exist_ok=True)
    run(buf, "build", "--as-file-descriptor-set", "-o", str(with_comments))
    openapi.write(with_comments, output_root / OPENAPI_DIR.relative_to(ROOT))


def main() -> None:
    generate()


if __name__ == "__main__":
    main()
