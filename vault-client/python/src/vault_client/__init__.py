"""A typed Python client of the credential vault.

The vault is a gRPC service that keeps users' Odoo connections, with their
passwords sealed under a key only the vault holds. This package is the thin
client its Python callers use: the web application (role `api`), which
stores connections and tests each one once, and the sync workers (role
`sync`), which decrypt a password for the length of one sync.

- `VaultClient` (blocking) and `vault_client.aio.VaultClient` (asyncio) make
  the calls of the `vault.v1.Vault` service over mutual TLS, with a deadline
  on every call and retries only where repeating a call is safe.
- `vault_client.errors` turns every failed call into a `VaultError` subclass
  named after its meaning (`NotFound`, `PermissionDenied`, ...).
- `Secret` holds a decrypted password without ever printing, pickling or
  serialising it.
- `vault_client._proto` holds the stubs generated from `proto/` and checked
  in; `regenerate.py` beside the package remakes them and a test checks that
  they are current.
"""

from .client import VaultClient
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MalformedReply,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TlsFileError,
    Unauthenticated,
    Unavailable,
    VaultError,
)
from .model import Credential, CredentialPage, OdooConnection, Purpose, RetryPolicy, TlsFiles
from .secret import Secret, SecretClearedError
from ._wire import DEFAULT_DEADLINE

__all__ = [
    "DEFAULT_DEADLINE",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "Credential",
    "CredentialPage",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "MalformedReply",
    "NotFound",
    "OdooConnection",
    "PermissionDenied",
    "Purpose",
    "ResourceExhausted",
    "RetryPolicy",
    "Secret",
    "SecretClearedError",
    "TlsFileError",
    "TlsFiles",
    "Unauthenticated",
    "Unavailable",
    "VaultClient",
    "VaultError",
]
