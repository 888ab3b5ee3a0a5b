"""`VaultClient`: the blocking client, for web request handlers and workers.

`vault_client.aio.VaultClient` is the same for asyncio; the two behave alike
call for call.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import grpc

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
    """One mutual-TLS channel to the vault, and the calls of its `Vault`
    service.

    The channel connects on the first call and reconnects by itself; creating
    a client does not contact the vault. Create one per process and share it
    between threads. A process that forks (a prefork task queue worker, say)
    must create its own after the fork: gRPC channels do not survive one.

    Every call gets a deadline (`deadline` seconds, 10 by default), sends
    `x-request-id` metadata when given a `request_id` (the vault records it in
    the call's audit event), and raises a `vault_client.VaultError` subclass
    named after what went wrong. Get, list, decrypt and erase are retried
    with backoff while the vault answers `UNAVAILABLE` (see `RetryPolicy`);
    store, update and delete are not, since repeating them is not safe.

    The client checks no input: the vault is the authority on what is valid,
    and says what is not with `InvalidArgument`.
    """

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
        channel = grpc.secure_channel(
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

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def store(
        self,
        user_id: str,
        odoo: OdooConnection,
        secret: str | bytes,
        *,
        request_id: str | None = None,
    ) -> Credential:
        """Encrypts `secret` and stores a new credential for `user_id`.
        Durable when this returns. Not retried: on `Unavailable` or
        `DeadlineExceeded` it may have been stored anyway."""
        request = _wire.store_request(user_id, odoo, secret)
        reply = self._once(self._stub.StoreCredential, request, request_id)
        return _wire.credential_of(reply)

    def update(
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
        reply = self._once(self._stub.UpdateCredential, request, request_id)
        return _wire.credential_of(reply)

    def get(self, user_id: str, credential_id: str, *, request_id: str | None = None) -> Credential:
        """Reads one credential, without its secret."""
        request = vault_pb2.GetCredentialRequest(user_id=user_id, credential_id=credential_id)
        reply = self._retried(self._stub.GetCredential, request, request_id)
        return _wire.credential_of(reply)

    def list_page(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str | None = None,
        request_id: str | None = None,
    ) -> CredentialPage:
        """Reads one page of a user's credentials: `page_size` of them at
        most (1 to 1000; 0 lets the vault choose, 100), from `page_token`,
        the previous page's `next_page_token`."""
        request = vault_pb2.ListCredentialsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token or ""
        )
        reply = self._retried(self._stub.ListCredentials, request, request_id)
        return _wire.page(reply)

    def list(self, user_id: str, *, request_id: str | None = None) -> _Credentials:
        """Reads every credential of a user, page after page."""
        credentials: _Credentials = []
        token = None
        while True:
            page = self.list_page(user_id, page_token=token, request_id=request_id)
            credentials.extend(page.credentials)
            token = page.next_page_token
            if token is None:
                return credentials

    def decrypt(
        self,
        user_id: str,
        credential_id: str,
        purpose: Purpose,
        *,
        request_id: str | None = None,
    ) -> Secret:
        """Decrypts one credential's secret for `purpose`. Use the result in
        a `with` block and pass only ids to other processes."""
        request = _wire.decrypt_request(user_id, credential_id, purpose)
        reply = self._retried(self._stub.DecryptCredential, request, request_id)
        secret = Secret(reply.secret)
        # Drop the reply's copy now rather than whenever the reply goes:
        # freed, not wiped (see vault_client.secret).
        reply.Clear()
        return secret

    def delete(self, user_id: str, credential_id: str, *, request_id: str | None = None) -> None:
        """Deletes one credential for good. Durable when this returns. Not
        retried: on `Unavailable` it may have been deleted anyway."""
        request = vault_pb2.DeleteCredentialRequest(user_id=user_id, credential_id=credential_id)
        self._once(self._stub.DeleteCredential, request, request_id)

    def erase(self, user_id: str, *, request_id: str | None = None) -> int:
        """Deletes every credential of a user; returns how many there were.
        Retried like a read, since erasing twice erases nothing more (a retry
        after a lost reply counts 0)."""
        request = vault_pb2.EraseUserRequest(user_id=user_id)
        reply = self._retried(self._stub.EraseUser, request, request_id)
        return reply.deleted

    def _once(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Reply],
        request: _Request,
        request_id: str | None,
    ) -> _Reply:
        try:
            return method(request, timeout=self._deadline, metadata=_wire.metadata(request_id))
        except grpc.RpcError as error:
            raise from_rpc_error(error, request_id) from error

    def _retried(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Reply],
        request: _Request,
        request_id: str | None,
    ) -> _Reply:
        """`_once`, again after each backoff while the vault is unavailable.
        Only for calls that are safe to repeat."""
        return _retrying(self._retry, lambda: self._once(method, request, request_id))


def _retrying(policy: RetryPolicy, attempt: Callable[[], _Reply]) -> _Reply:
    for backoff in policy.backoffs():
        try:
            return attempt()
        except Unavailable:
            time.sleep(backoff)
    return attempt()

