"""The local Braze API emulator: faithful endpoints, SQLite profile state, rate limits, fault injection.

Modules: app (aiohttp routes, auth, limits, faults), workspace (keys and permissions, the sync beta,
Canvases), handlers (endpoint semantics), rules, attribute_rules and messaging_rules (validation and Braze's
error texts), nested (nested-attribute drops), semantics (attribute writes), store (SQLite profiles, events,
purchases, dispatches, ledger), limits (fixed windows, X-RateLimit-* headers), faults (seeded injection),
server (EmulatorServer, start_subprocess, serve), embedded (start_embedded: the emulator a pipeline with
`destination.url: local` starts for itself), cli (`braze-connector emulator`).

    with EmulatorServer(api_keys=("test-key",), sync_beta=True, canvases=("cv1",),
                        rate_limits={"users_track": (5, 1)}, faults={"users_track:drop": 0.1}, seed=1) as emu:
        emu.url, emu.stats(), emu.ledger(), emu.user("external_id", "u1")

Inspection (same Bearer key): GET /_emulator/stats, /_emulator/ledger?since=SEQ&limit=N&applied=0|1,
/_emulator/users/<kind>/<value>, /_emulator/dispatches; POST /_emulator/reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.emulator.server import (
        EmulatorProcess,
        EmulatorServer,
        build_config,
        serve,
        start_subprocess,
    )

__all__ = ["EmulatorProcess", "EmulatorServer", "build_config", "serve", "start_subprocess"]


def __getattr__(name: str) -> Any:
    """The server's names, imported on first use: aiohttp is slow to import and most runs never serve."""
    if name in __all__:
        from connector.emulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
