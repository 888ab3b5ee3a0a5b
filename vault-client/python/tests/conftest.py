"""Fixtures of the Python client's tests; the machinery is in `harness.py`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from harness import DevVault, FakeVault, unavailable
from vault_client import VaultClient


@pytest.fixture(scope="session")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    """One server shared by the tests that do not stop it; each test uses its
    own user ids."""
    server = DevVault(tmp_path_factory.mktemp("vault"))
    yield server
    server.stop()


@pytest.fixture
def own_vault(tmp_path: Path) -> Iterator[DevVault]:
    """A server of the test's own, which it may stop."""
    server = DevVault(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def api(vault: DevVault) -> Iterator[VaultClient]:
    with vault.client("api") as client:
        yield client


@pytest.fixture
def sync(vault: DevVault) -> Iterator[VaultClient]:
    with vault.client("sync") as client:
        yield client


@pytest.fixture
def fake(vault: DevVault) -> Iterator[FakeVault]:
    """A fake vault with the dev server's certificate, requiring a client
    certificate of the dev CA, like the real one."""
    tls = vault.data_dir / "tls"
    credentials = grpc.ssl_server_credentials(
        [((tls / "server.key").read_bytes(), (tls / "server.pem").read_bytes())],
        root_certificates=(tls / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    handler = FakeVault(answers=[unavailable])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    handler.address = f"127.0.0.1:{port}"
    yield handler
    server.stop(grace=None)
