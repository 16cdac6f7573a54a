"""Shared fixtures: a real Braze emulator on 127.0.0.1 (fresh per test) and a factory for custom ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connector.emulator import EmulatorServer


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
