"""The asyncio client against the real vault: the same calls and answers as
the blocking one (`test_resilience.py` runs both through retries and
deadlines)."""

from __future__ import annotations

import asyncio

import pytest

from harness import ODOO, DevVault
from vault_client import InvalidArgument, NotFound, PermissionDenied, Purpose, Secret


def test_every_call_round_trips_through_the_asyncio_client(vault: DevVault, user: str) -> None:
    async def scenario() -> None:
        async with vault.aio_client("api") as api, vault.aio_client("sync") as sync:
            stored = await api.store(user, ODOO, "odoo-password", request_id="aio-1")
            assert await api.get(user, stored.id) == stored
            assert await sync.list(user) == [stored]

            secret = await sync.decrypt(user, stored.id, Purpose.SYNC)
            assert isinstance(secret, Secret) and "odoo-password" not in repr(secret)
            with secret:
                assert secret.reveal() == "odoo-password"

            updated = await api.update(user, stored.id, secret="rotated")
            assert updated.odoo == ODOO
            with await api.decrypt(user, stored.id, Purpose.CONNECTION_TEST) as secret:
                assert secret.reveal() == "rotated"

            await api.delete(user, stored.id)
            with pytest.raises(NotFound):
                await api.get(user, stored.id)
            await api.store(user, ODOO, "again")
            assert await api.erase(user) == 1

    asyncio.run(scenario())


def test_concurrent_calls_share_one_channel(vault: DevVault, user: str) -> None:
    async def scenario() -> None:
        async with vault.aio_client("api") as api:
            stored = await asyncio.gather(*(api.store(user, ODOO, f"pw-{n}") for n in range(20)))
            first = await api.list_page(user, page_size=15)
            assert len(first.credentials) == 15 and first.next_page_token is not None
            listed = await api.list(user)
            assert sorted(c.id for c in stored) == [c.id for c in listed]
            secrets = await asyncio.gather(
                *(api.decrypt(user, c.id, Purpose.CONNECTION_TEST) for c in stored)
            )
            assert sorted(s.reveal() for s in secrets) == sorted(f"pw-{n}" for n in range(20))

    asyncio.run(scenario())


def test_refusals_raise_the_same_exceptions(vault: DevVault, user: str) -> None:
    async def scenario() -> None:
        async with vault.aio_client("api") as api:
            stored = await api.store(user, ODOO, "pw")
            with pytest.raises(NotFound):
                await api.get("someone-else", stored.id)
            with pytest.raises(PermissionDenied):
                await api.decrypt(user, stored.id, Purpose.SYNC)
            with pytest.raises(InvalidArgument) as refused:
                await api.store(user, ODOO, "")
            assert refused.value.message.startswith("secret")

    asyncio.run(scenario())
