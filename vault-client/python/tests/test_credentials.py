"""The blocking client against the real vault: every call, the roles, the
refusals, and what the vault makes of the request id."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest

from harness import ODOO, DevVault
from vault_client import (
    InvalidArgument,
    NotFound,
    OdooConnection,
    PermissionDenied,
    Purpose,
    TlsFileError,
    TlsFiles,
    VaultClient,
    VaultError,
)
from vault_client._proto import vault_pb2, vault_pb2_grpc


def test_store_get_list_decrypt_update_delete_erase_round_trip(
    api: VaultClient, sync: VaultClient, user: str
) -> None:
    stored = api.store(user, ODOO, "odoo-password")
    assert re.fullmatch(r"[0-9a-f]{32}", stored.id)
    assert (stored.user_id, stored.odoo) == (user, ODOO)
    assert stored.created_at.tzinfo == timezone.utc
    assert abs(stored.created_at - datetime.now(timezone.utc)).total_seconds() < 60

    assert api.get(user, stored.id) == stored
    assert api.list(user) == [stored]
    with sync.decrypt(user, stored.id, Purpose.SYNC) as secret:
        assert secret.reveal() == "odoo-password"

    moved = OdooConnection(url="https://erp.example.com", database="prod2", username="bot")
    updated = api.update(user, stored.id, odoo=moved, secret=b"new-password")
    assert (updated.id, updated.odoo, updated.created_at) == (stored.id, moved, stored.created_at)
    assert updated.updated_at >= stored.updated_at
    with api.decrypt(user, stored.id, Purpose.CONNECTION_TEST) as secret:
        assert secret.reveal_bytes() == b"new-password"

    only_secret = api.update(user, stored.id, secret="third")
    assert only_secret.odoo == moved

    api.delete(user, stored.id)
    with pytest.raises(NotFound):
        api.get(user, stored.id)
    second = api.store(user, ODOO, "x")
    third = api.store(user, ODOO, "y")
    assert api.erase(user) == 2
    assert api.list(user) == []
    assert {second.id, third.id}.isdisjoint(c.id for c in api.list(user))


def test_list_pages_in_id_order_and_list_follows_every_page(api: VaultClient, user: str) -> None:
    # 105 is past the vault's default page of 100.
    ids = sorted(api.store(user, ODOO, f"password-{n}").id for n in range(105))

    first = api.list_page(user, page_size=100)
    assert [c.id for c in first.credentials] == ids[:100]
    assert first.next_page_token is not None
    last = api.list_page(user, page_size=100, page_token=first.next_page_token)
    assert [c.id for c in last.credentials] == ids[100:]
    assert last.next_page_token is None

    assert [c.id for c in api.list(user)] == ids
    assert api.erase(user) == 105


def test_another_users_credential_reads_as_not_found(api: VaultClient, user: str) -> None:
    stored = api.store(user, ODOO, "mine")
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: api.get("someone-else", stored.id),
        "decrypt": lambda: api.decrypt("someone-else", stored.id, Purpose.CONNECTION_TEST),
        "update": lambda: api.update("someone-else", stored.id, secret="theirs"),
        "delete": lambda: api.delete("someone-else", stored.id),
    }
    for name, call in calls.items():
        with pytest.raises(NotFound) as refused:
            call()
        missing = "0123456789abcdef" * 2
        with pytest.raises(NotFound) as absent:
            api.get(user, missing)
        # The same answer as for an id that does not exist at all.
        assert refused.value.message == absent.value.message, name
    assert api.list("someone-else") == []
    with api.decrypt(user, stored.id, Purpose.CONNECTION_TEST) as secret:
        assert secret.reveal() == "mine"


def test_sync_role_decrypts_for_sync_and_api_role_is_refused(
    api: VaultClient, sync: VaultClient, user: str
) -> None:
    stored = api.store(user, ODOO, "pw")

    with sync.decrypt(user, stored.id, Purpose.SYNC) as secret:
        assert secret.reveal() == "pw"
    with pytest.raises(PermissionDenied) as refused:
        api.decrypt(user, stored.id, Purpose.SYNC)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "not allowed to decrypt for sync" in refused.value.message

    with pytest.raises(PermissionDenied):
        sync.decrypt(user, stored.id, Purpose.CONNECTION_TEST)
    with pytest.raises(PermissionDenied):
        sync.store(user, ODOO, "pw")
    with pytest.raises(PermissionDenied):
        sync.get(user, stored.id)
    assert [c.id for c in sync.list(user)] == [stored.id]


def test_operators_certificate_opens_no_secret(vault: DevVault, api: VaultClient, user: str) -> None:
    stored = api.store(user, ODOO, "pw")
    with vault.client("ops") as ops:
        for purpose in Purpose:
            with pytest.raises(PermissionDenied):
                ops.decrypt(user, stored.id, purpose)


@pytest.mark.parametrize(
    ("user_id", "odoo", "secret", "field"),
    [
        ("", ODOO, "pw", "user_id"),
        ("has space", ODOO, "pw", "user_id"),
        ("u", OdooConnection("ftp://odoo.example.com", "db", "me"), "pw", "fields.odoo.url"),
        ("u", OdooConnection("https://me:pw@odoo.example.com", "db", "me"), "pw", "fields.odoo.url"),
        ("u", OdooConnection("https://odoo.example.com", "", "me"), "pw", "fields.odoo.database"),
        ("u", OdooConnection("https://odoo.example.com", "db", " me"), "pw", "fields.odoo.username"),
        ("u", ODOO, "", "secret"),
        ("u", ODOO, "x" * 4097, "secret"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    api: VaultClient, user_id: str, odoo: OdooConnection, secret: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        api.store(user_id, odoo, secret)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message.startswith(field), refused.value.message
    assert str(refused.value).endswith("(INVALID_ARGUMENT)")


def test_bad_ids_and_page_sizes_are_invalid_argument(api: VaultClient, user: str) -> None:
    with pytest.raises(InvalidArgument):
        api.get(user, "not-an-id")
    with pytest.raises(InvalidArgument):
        api.list_page(user, page_size=1001)
    with pytest.raises(InvalidArgument):
        api.list_page(user, page_token="not a token")
    with pytest.raises(TypeError, match="Purpose"):
        api.decrypt(user, "0" * 32, 2)  # type: ignore[arg-type]


def test_errors_are_vault_errors_with_code_and_message(api: VaultClient, user: str) -> None:
    with pytest.raises(VaultError) as caught:
        api.get(user, "0" * 32, request_id="req-404")
    error = caught.value
    assert isinstance(error, NotFound)
    assert (error.code, error.message, error.request_id) == (
        grpc.StatusCode.NOT_FOUND,
        "credential not found",
        "req-404",
    )
    assert str(error) == "credential not found (NOT_FOUND)"


def test_request_id_reaches_the_audit_trail(vault: DevVault, api: VaultClient, user: str) -> None:
    stored = api.store(user, ODOO, "pw", request_id="web-req-7f3a")
    api.get(user, stored.id)  # without one, the vault makes one up

    with vault.channel("ops") as channel:
        audit = vault_pb2_grpc.AdminStub(channel)
        reply = audit.ListAuditEvents(
            vault_pb2.ListAuditEventsRequest(user_id=user, page_size=1000), timeout=10
        )
    by_operation = {event.operation: event for event in reply.events}
    assert by_operation["store"].request_id == "web-req-7f3a"
    assert by_operation["store"].credential_id == stored.id
    assert by_operation["get"].request_id not in ("", "web-req-7f3a")


def test_a_missing_tls_file_fails_at_construction(vault: DevVault, tmp_path: Path) -> None:
    tls = vault.tls("api")
    missing = TlsFiles(ca=tls.ca, cert=tls.cert, key=tmp_path / "nowhere.key")
    with pytest.raises(TlsFileError, match="nowhere.key") as caught:
        VaultClient(vault.address, missing)
    assert caught.value.code is None


def test_server_name_checks_the_vaults_certificate(vault: DevVault, user: str) -> None:
    port = vault.address.rsplit(":", 1)[1]
    tls = vault.tls("api")
    # The dev certificate names localhost: connecting by IP with that name
    # works, with any other name it fails the handshake.
    named = TlsFiles(ca=tls.ca, cert=tls.cert, key=tls.key, server_name="localhost")
    with VaultClient(f"127.0.0.1:{port}", named) as client:
        assert client.list(user) == []
    wrong = TlsFiles(ca=tls.ca, cert=tls.cert, key=tls.key, server_name="vault.example.com")
    with VaultClient(f"https://127.0.0.1:{port}", wrong, deadline=2) as client:
        with pytest.raises(VaultError) as refused:
            client.delete(user, "0" * 32)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
