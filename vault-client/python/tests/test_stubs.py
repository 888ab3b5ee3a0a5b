"""The checked-in stubs are what `regenerate.py` makes from the current proto,
the package's version floors match what they need, and the installed package
carries its type information."""

from __future__ import annotations

import importlib.util
import re
import sys
from importlib import metadata, resources
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
CHECKED_IN = PACKAGE_ROOT / "src" / "vault_client" / "_proto"


def load_regenerate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate", PACKAGE_ROOT / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["regenerate"] = module
    spec.loader.exec_module(module)
    return module


def test_checked_in_stubs_are_current(tmp_path: Path) -> None:
    regenerate = load_regenerate()
    for fresh in regenerate.generate(tmp_path):
        checked_in = CHECKED_IN / fresh.name
        assert checked_in.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
            f"{checked_in} is stale: run `python vault-client/python/regenerate.py` "
            "with the test extras installed, and commit the result"
        )


def test_dependency_floors_are_what_the_stubs_check_at_import() -> None:
    pyproject = (PACKAGE_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    floors = dict(re.findall(r'^\s*"(grpcio|protobuf)>=([\d.]+)",$', pyproject, re.MULTILINE))
    grpc_stub = (CHECKED_IN / "vault_pb2_grpc.py").read_text(encoding="utf-8")
    messages = (CHECKED_IN / "vault_pb2.py").read_text(encoding="utf-8")

    generated_grpc = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_stub)
    generated_protobuf = re.search(r"# Protobuf Python Version: ([\d.]+)", messages)
    assert generated_grpc is not None and generated_protobuf is not None
    assert floors == {"grpcio": generated_grpc[1], "protobuf": generated_protobuf[1]}


def test_the_stubs_use_no_top_level_vault_package() -> None:
    for path in CHECKED_IN.glob("*.py*"):
        assert "from vault.v1" not in path.read_text(encoding="utf-8"), path


def test_the_installed_package_is_typed() -> None:
    package = resources.files("vault_client")
    assert package.joinpath("py.typed").is_file()
    assert package.joinpath("_proto", "vault_pb2.pyi").is_file()
    assert package.joinpath("_proto", "vault_pb2_grpc.pyi").is_file()
    assert metadata.version("odoo-vault-client")
