"""The values callers pass to the vault and get back, as plain Python types.

None of them holds a secret: a password goes in as a `str` or `bytes`
argument and comes out only as a `vault_client.Secret`.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from datetime import datetime

from ._proto import vault_pb2


class Purpose(enum.Enum):
    """Why a caller wants a secret in the clear. Every decrypt names one, and
    the vault's policy says which roles may decrypt for which purpose."""

    CONNECTION_TEST = vault_pb2.PURPOSE_CONNECTION_TEST
    """Checking, once, that a newly entered connection works (role `api`)."""

    SYNC = vault_pb2.PURPOSE_SYNC
    """Using the connection for a synchronisation run (role `sync`)."""


@dataclass(frozen=True)
class OdooConnection:
    """Where and as whom to connect to an Odoo instance; the password is the
    credential's secret, never a field here."""

    url: str
    database: str
    username: str


@dataclass(frozen=True)
class Credential:
    """A stored credential as callers see it, without its secret."""

    id: str
    """Made by the vault: 32 lowercase hexadecimal characters."""
    user_id: str
    """The user that owns it."""
    odoo: OdooConnection | None
    """The connection; `None` for a kind of credential this client predates."""
    created_at: datetime
    """When it was stored (UTC)."""
    updated_at: datetime
    """When its fields or its secret last changed (UTC)."""


@dataclass(frozen=True)
class CredentialPage:
    """One page of a user's credentials, in credential id order."""

    credentials: list[Credential]
    next_page_token: str | None
    """Pass as `page_token` for the next page; `None` on the last one."""


@dataclass(frozen=True)
class TlsFiles:
    """The mutual-TLS files of one caller role, all PEM.

    `ca` holds the CA certificate(s) the vault's certificate must chain to;
    `cert` and `key` are this caller's certificate and private key, whose
    identity the vault's policy maps to a role. `server_name` is the name the
    vault's certificate must carry when it differs from the host in the
    address (say, connecting to an IP address that the certificate names by
    DNS name).
    """

    ca: str | os.PathLike[str]
    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    server_name: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls (get, list, decrypt, erase) are retried when the
    vault answers `UNAVAILABLE`: up to `attempts` tries in all, waiting
    `first_backoff` seconds before the second and twice as long before each
    further one. Store, update and delete are never retried.

    The deadline applies to each attempt, so the worst case for an
    idempotent call is `attempts` deadlines plus the waits in between.
    """

    attempts: int = 4
    first_backoff: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.first_backoff < 0:
            raise ValueError("RetryPolicy.first_backoff must not be negative")

    def backoffs(self) -> list[float]:
        """The waits between attempts, in order (one fewer than attempts)."""
        return [self.first_backoff * 2**retry for retry in range(self.attempts - 1)]
