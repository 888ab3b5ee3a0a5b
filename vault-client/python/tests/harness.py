"""Machinery of the Python client's tests (fixtures are in `conftest.py`).

`DevVault` starts the real `vault-server --dev` binary on an ephemeral
loopback port in a temporary folder, the way the Rust end-to-end tests do,
and hands out clients with the certificates `--dev` generated for each role.
The binary is `$VAULT_SERVER_BIN`, or `target/debug/vault-server` of this
repository (honouring `CARGO_TARGET_DIR`): build it first with
`cargo build -p vault-server`, or `cargo test --workspace --no-run` as
`vault-client/python/check` does.

`FakeVault` is a gRPC server of our own, also on loopback and with the same
certificates, that answers whatever a test scripts (UNAVAILABLE, a slow
reply) and records every call it gets, for what the real vault cannot be
made to do on demand.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import pytest

import vault_client.aio
from vault_client import OdooConnection, Purpose, RetryPolicy, TlsFiles, VaultClient

REPO_ROOT = Path(__file__).resolve().parents[3]

# How long a server may take to print its address.
START_TIMEOUT = 30.0


def server_binary() -> Path:
    """The `vault-server` under test; fails the test with how to build it."""
    given = os.environ.get("VAULT_SERVER_BIN")
    if given:
        path = Path(given)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
        path = (REPO_ROOT / target / "debug" / "vault-server").resolve()
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: build it with `cargo build -p vault-server --locked` "
            "or set VAULT_SERVER_BIN",
            pytrace=False,
        )
    return path


class DevVault:
    """A running `vault-server --dev` whose data, keyring and certificates
    are in `root/vault-dev` and whose log is `root/server.log`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "vault-dev"
        self.log_path = root / "server.log"
        self._process, self.address = _spawn(self.data_dir, self.log_path)

    def tls(self, role: str) -> TlsFiles:
        """The client TLS files of a development role: api, sync or ops."""
        folder = self.data_dir / "tls"
        return TlsFiles(ca=folder / "ca.pem", cert=folder / f"{role}.pem", key=folder / f"{role}.key")

    def client(self, role: str = "api", **options: Any) -> VaultClient:
        return VaultClient(self.address, self.tls(role), **options)

    def aio_client(self, role: str = "api", **options: Any) -> vault_client.aio.VaultClient:
        return vault_client.aio.VaultClient(self.address, self.tls(role), **options)

    def channel(self, role: str) -> grpc.Channel:
        """A raw channel, for calls the client does not make (Admin)."""
        tls = self.tls(role)
        credentials = grpc.ssl_channel_credentials(
            Path(tls.ca).read_bytes(), Path(tls.key).read_bytes(), Path(tls.cert).read_bytes()
        )
        return grpc.secure_channel(self.address, credentials)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM, then wait for a clean exit."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            assert self._process.wait(timeout=30) == 0, self.log()

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)


def _spawn(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[str], str]:
    log = open(log_path, "a", encoding="utf-8")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("VAULT_")}
    process = subprocess.Popen(
        [str(server_binary()), "--dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=environment,
        text=True,
    )
    log.close()
    assert process.stdout is not None
    found: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_address, args=(process.stdout, found), daemon=True).start()
    try:
        return process, found.get(timeout=START_TIMEOUT)
    except queue.Empty:
        process.kill()
        process.wait()
        pytest.fail(
            f"vault-server did not start within {START_TIMEOUT}s:\n"
            + log_path.read_text(encoding="utf-8", errors="replace")
        )


def _read_address(stdout: IO[str], found: queue.Queue[str]) -> None:
    # Keep draining after the address so the server never blocks on a full pipe.
    prefix = "vault-server: listening on "
    with stdout:
        for line in stdout:
            if line.startswith(prefix):
                found.put(line[len(prefix) :].split()[0])


# -- the scripted fake ------------------------------------------------------

