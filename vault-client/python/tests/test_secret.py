"""`Secret` keeps a decrypted password out of logs, reprs and serialised
data, and gives it up only when asked by name."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from dataclasses import dataclass

import pytest

from harness import ODOO
from vault_client import Purpose, Secret, SecretClearedError, VaultClient

PASSWORD = "hunter2-odoo"


def test_repr_str_and_formatting_hide_the_value() -> None:
    secret = Secret(PASSWORD.encode())
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>20}",
        "%s %r" % (secret, secret),
        "{}".format(secret),
        repr([secret]),
        repr({"password": secret}),
    ]
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "********"
    for text in shown:
        assert PASSWORD not in text


def test_a_dataclass_holding_a_secret_does_not_show_it() -> None:
    @dataclass
    class Login:
        username: str
        password: Secret

    assert PASSWORD not in repr(Login("me", Secret(PASSWORD.encode())))


def test_logging_shows_the_mask(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(PASSWORD.encode())
    with caplog.at_level(logging.INFO):
        logging.getLogger("app").info("logging in with %s / %r", secret, secret)
        logging.getLogger("app").info({"password": secret})
    assert PASSWORD not in caplog.text
    assert "********" in caplog.text


def test_pickling_and_copying_raise_with_advice() -> None:
    secret = Secret(PASSWORD.encode())
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="pass the credential id"):
            pickle.dumps(secret, protocol=protocol)
    with pytest.raises(TypeError, match="pass the credential id"):
        pickle.dumps({"job": "sync", "password": secret})
    with pytest.raises(TypeError):
        copy.copy(secret)
    with pytest.raises(TypeError):
        copy.deepcopy(secret)
    with pytest.raises(TypeError):
        secret.__getstate__()


def test_json_refuses_it_and_a_str_fallback_gets_the_mask() -> None:
    secret = Secret(PASSWORD.encode())
    with pytest.raises(TypeError):
        json.dumps({"password": secret})
    # Encoders that fall back to str() (a common `default=str`) get the mask.
    assert json.dumps({"password": secret}, default=str) == '{"password": "********"}'


def test_it_has_no_attribute_dict_to_read_the_value_from() -> None:
    secret = Secret(PASSWORD.encode())
    with pytest.raises(TypeError):
        vars(secret)


def test_reveal_gives_the_value_and_clear_forgets_it() -> None:
    secret = Secret(PASSWORD.encode())
    assert secret.reveal() == PASSWORD
    assert secret.reveal_bytes() == PASSWORD.encode()
    assert not secret.cleared

    secret.clear()
    assert secret.cleared
    with pytest.raises(SecretClearedError, match="cleared"):
        secret.reveal()
    with pytest.raises(SecretClearedError):
        secret.reveal_bytes()
    secret.clear()  # twice is harmless


def test_the_with_block_clears_it_even_on_error() -> None:
    secret = Secret(PASSWORD.encode())
    with pytest.raises(RuntimeError):
        with secret as opened:
            assert opened.reveal() == PASSWORD
            raise RuntimeError("odoo login failed")
    assert secret.cleared


def test_bytes_that_are_not_text_are_refused_without_being_quoted() -> None:
    secret = Secret(b"\xffsecret-bytes")
    with pytest.raises(ValueError) as refused:
        secret.reveal()
    assert "secret-bytes" not in str(refused.value)
    assert "\\xff" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert secret.reveal_bytes() == b"\xffsecret-bytes"


def test_secrets_compare_by_identity_only() -> None:
    one, other = Secret(b"same"), Secret(b"same")
    assert one == one
    assert one != other


def test_a_decrypted_secret_from_the_vault_is_hidden(api: VaultClient, user: str) -> None:
    stored = api.store(user, ODOO, PASSWORD)
    secret = api.decrypt(user, stored.id, Purpose.CONNECTION_TEST)
    assert isinstance(secret, Secret)
    assert PASSWORD not in repr(secret) + str(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with secret:
        assert secret.reveal() == PASSWORD
    assert secret.cleared
