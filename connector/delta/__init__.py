"""Delta sync: what Braze confirmed, so a run sends only what changed (streams with `delta: true`).

Interface: `open_state(pipeline, *, read_only, full) -> DeltaState | None` (None when no stream uses
delta); `DeltaState.changed(stream, kind, mapped, id_key) -> (MappedChunk, unchanged)` reduces a mapped
chunk to what differs from the confirmed state, and `DeltaState.settle(stream, keys, delivered)` confirms
(a 2xx) or forgets (anything else) what was sent. `SKIP_UNCHANGED` is the skip reason of unchanged rows.
The semantics are in state.py.

Incremental cursors (streams with `incremental: {cursor: col}`): `open_incremental(pipeline, *, read_only,
full) -> Incremental | None` keeps each stream's watermark in the same state file (watermark.py for the
semantics, incremental.py for the pipeline's side).

Partitioned runs (`--partition K/N`): `check_partitioned_state(pipeline, label)` requires a state file per
partition (`{partition}` in `state.path`) when a stream keeps state. One shared file cannot serve partitions:
a watermark is the highest cursor its run read, so one partition's would make the next skip the other
partitions' lower cursors (measured: 150 of 300 rows never sent); a run's start discards the pending entries
a killed run left, which in a shared file are those of a partition still running; and the file's lock
admits one run at a time. A user (or a file) stays in the same partition while N stays the same, so each
partition's file stays right from run to run; with another N, rows change partitions and are sent again.
"""

from __future__ import annotations

from pathlib import Path

from connector.config import Pipeline
from connector.config.paths import fill_template
from connector.delta.incremental import Incremental
from connector.delta.state import SKIP_UNCHANGED, DeltaState
from connector.delta.watermark import Watermarks
from connector.errors import ConfigError

__all__ = ["SKIP_UNCHANGED", "DeltaState", "Incremental", "Watermarks", "check_partitioned_state", "open_incremental",
           "open_state", "state_path"]  # fmt: skip

WHOLE = "all"  # {partition} of a run that is not partitioned


def state_path(pipeline: Pipeline, partition: str | None = None) -> Path:
    """The state file of a pipeline (`state.path` with {pipeline} and {partition} filled in, relative to the
    pipeline file). `partition` is the run's label (`p2of4`); an unpartitioned run fills in `all`.

    Raises:
        ConfigError: the filled path leaves the folder `state.path` names (config.paths).
    """
    values = {"pipeline": pipeline.name, "partition": partition or WHOLE}
    return fill_template(pipeline.state.path, "state.path", values, Path(pipeline.base_dir))


def check_partitioned_state(pipeline: Pipeline, partition: str | None) -> None:
    """A partitioned run of a pipeline that keeps state needs a state file of its own (module doc).

    Raises:
        ConfigError: a stream uses delta or an incremental cursor and `state.path` has no {partition}.
    """
    keeping = [s.name for s in pipeline.streams if s.delta or s.incremental is not None]
    if partition is None or not keeping or "{partition}" in pipeline.state.path:
        return
    raise ConfigError(
        f"{pipeline.origin}: stream(s) {', '.join(keeping)} keep state (delta or an incremental cursor) in "
        f"state.path {pipeline.state.path!r}, one file for all partitions; partitions cannot share it (a "
        "watermark would skip the other partitions' rows, and only one run at a time may write it). Give each "
        "partition its own: put {partition} in state.path, e.g. state: {path: \"state/{pipeline}.{partition}.sqlite\"}, "
        "and keep N the same from run to run"
    )


def open_state(pipeline: Pipeline, *, read_only: bool, full: bool, partition: str | None = None) -> DeltaState | None:
    """The delta-sync state, when a stream has `delta: true` (the partition's file for a partitioned run)."""
    if not any(s.delta for s in pipeline.streams):
        return None
    return DeltaState(state_path(pipeline, partition), read_only=read_only, full=full)


def open_incremental(pipeline: Pipeline, *, read_only: bool, full: bool,
                     partition: str | None = None) -> Incremental | None:  # fmt: skip
    """The watermarks of the incremental streams, when a stream has `incremental`."""
    if not any(s.incremental is not None for s in pipeline.streams):
        return None
    return Incremental(Watermarks(state_path(pipeline, partition), read_only=read_only, full=full))
