#!/usr/bin/env python3
"""Regenerates the checked-in gRPC stubs of `vault_client._proto` from `proto/`.

Run it with the interpreter of an environment that has the test extras
(`pip install './vault-client/python[test]'`), after changing the proto:

    target/py-venv/bin/python vault-client/python/regenerate.py

grpcio-tools writes the messages (`vault_pb2.py`) and the service stubs
(`vault_pb2_grpc.py`); mypy-protobuf writes their type stubs (`.pyi`). Both
generators are pinned exactly in `pyproject.toml`, so the output is
reproducible, and `tests/test_stubs.py` fails when the checked-in files are
not what this script makes from the current proto.

protoc names the package of `vault/v1/vault.proto` `vault.v1` and imports it
absolutely; the files are flattened into `_proto/` and that one import made
relative, so the package never claims a top-level `vault` module.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO_FILE = "vault/v1/vault.proto"
PACKAGE_DIR = HERE / "src" / "vault_client" / "_proto"

# What protoc writes for `vault/v1/vault.proto`, and what it becomes here.
GENERATED = ("vault_pb2.py", "vault_pb2.pyi", "vault_pb2_grpc.py", "vault_pb2_grpc.pyi")
ABSOLUTE_IMPORT = "from vault.v1 import vault_pb2"
RELATIVE_IMPORT = "from . import vault_pb2"


def generate(out_dir: Path) -> list[Path]:
    """Writes the four generated files into `out_dir`; returns their paths."""
    with tempfile.TemporaryDirectory() as scratch:
        _run_protoc(Path(scratch))
        written = []
        for name in GENERATED:
            text = (Path(scratch) / "vault" / "v1" / name).read_text(encoding="utf-8")
            target = out_dir / name
            target.write_text(text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT), encoding="utf-8")
            written.append(target)
        return written


def _run_protoc(out_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        PROTO_FILE,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed:\n{result.stderr}")


def _plugin(name: str) -> str:
    """mypy-protobuf's protoc plugins sit next to this interpreter."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} not found: install the test extras "
            "(pip install './vault-client/python[test]') into this environment"
        )
    return found


def main() -> None:
    for path in generate(PACKAGE_DIR):
        print(f"wrote {path.relative_to(HERE)}")


if __name__ == "__main__":
    main()
