"""`VaultClient` for asyncio applications, on `grpc.aio`.

It takes the same arguments, makes the same calls with the same deadlines,
retries and exceptions as the blocking `vault_client.VaultClient`, as
coroutines. Create it inside the running event loop (in an application's
startup hook, say) and close it there: a `grpc.aio` channel belongs to the
loop it was first used in.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

import grpc
import grpc.aio

from . import _wire
from ._proto import vault_pb2, vault_pb2_grpc
from .errors import Unavailable, from_rpc_error
from .model import Credential, CredentialPage, OdooConnection, Purpose, RetryPolicy, TlsFiles
from .secret import Secret

_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")

# `list` is also a method name below; the alias keeps annotations readable.
_Credentials = list[Credential]


class VaultClient:
    """One mutual-TLS `grpc.aio` channel to the vault; see the blocking
    `vault_client.VaultClient` for how calls behave."""

    def __init__(
        self,
        address: str,
        tls: TlsFiles,
        *,
        deadline: float = _wire.DEFAULT_DEADLINE,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """Prepares a channel to the vault at `address` (`host:port`) as the
        caller whose certificate `tls` names. Reads the TLS files at once and
        raises `vault_client.TlsFileError` if one cannot be read, and
        `ValueError` for a deadline that is not a positive number."""
        deadline = _wire.checked_deadline(deadline)
        channel = grpc.aio.secure_channel(
            _wire.target(address),
            _wire.channel_credentials(tls),
            options=_wire.channel_options(tls),
        )
        self._channel = channel
        self._stub = vault_pb2_grpc.VaultStub(channel)
        self._deadline = deadline
        self._retry = retry

    def with_deadline(self, deadline: float) -> VaultClient:
        """A client sharing this one's channel whose calls get `deadline`
        seconds each. Closing either closes the channel of both."""
        clone = copy.copy(self)
        clone._deadline = _wire.checked_deadline(deadline)
        return clone

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def store(
        self,
        user_id: str,
        odoo: OdooConnection,
        secret: str | bytes,
        *,
        request_id: str | None = None,
    ) -> Credential:
        """Encrypts `secret` and stores a new credential for `user_id`.
        Not retried."""
        request = _wire.store_request(user_id, odoo, secret)
        reply = await self._once(self._stub.StoreCredential, request, request_id)
        return _wire.credential_of(reply)

    async def update(
        self,
        user_id: str,
        credential_id: str,
        *,
        odoo: OdooConnection | None = None,
        secret: str | bytes | None = None,
        request_id: str | None = None,
    ) -> Credential:
        """Replaces the connection fields, the secret, or both, of one
        credential; what is `None` stays. Not retried."""
        request = _wire.update_request(user_id, credential_id, odoo, secret)
        reply = await self._once(self._stub.UpdateCredential, request, request_id)
        return _wire.credential_of(reply)

    async def get(
        self, user_id: str, credential_id: str, *, request_id: str | None = None
    ) -> Credential:
        """Reads one credential, without its secret."""
        request = vault_pb2.GetCredentialRequest(user_id=user_id, credential_id=credential_id)
        reply = await self._retried(self._stub.GetCredential, request, request_id)
        return _wire.credential_of(reply)

    async def list_page(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str | None = None,
        request_id: str | None = None,
    ) -> CredentialPage:
        """Reads one page of a user's credentials (see the blocking client)."""
        request = vault_pb2.ListCredentialsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token or ""
        )
        reply = await self._retried(self._stub.ListCredentials, request, request_id)
        return _wire.page(reply)

    async def list(self, user_id: str, *, request_id: str | None = None) -> _Credentials:
        """Reads every credential of a user, page after page."""
        credentials: _Credentials = []
        token = None
        while True:
            page = await self.list_page(user_id, page_token=token, request_id=request_id)
            credentials.extend(page.credentials)
            token = page.next_page_token
            if token is None:
                return credentials

    async def decrypt(
        self,
        user_id: str,
        credential_id: str,
        purpose: Purpose,
        *,
        request_id: str | None = None,
    ) -> Secret:
        """Decrypts one credential's secret for `purpose`."""
        request = _wire.decrypt_request(user_id, credential_id, purpose)
        reply = await self._retried(self._stub.DecryptCredential, request, request_id)
        secret = Secret(reply.secret)
        reply.Clear()
        return secret

    async def delete(
        self, user_id: str, credential_id: str, *, request_id: str | None = None
    ) -> None:
        """Deletes one credential for good. Not retried."""
        request = vault_pb2.DeleteCredentialRequest(user_id=user_id, credential_id=credential_id)
        await self._once(self._stub.DeleteCredential, request, request_id)

    async def erase(self, user_id: str, *, request_id: str | None = None) -> int:
        """Deletes every credential of a user; returns how many there were."""
        request = vault_pb2.EraseUserRequest(user_id=user_id)
        reply = await self._retried(self._stub.EraseUser, request, request_id)
        return reply.deleted

    async def _once(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Reply],
        request: _Request,
        request_id: str | None,
    ) -> _Reply:
        try:
            return await method(
                request, timeout=self._deadline, metadata=_wire.metadata(request_id)
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, request_id) from error

    async def _retried(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Reply],
        request: _Request,
        request_id: str | None,
    ) -> _Reply:
        return await _retrying(self._retry, lambda: self._once(method, request, request_id))


async def _retrying(policy: RetryPolicy, attempt: Callable[[], Awaitable[_Reply]]) -> _Reply:
    for backoff in policy.backoffs():
        try:
            return await attempt()
        except Unavailable:
            await asyncio.sleep(backoff)
    return await attempt()
