"""What the blocking and the asyncio clients share: TLS set-up, the protobuf
requests they send and the conversion of the replies."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ._proto import vault_pb2
from .errors import MalformedReply, TlsFileError
from .model import Credential, CredentialPage, OdooConnection, Purpose, TlsFiles

DEFAULT_DEADLINE = 10.0
"""Seconds a call (each attempt of it) may take unless the client says
otherwise; the Rust client's default too."""

REQUEST_ID_HEADER = "x-request-id"


def checked_deadline(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"a deadline must be a positive number of seconds, not {seconds!r}")
    return seconds

Metadata = tuple[tuple[str, str], ...]


def target(address: str) -> str:
    """`host:port` for grpc, from `host:port` or `https://host:port`."""
    _, _, rest = address.rpartition("://")
    return rest


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """Reads the TLS files now, so a wrong path fails here and not at the
    first call."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca),
        private_key=_read(tls.key),
        certificate_chain=_read(tls.cert),
    )


def channel_options(tls: TlsFiles) -> list[tuple[str, str]]:
    if tls.server_name is None:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise TlsFileError(f"cannot read {os.fspath(path)}: {error.strerror}") from error


def metadata(request_id: str | None) -> Metadata | None:
    if request_id is None:
        return None
    return ((REQUEST_ID_HEADER, request_id),)


def secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def fields(odoo: OdooConnection) -> vault_pb2.CredentialFields:
    connection = vault_pb2.OdooConnection(
        url=odoo.url, database=odoo.database, username=odoo.username
    )
    return vault_pb2.CredentialFields(odoo=connection)


def store_request(
    user_id: str, odoo: OdooConnection, secret: str | bytes
) -> vault_pb2.StoreCredentialRequest:
    return vault_pb2.StoreCredentialRequest(
        user_id=user_id, fields=fields(odoo), secret=secret_bytes(secret)
    )


def update_request(
    user_id: str,
    credential_id: str,
    odoo: OdooConnection | None,
    secret: str | bytes | None,
) -> vault_pb2.UpdateCredentialRequest:
    request = vault_pb2.UpdateCredentialRequest(user_id=user_id, credential_id=credential_id)
    if odoo is not None:
        request.fields.CopyFrom(fields(odoo))
    if secret is not None:
        request.secret = secret_bytes(secret)
    return request


def decrypt_request(
    user_id: str, credential_id: str, purpose: Purpose
) -> vault_pb2.DecryptCredentialRequest:
    if not isinstance(purpose, Purpose):
        # An int would pass protobuf, but say what is wrong before sending.
        raise TypeError(f"purpose must be a vault_client.Purpose, not {type(purpose).__name__}")
    return vault_pb2.DecryptCredentialRequest(
        user_id=user_id, credential_id=credential_id, purpose=purpose.value
    )


def credential(reply: vault_pb2.Credential) -> Credential:
    odoo = None
    if reply.fields.WhichOneof("kind") == "odoo":
        odoo = OdooConnection(
            url=reply.fields.odoo.url,
            database=reply.fields.odoo.database,
            username=reply.fields.odoo.username,
        )
    return Credential(
        id=reply.id,
        user_id=reply.user_id,
        odoo=odoo,
        created_at=_datetime(reply.created_at),
        updated_at=_datetime(reply.updated_at),
    )


def credential_of(
    reply: vault_pb2.StoreCredentialResponse
    | vault_pb2.UpdateCredentialResponse
    | vault_pb2.GetCredentialResponse,
) -> Credential:
    if not reply.HasField("credential"):
        raise MalformedReply("malformed reply from the vault: credential missing")
    return credential(reply.credential)


def page(reply: vault_pb2.ListCredentialsResponse) -> CredentialPage:
    return CredentialPage(
        credentials=[credential(item) for item in reply.credentials],
        next_page_token=reply.next_page_token or None,
    )


def _datetime(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=timezone.utc)
