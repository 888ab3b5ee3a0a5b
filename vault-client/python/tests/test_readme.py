"""The Python examples of the top-level README run as written, against a
`--dev` vault laid out where they expect it (`./vault-dev`, `VAULT_ADDR`),
with the caller's own code (`odoo_login`, `run_sync`) stood in for."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness import REPO_ROOT, DevVault
from vault_client import OdooConnection

SECTION = "## Python client"


def python_examples() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end != -1 else None]
    return re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def run_example(number: int, code: str, stand_ins: dict[str, Any]) -> dict[str, Any]:
    """Runs one example in a namespace of its own, so each must stand alone."""
    namespace: dict[str, Any] = {"__name__": f"readme_example_{number}", **stand_ins}
    exec(compile(code, f"README.md, Python example {number}", "exec"), namespace)
    return namespace


def test_the_readme_has_the_web_and_the_job_example() -> None:
    examples = python_examples()
    assert len(examples) == 2
    assert "def save_connection" in examples[0]
    assert "def sync_user" in examples[1]


def test_readme_examples_run_as_written(
    own_vault: DevVault, monkeypatch: pytest.MonkeyPatch, user: str
) -> None:
    # The server's files are in ./vault-dev, where the examples look.
    monkeypatch.chdir(own_vault.root)
    monkeypatch.setenv("VAULT_ADDR", own_vault.address)
    logins: list[tuple[OdooConnection, str]] = []
    syncs: list[tuple[OdooConnection | None, str]] = []

    def odoo_login(odoo: OdooConnection, password: str) -> None:
        logins.append((odoo, password))

    def run_sync(odoo: OdooConnection | None, password: str) -> None:
        syncs.append((odoo, password))

    web_example, job_example = python_examples()
    web = run_example(1, web_example, {"odoo_login": odoo_login})
    job = run_example(2, job_example, {"run_sync": run_sync})
    try:
        odoo = OdooConnection("https://odoo.example.com", "prod", "sync@example.com")
        credential_id = web["save_connection"](user, odoo, "odoo-password", "req-1")
        assert logins == [(odoo, "odoo-password")]
        assert web["vault"].get(user, credential_id).odoo == odoo

        job["sync_user"](user)
        assert syncs == [(odoo, "odoo-password")]
    finally:
        web["vault"].close()
        job["vault"].close()
