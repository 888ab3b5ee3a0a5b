"""`Secret`: a decrypted password that does not show itself by accident.

What it guards against is the ordinary leak: a password printed in a log
line, an exception report, a debugger's repr, or sent through a task queue
or a cache because an object holding it was serialised. It cannot guard
against code that calls `reveal()` and then leaks the result.

What it cannot do in Python: wipe memory. `reveal()` returns an immutable
`str` (or `bytes`) that lives until the garbage collector frees it, and the
gRPC reply the secret came from held copies of its own. `clear()` and the
`with` block overwrite this object's own buffer and drop the reference, which
shortens how long the value is reachable; they do not erase the copies.
Keep the revealed value in a local variable of the one call that needs it.
"""

from __future__ import annotations

from types import TracebackType
from typing import NoReturn

_MASK = "********"

_NO_SERIALISING = (
    "a Secret cannot be pickled, copied or serialised: pass the credential id "
    "to the job or process that needs the password and decrypt it there"
)


class SecretClearedError(ValueError):
    """The secret was read after `clear()` or after its `with` block."""


class Secret:
    """A decrypted secret. `repr`, `str` and formatting print `********`.

    Read it with `reveal()` (text) or `reveal_bytes()`, ideally inside a
    `with` block, which clears it on the way out::

        with vault.decrypt(user_id, credential_id, Purpose.SYNC) as password:
            odoo.login(database, username, password.reveal())

    Pickling, copying and `json.dumps` raise, so it cannot slip into a task
    queue, a session or a cache. Two secrets compare equal only if they are
    the same object.
    """

    __slots__ = ("_value",)

    _value: bytearray | None

    def __init__(self, value: bytes) -> None:
        self._value = bytearray(value)

    def reveal(self) -> str:
        """The secret as text (UTF-8), for the one call that needs it."""
        try:
            return self._open().decode("utf-8")
        except UnicodeDecodeError:
            # The default message would quote the offending byte.
            raise ValueError("the secret is not UTF-8 text; use reveal_bytes()") from None

    def reveal_bytes(self) -> bytes:
        """The secret as the bytes the vault holds."""
        return bytes(self._open())

    def clear(self) -> None:
        """Overwrites this object's copy and forgets it; see the module docs
        for what that does not erase. Clearing twice is harmless."""
        if self._value is not None:
            self._value[:] = bytes(len(self._value))
            self._value = None

    @property
    def cleared(self) -> bool:
        """Whether `clear()` ran (or the `with` block ended)."""
        return self._value is None

    def __del__(self) -> None:
        # Wipe this object's buffer before the allocator takes it back.
        if getattr(self, "_value", None) is not None:
            self.clear()

    def _open(self) -> bytearray:
        if self._value is None:
            raise SecretClearedError("this secret was cleared; decrypt it again")
        return self._value

    def __enter__(self) -> Secret:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.clear()

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __reduce__(self) -> NoReturn:
        raise TypeError(_NO_SERIALISING)

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(_NO_SERIALISING)

    def __getstate__(self) -> NoReturn:
        raise TypeError(_NO_SERIALISING)

    def __copy__(self) -> NoReturn:
        raise TypeError(_NO_SERIALISING)

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError(_NO_SERIALISING)