Answer = Callable[[grpc.ServicerContext], bytes]
"""What the fake does with one call: return a serialised reply or abort."""


@dataclass
class SeenCall:
    """One call the fake received."""

    method: str
    at: float
    time_remaining: float | None
    metadata: dict[str, str]


@dataclass
class FakeVault(grpc.GenericRpcHandler):
    """Answers every call of every method with `answers[i]` for the i-th call
    (the last one repeating), and records them in `calls`."""

    answers: list[Answer] = field(default_factory=list)
    calls: list[SeenCall] = field(default_factory=list)
    address: str = ""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            seen = SeenCall(
                method=method,
                at=time.monotonic(),
                time_remaining=context.time_remaining(),
                metadata={key: str(value) for key, value in context.invocation_metadata()},
            )
            self.calls.append(seen)
            answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
            return answer(context)

        # No (de)serialisers: the fake sees and sends raw protobuf bytes.
        return grpc.unary_unary_rpc_method_handler(handle)

    def methods(self) -> list[str]:
        return [call.method for call in self.calls]


def unavailable(context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.UNAVAILABLE, "fake: storage unavailable")


def status(code: grpc.StatusCode) -> Answer:
    def answer(context: grpc.ServicerContext) -> bytes:
        context.abort(code, f"fake: {code.name}")

    return answer


def reply(message: bytes) -> Answer:
    return lambda context: message


def slow(seconds: float) -> Answer:
    def answer(context: grpc.ServicerContext) -> bytes:
        time.sleep(seconds)
        return b""

    return answer


FAST_RETRY = RetryPolicy(attempts=3, first_backoff=0.01)
"""Retries without the default's waits, for tests that count attempts."""


# -- every call of the client, for tests that go through them all ------------

USER = "user-1"
CREDENTIAL_ID = "0" * 32
ODOO = OdooConnection(url="https://odoo.example.com", database="prod", username="sync@example.com")


@dataclass(frozen=True)
class ClientCall:
    """One call of the client, in its blocking and its asyncio flavour."""

    name: str
    rpc: str
    idempotent: bool
    blocking: Callable[[VaultClient], object]
    asyncio: Callable[[vault_client.aio.VaultClient], Awaitable[object]]


CALLS = [
    ClientCall(
        "store",
        "StoreCredential",
        False,
        lambda vault: vault.store(USER, ODOO, "password"),
        lambda vault: vault.store(USER, ODOO, "password"),
    ),
    ClientCall(
        "update",
        "UpdateCredential",
        False,
        lambda vault: vault.update(USER, CREDENTIAL_ID, secret="password"),
        lambda vault: vault.update(USER, CREDENTIAL_ID, secret="password"),
    ),
    ClientCall(
        "get",
        "GetCredential",
        True,
        lambda vault: vault.get(USER, CREDENTIAL_ID),
        lambda vault: vault.get(USER, CREDENTIAL_ID),
    ),
    ClientCall(
        "list_page",
        "ListCredentials",
        True,
        lambda vault: vault.list_page(USER),
        lambda vault: vault.list_page(USER),
    ),
    ClientCall(
        "list",
        "ListCredentials",
        True,
        lambda vault: vault.list(USER),
        lambda vault: vault.list(USER),
    ),
    ClientCall(
        "decrypt",
        "DecryptCredential",
        True,
        lambda vault: vault.decrypt(USER, CREDENTIAL_ID, Purpose.SYNC),
        lambda vault: vault.decrypt(USER, CREDENTIAL_ID, Purpose.SYNC),
    ),
    ClientCall(
        "delete",
        "DeleteCredential",
        False,
        lambda vault: vault.delete(USER, CREDENTIAL_ID),
        lambda vault: vault.delete(USER, CREDENTIAL_ID),
    ),
    ClientCall(
        "erase",
        "EraseUser",
        True,
        lambda vault: vault.erase(USER),
        lambda vault: vault.erase(USER),
    ),
]
