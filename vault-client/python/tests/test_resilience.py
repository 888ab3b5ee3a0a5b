"""Deadlines and retries: every call has a deadline, and only the calls that
are safe to repeat are repeated, only on UNAVAILABLE.

The scripted `FakeVault` counts attempts exactly; the real vault, stopped,
shows the same from the outside."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest

import vault_client.aio
from harness import (
    CALLS,
    CREDENTIAL_ID,
    FAST_RETRY,
    USER,
    ClientCall,
    DevVault,
    FakeVault,
    reply,
    slow,
    status,
    unavailable,
)
from vault_client import (
    DEFAULT_DEADLINE,
    Aborted,
    AlreadyExists,
    Credential,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
    OdooConnection,
    Purpose,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    VaultClient,
    VaultError,
)
from vault_client._proto import vault_pb2

CALL_IDS = [call.name for call in CALLS]


def blocking_client(
    vault: DevVault, fake: FakeVault, deadline: float = DEFAULT_DEADLINE, retry: RetryPolicy = RetryPolicy()
) -> VaultClient:
    return VaultClient(fake.address, vault.tls("api"), deadline=deadline, retry=retry)


def asyncio_client(
    vault: DevVault, fake: FakeVault, deadline: float = DEFAULT_DEADLINE, retry: RetryPolicy = RetryPolicy()
) -> vault_client.aio.VaultClient:
    return vault_client.aio.VaultClient(fake.address, vault.tls("api"), deadline=deadline, retry=retry)


Runner = Callable[[DevVault, FakeVault, ClientCall, float, RetryPolicy], object]


def run_blocking(
    vault: DevVault, fake: FakeVault, call: ClientCall, deadline: float, retry: RetryPolicy
) -> object:
    with blocking_client(vault, fake, deadline, retry) as client:
        return call.blocking(client)


def run_asyncio(
    vault: DevVault, fake: FakeVault, call: ClientCall, deadline: float, retry: RetryPolicy
) -> object:
    async def go() -> object:
        async with asyncio_client(vault, fake, deadline, retry) as client:
            return await call.asyncio(client)

    return asyncio.run(go())


RUNNERS: dict[str, Runner] = {"blocking": run_blocking, "asyncio": run_asyncio}


@pytest.fixture(params=list(RUNNERS))
def run(request: pytest.FixtureRequest) -> Runner:
    """Runs one call with a fresh client, blocking or asyncio."""
    return RUNNERS[request.param]


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_only_idempotent_calls_are_retried_on_unavailable(
    vault: DevVault, fake: FakeVault, call: ClientCall, run: Runner
) -> None:
    fake.answers = [unavailable]
    with pytest.raises(Unavailable) as caught:
        run(vault, fake, call, DEFAULT_DEADLINE, FAST_RETRY)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == "fake: storage unavailable"
    expected = FAST_RETRY.attempts if call.idempotent else 1
    assert fake.methods() == [call.rpc] * expected


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL])
def test_other_failures_are_not_retried(
    vault: DevVault, fake: FakeVault, code: grpc.StatusCode, run: Runner
) -> None:
    fake.answers = [status(code)]
    get = next(call for call in CALLS if call.name == "get")
    with pytest.raises((NotFound, Internal)):
        run(vault, fake, get, DEFAULT_DEADLINE, FAST_RETRY)
    assert fake.methods() == ["GetCredential"]


def test_a_retry_that_succeeds_returns_the_reply(
    vault: DevVault, fake: FakeVault, run: Runner
) -> None:
    credential = vault_pb2.Credential(id=CREDENTIAL_ID, user_id=USER)
    answer = vault_pb2.GetCredentialResponse(credential=credential).SerializeToString()
    fake.answers = [unavailable, unavailable, reply(answer)]
    get = next(call for call in CALLS if call.name == "get")

    got = run(vault, fake, get, DEFAULT_DEADLINE, RetryPolicy(attempts=4, first_backoff=0.01))

    assert isinstance(got, Credential) and got.id == CREDENTIAL_ID
    assert len(fake.calls) == 3


def test_backoff_doubles_between_attempts(
    vault: DevVault, fake: FakeVault, run: Runner
) -> None:
    fake.answers = [unavailable]
    erase = next(call for call in CALLS if call.name == "erase")
    with pytest.raises(Unavailable):
        run(vault, fake, erase, DEFAULT_DEADLINE, RetryPolicy())  # 4 attempts, from 0.1 s
    times = [call.at for call in fake.calls]
    waits = [later - earlier for earlier, later in zip(times, times[1:])]
    assert len(times) == 4
    for wait, backoff in zip(waits, RetryPolicy().backoffs()):
        assert wait >= backoff * 0.9, waits


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_every_call_carries_the_deadline_and_the_request_id(
    vault: DevVault, fake: FakeVault, call: ClientCall
) -> None:
    fake.answers = [status(grpc.StatusCode.NOT_FOUND)]
    with blocking_client(vault, fake, deadline=3.0) as client:
        with pytest.raises(NotFound):
            call.blocking(client)
        with pytest.raises(NotFound):
            call.blocking(client.with_deadline(1.5))
        with pytest.raises(NotFound):
            call.blocking(client)
    [default, shorter, unchanged] = fake.calls
    # grpc sends the deadline rounded up, so the server may see a hair more.
    assert default.time_remaining is not None and 2.0 < default.time_remaining <= 3.1
    assert shorter.time_remaining is not None and 0.5 < shorter.time_remaining <= 1.6
    assert unchanged.time_remaining is not None and 2.0 < unchanged.time_remaining <= 3.1
    assert "x-request-id" not in default.metadata


def test_the_request_id_is_sent_as_metadata(vault: DevVault, fake: FakeVault) -> None:
    fake.answers = [status(grpc.StatusCode.NOT_FOUND)]

    async def asyncio_get() -> None:
        async with asyncio_client(vault, fake) as client:
            await client.get(USER, CREDENTIAL_ID, request_id="req-async")

    with blocking_client(vault, fake) as client:
        with pytest.raises(NotFound) as caught:
            client.delete(USER, CREDENTIAL_ID, request_id="req-blocking")
    with pytest.raises(NotFound):
        asyncio.run(asyncio_get())
    assert caught.value.request_id == "req-blocking"
    assert [call.metadata["x-request-id"] for call in fake.calls] == ["req-blocking", "req-async"]


def test_a_slow_vault_raises_deadline_exceeded_without_retrying(
    vault: DevVault, fake: FakeVault, run: Runner
) -> None:
    fake.answers = [slow(3.0)]
    decrypt = next(call for call in CALLS if call.name == "decrypt")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        run(vault, fake, decrypt, 0.3, RetryPolicy())
    assert time.monotonic() - started < 2.5
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fake.methods() == ["DecryptCredential"]


def test_a_stopped_vault_gets_retries_for_reads_and_one_try_for_a_delete(
    own_vault: DevVault, user: str
) -> None:
    policy = RetryPolicy(attempts=3, first_backoff=0.3)  # 0.9 s of waits in all
    with own_vault.client("api", retry=policy) as client:
        stored = client.store(user, OdooConnection("https://o.example", "d", "u"), "pw")
        own_vault.stop()

        started = time.monotonic()
        with pytest.raises(Unavailable):
            client.get(user, stored.id)
        read_took = time.monotonic() - started

        started = time.monotonic()
        with pytest.raises(Unavailable):
            client.delete(user, stored.id)
        delete_took = time.monotonic() - started

    assert read_took >= 0.9
    assert delete_took < 0.9


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.DATA_LOSS, DataLoss),
        (grpc.StatusCode.ABORTED, Aborted),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.UNIMPLEMENTED, VaultError),
    ],
)
def test_each_status_has_its_exception(
    vault: DevVault, fake: FakeVault, code: grpc.StatusCode, kind: type[VaultError]
) -> None:
    fake.answers = [status(code)]
    with blocking_client(vault, fake) as client:
        with pytest.raises(VaultError) as caught:
            client.decrypt(USER, CREDENTIAL_ID, Purpose.SYNC)
    assert type(caught.value) is kind
    assert (caught.value.code, caught.value.message) == (code, f"fake: {code.name}")


@pytest.mark.parametrize("deadline", [0, -1.0, float("nan")])
def test_a_deadline_must_be_positive(vault: DevVault, deadline: float) -> None:
    with pytest.raises(ValueError, match="deadline"):
        VaultClient(vault.address, vault.tls("api"), deadline=deadline)
    with VaultClient(vault.address, vault.tls("api")) as client:
        with pytest.raises(ValueError, match="deadline"):
            client.with_deadline(deadline)
    with pytest.raises(ValueError, match="deadline"):
        vault_client.aio.VaultClient(vault.address, vault.tls("api"), deadline=deadline)


def test_a_retry_policy_needs_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_backoff=-1)
    assert RetryPolicy().backoffs() == [0.1, 0.2, 0.4]
