"""BrazeClient.post_async (the writer's event loop) against the emulator over each transport: the same
retry policy, status table and errors as post(), with no thread held while it waits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from connector.config import Retry, Write
from connector.delivery.client import BrazeClient
from connector.delivery.ratelimit import RateLimiter
from connector.delivery.transport.frames import ENGINE_VAR
from connector.emulator import EmulatorServer
from connector.errors import (
    AmbiguousApiError,
    AuthError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)
from connector.stop import StopToken

pytestmark = pytest.mark.timeout(120)
FAST = Retry(max_attempts=6, initial_backoff_s=0.01, max_backoff_s=0.05, max_elapsed_s=30)


@pytest.fixture(params=["requests", "aiohttp", "aiohttp-process:curl",
                        *(["aiohttp-process:aiohttp"] if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else [])])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each transport; the HTTP child with its default engine (curl). Its aiohttp engine's answers and failure
    classes are checked engine by engine in test_transport_engines.py; BRAZE_CONNECTOR_SOAK=1 adds it here."""
    kind, _, engine = str(request.param).partition(":")
    if engine:
        monkeypatch.setenv(ENGINE_VAR, engine)
    return kind


def make(url: str, kind: str, *, key: str = "test-key", on_retry: Callable[[str, str], None] | None = None,
         stop: StopToken | None = None, **write: Any) -> BrazeClient:  # fmt: skip
    w = Write(**write)
    return BrazeClient(url, key, write=w, limiter=RateLimiter.from_write(w), on_retry=on_retry, seed=1,
                       transport=kind, stop=stop)  # type: ignore[arg-type]  # fmt: skip


def body(i: int, **extra: Any) -> bytes:
    return orjson.dumps({"attributes": [{"external_id": f"u{i}", **extra}]})


def statuses(server: EmulatorServer) -> list[int]:
    return [e["status"] for e in server.ledger(applied=False)]


def test_concurrent_posts_retry_5xx_and_429_until_delivered(
    emulator_factory: Callable[..., EmulatorServer], kind: str
) -> None:
    server = emulator_factory(faults={"users_track:503": 0.2, "users_track:429": 0.1}, seed=5)
    retries: list[str] = []
    # Which request draws which fault depends on arrival order (30 at once), so the seed does not fix it: at
    # FAST's 6 attempts a request fails all of them with p = 0.3^6, ~2 % of runs for 30 requests (a CI run
    # failed so); 14 attempts make that ~1e-6.
    patient = FAST.model_copy(update={"max_attempts": 14})
    with make(server.url, kind, retry=patient, on_retry=lambda e, r: retries.append(r)) as client:

        async def run() -> list[Any]:
            return await asyncio.gather(
                *(client.post_async("users_track", body(i), idempotent=True) for i in range(30))
            )

        responses = asyncio.run(run())
    st = statuses(server)
    assert all(r.status == 201 for r in responses) and st.count(201) == 30
    assert sum(r.attempts for r in responses) == len(st) == 30 + len(retries)
    assert sum(r.rate_limited for r in responses) == st.count(429) == retries.count("429")
    assert retries.count("503") == st.count(503) > 0


def test_errors_are_the_ones_post_raises(emulator_factory: Callable[..., EmulatorServer], kind: str) -> None:
    server = emulator_factory(faults={"users_track:503": 1.0})
    with make(server.url, kind, retry=Retry(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)) as c:
        with pytest.raises(TransientApiError) as info:
            asyncio.run(c.post_async("users_track", body(1), idempotent=True))
        assert info.value.status == 503 and not isinstance(info.value, RateLimitedError)
        assert statuses(server) == [503] * 3
        with pytest.raises(ValueError, match="unknown endpoint"):
            asyncio.run(c.post_async("users_merge", b"{}", idempotent=True))


def test_400_and_401_are_not_retried(emulator: EmulatorServer, kind: str) -> None:
    with make(emulator.url, kind, retry=FAST) as client:
        with pytest.raises(PermanentApiError) as info:
            asyncio.run(client.post_async("users_track", orjson.dumps({"attributes": [{"x": 1}]}), idempotent=True))
        assert info.value.status == 400
    with make(emulator.url, kind, key="wrong-key-123", retry=FAST) as client:
        with pytest.raises(AuthError) as auth:
            asyncio.run(client.post_async("users_track", body(1), idempotent=True))
        assert "wrong-key-123" not in str(auth.value)
    assert len(statuses(emulator)) == 2


def test_a_dropped_non_idempotent_request_is_ambiguous_and_not_resent(
    emulator_factory: Callable[..., EmulatorServer], kind: str
) -> None:
    server = emulator_factory(faults={"users_track:drop": 1.0})
    with make(server.url, kind, retry=FAST, on_ambiguous="fail") as client:
        with pytest.raises(AmbiguousApiError):
            asyncio.run(client.post_async("users_track", body(1), idempotent=False))
    assert len(statuses(server)) == 1


def test_a_stop_ends_the_backoff_and_sends_nothing_more(
    emulator_factory: Callable[..., EmulatorServer], kind: str
) -> None:
    """Waiting 60 s to retry a 503 when the run is stopped: the wait ends and the 503 stands."""
    server = emulator_factory(faults={"users_track:503": 1.0})
    token = StopToken()
    retry = Retry(max_attempts=5, initial_backoff_s=60, max_backoff_s=60, max_elapsed_s=300)
    with make(server.url, kind, retry=retry, stop=token, on_retry=lambda e, r: token.request()) as client:
        with pytest.raises(TransientApiError) as info:
            asyncio.run(asyncio.wait_for(client.post_async("users_track", body(1), idempotent=True), 30))
    assert info.value.status == 503 and statuses(server) == [503]
