"""Shared fixtures: a real Braze emulator on 127.0.0.1 (fresh per test) and a factory for custom ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connector.emulator import EmulatorServer

# The workspace the tests deliver to, unless a test says otherwise:
# - it is in the /users/track/sync beta (`sync_beta=True`): every key may call /users/track/sync, as the
#   connector's sync-mode tests need. A plain emulator refuses it with 403 Access Denied (tests pass
#   `sync_beta=False` to see that);
# - it has the Canvases the connector's tests and sample pipelines trigger (tests/integration/test_writer.py
#   "cv-1", pipelines/canvas_trigger.yaml); any other canvas_id gets Braze's 400, so a test triggering its
#   own Canvas registers it (`canvases=("c",)`, or `{"c": "paused"}`).
TEST_WORKSPACE: dict[str, Any] = {
    "api_keys": ("test-key",),
    "sync_beta": True,
    "canvases": ("cv-1", "9b1d2c3e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"),
}


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh in-process emulator of TEST_WORKSPACE: key "test-key", the sync beta granted, the test Canvases.

    Has .url, .api_key, .stats(), .ledger(), .user().
    """
    with EmulatorServer(**TEST_WORKSPACE) as server:
        yield server


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators with custom EmulatorServer kwargs over TEST_WORKSPACE's; all are stopped at teardown.

    A kwarg replaces the default of the same name (e.g. `sync_beta=False` for Braze's default, `canvases=`).
    """
    started: list[EmulatorServer] = []

    def make(**kwargs: Any) -> EmulatorServer:
        server = EmulatorServer(**{**TEST_WORKSPACE, **kwargs}).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
