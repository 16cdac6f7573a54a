"""Shared fixtures: a real Braze emulator on 127.0.0.1 (fresh per test), a factory for custom ones, and a
throwaway redis-server (shared rate limits)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connector.emulator import EmulatorServer

sys.path.insert(0, os.path.dirname(__file__))
from redis_server import RedisServer, redis_server_path  # noqa: E402


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh in-process emulator accepting key "test-key"; has .url, .api_key, .stats(), .ledger(), .user()."""
    with EmulatorServer(api_keys=("test-key",)) as server:
        yield server


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators with custom EmulatorServer kwargs; all are stopped at teardown."""
    started: list[EmulatorServer] = []

    def make(**kwargs: Any) -> EmulatorServer:
        kwargs.setdefault("api_keys", ("test-key",))
        server = EmulatorServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port (stopped at teardown); skipped where redis-server is not
    installed, except in CI (CI=true), where that is a failure."""
    if redis_server_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with RedisServer() as server:
        yield server
