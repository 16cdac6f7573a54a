"""The emulator a pipeline starts for itself when its destination is `local` (no Braze account needed).

It plays the pipeline's workspace as `destination.emulator` describes it (config/models.py EmbeddedEmulator):
the /users/track/sync beta granted or not, and the Canvas ids it has. With no `canvases` list it registers
the pipeline's own canvas_ids, which proves nothing about them, so the run's report says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from connector.config import Pipeline
from connector.emulator.server import EmulatorServer

logger = logging.getLogger(__name__)


def embedded_workspace(pipeline: Pipeline) -> tuple[dict[str, Any], str | None]:
    """EmulatorServer options for the pipeline's embedded emulator, and the note for the report (or None).

    sync_beta: `destination.emulator.sync_beta`, else granted only when `write.sync_endpoint` is enabled
    (the pipeline says its key has the beta). canvases: the listed ids, else the pipeline's own.
    """
    opts = pipeline.destination.emulator
    sync_beta = opts.sync_beta if opts.sync_beta is not None else pipeline.write.sync_endpoint == "enabled"
    if opts.canvases is not None:
        return {"sync_beta": sync_beta, "canvases": tuple(opts.canvases)}, None
    own = sorted({s.canvas.canvas_id for s in pipeline.streams if s.canvas is not None})
    note = None
    if own:
        note = (
            f"destination local: the embedded emulator registered the pipeline's own canvas_id(s) "
            f"{', '.join(own)} without checking them against Braze, where an unknown or not API-triggered "
            "Canvas is refused; list your Canvas ids in destination.emulator.canvases to catch a wrong one here"
        )
    return {"sync_beta": sync_beta, "canvases": tuple(own)}, note


def start_embedded(api_key: str | None, pipeline: Pipeline, warn: Callable[[str], None]) -> EmulatorServer:
    """Start the pipeline's embedded emulator accepting `api_key` (embedded_workspace); `warn` gets its note."""
    assert api_key is not None
    workspace, note = embedded_workspace(pipeline)
    if note:
        warn(note)
    server = EmulatorServer(api_keys=(api_key,), **workspace)
    server.start()
    logger.info("destination local: embedded Braze emulator on %s", server.url)
    return server
