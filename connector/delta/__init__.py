"""Delta sync: what Braze confirmed, so a run sends only what changed (streams with `delta: true`).

Interface: `open_state(pipeline, *, read_only, full, env) -> DeltaState | None` (None when no stream uses
delta); `DeltaState.changed(stream, kind, mapped, id_key) -> (MappedChunk, unchanged)` reduces a mapped
chunk to what differs from the confirmed state (`DeltaState.last`: added, changed, unchanged), and
`DeltaState.settle(stream, keys, delivered)` confirms (a 2xx) or forgets (anything else) what was sent;
`known_keys(stream)` and `forget(stream, keys)` read and drop confirmed keys. `SKIP_UNCHANGED` is the skip
reason of unchanged rows. The semantics are in state.py; the records compared in fingerprints.py; the
backends (a local SQLite file, or PostgreSQL with `state.url_env`) in stores.py and pg_store.py.

Incremental cursors (streams with `incremental: {cursor: col}`): `open_incremental(pipeline, *, read_only,
full) -> Incremental | None` keeps each stream's watermark in the same state file (watermark.py for the
semantics, incremental.py for the pipeline's side).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from connector.config import Pipeline
from connector.config.paths import fill_template
from connector.delta.incremental import Incremental
from connector.delta.state import SKIP_UNCHANGED, Counts, DeltaState
from connector.delta.stores import SqliteStore, Store
from connector.delta.watermark import Watermarks

__all__ = ["SKIP_UNCHANGED", "Counts", "DeltaState", "Incremental", "Watermarks", "open_incremental", "open_state",
           "state_path"]  # fmt: skip


def state_path(pipeline: Pipeline) -> Path:
    """The state file of a pipeline (`state.path` with {pipeline} filled in, relative to the pipeline file).

    Raises:
        ConfigError: the filled path leaves the folder `state.path` names (config.paths).
    """
    return fill_template(pipeline.state.path, "state.path", {"pipeline": pipeline.name}, Path(pipeline.base_dir))


def open_store(pipeline: Pipeline, *, read_only: bool, env: Mapping[str, str] | None = None) -> Store:
    """The pipeline's state backend: PostgreSQL with `state.url_env`, else the local file `state.path`."""
    if pipeline.state.url_env is not None:
        from connector.delta.pg_store import PgStore

        return PgStore(pipeline.state.url_env, pipeline.name, os.environ if env is None else env, read_only=read_only)
    return SqliteStore(state_path(pipeline), read_only=read_only)


def open_state(pipeline: Pipeline, *, read_only: bool, full: bool,
               env: Mapping[str, str] | None = None) -> DeltaState | None:  # fmt: skip
    """The delta-sync state, when a stream has `delta: true` (`env`: where `state.url_env` is read)."""
    if not any(s.delta for s in pipeline.streams):
        return None
    return DeltaState(open_store(pipeline, read_only=read_only, env=env), read_only=read_only, full=full)


def open_incremental(pipeline: Pipeline, *, read_only: bool, full: bool) -> Incremental | None:
    """The watermarks of the incremental streams, when a stream has `incremental`."""
    if not any(s.incremental is not None for s in pipeline.streams):
        return None
    return Incremental(Watermarks(state_path(pipeline), read_only=read_only, full=full))
