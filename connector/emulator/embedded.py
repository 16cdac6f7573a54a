"""The emulator a pipeline starts for itself when its destination is `local` (no Braze account needed)."""

from __future__ import annotations

import logging

from connector.emulator.server import EmulatorServer

logger = logging.getLogger(__name__)


def start_embedded(api_key: str | None) -> EmulatorServer:
    """Start the embedded emulator with the run's key (granted the sync beta; Canvas ids not checked)."""
    assert api_key is not None
    server = EmulatorServer(api_keys=(api_key,), sync_beta=True, accept_any_canvas=True)
    server.start()
    logger.info("destination local: embedded Braze emulator on %s", server.url)
    return server
