"""What a failed call raises: one exception class per meaning.

Every exception is a `VaultError`. When the vault answered with a gRPC
status, `code` holds it and `message` the server's text; the class says what
it means, so callers catch by meaning::

    try:
        credential = vault.get(user_id, credential_id)
    except NotFound:
        ...  # gone, or never this user's: the vault does not say which

The vault's messages never contain a secret; the `INVALID_ARGUMENT` ones start
with the field's name. `README.md` at the root of the repository lists when
the vault answers each status.
"""

from __future__ import annotations

import grpc


class VaultError(Exception):
    """A call to the vault failed.

    `code` is the gRPC status the vault (or the gRPC library, for a
    connection or a deadline) answered with, or `None` for a failure on this
    side, such as an unreadable TLS file. `request_id` is the `x-request-id`
    the call sent, if any, to find its audit event.
    """

    code: grpc.StatusCode | None
    message: str
    request_id: str | None

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{self.message} ({self.code.name})"


class InvalidArgument(VaultError):
    """A field is empty, too long or malformed; the message starts with its
    name. Nothing was stored."""


class NotFound(VaultError):
    """No such credential for that user: whether it never existed or belongs
    to someone else, the vault answers the same."""


class AlreadyExists(VaultError):
    """What the call would create exists already."""


class PermissionDenied(VaultError):
    """The caller's role does not allow this call, or this decrypt purpose."""


class Unauthenticated(VaultError):
    """The client certificate names no identity the vault knows."""


class FailedPrecondition(VaultError):
    """The call cannot run in the vault's current state."""


class Aborted(VaultError):
    """An update kept losing races with other updates of the same credential;
    it can be tried again."""


class ResourceExhausted(VaultError):
    """A limit was reached (a message too large, say)."""


class DeadlineExceeded(VaultError):
    """No answer within the call's deadline. Whether a store, update or
    delete took effect is unknown."""


class Cancelled(VaultError):
    """The call was cancelled before it finished."""


class DataLoss(VaultError):
    """The stored token of the credential failed its integrity check."""


class Unavailable(VaultError):
    """The vault could not be reached, or could not make a change durable.

    Idempotent calls were already retried with backoff before this was
    raised. For a store, update or delete the outcome is unknown: the change
    may still have landed, so look before doing it again.
    """


class Internal(VaultError):
    """The vault failed in a way it does not explain to callers (the details
    are in its log)."""


class MalformedReply(VaultError):
    """The vault's reply lacked a field it always sets."""


class TlsFileError(VaultError):
    """A certificate or key file could not be read."""


_BY_CODE: dict[grpc.StatusCode, type[VaultError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(error: grpc.RpcError, request_id: str | None) -> VaultError:
    """The exception that says what a failed gRPC call means.

    Both the blocking and the asyncio flavours of grpc raise errors that
    carry `code()` and `details()`; a status this module has no class for
    becomes a plain `VaultError` with its code.
    """
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    kind = _BY_CODE.get(code, VaultError)
    return kind(details or code.name.lower().replace("_", " "), code, request_id)
