"""Delta sync: what Braze confirmed, so a run sends only what changed (streams with `delta: true`).

Interface: `open_state(pipeline, *, read_only, full, env) -> DeltaState | None` (None when no stream uses
delta); `DeltaState.changed(stream, kind, mapped, id_key) -> (MappedChunk, unchanged)` reduces a mapped
chunk to what differs from the confirmed state (`DeltaState.last`: added, changed, unchanged), and
`DeltaState.settle(stream, keys, delivered)` confirms (a 2xx) or forgets (anything else) what was sent
(`keys`: the objects' keys, or `MappedChunk.delta_rows(tokens)`, their positions in the chunk sent, which the
writer passes: a chunk's new users are kept in flight by position, flights.py; `settle_nowait` for a caller
that must not wait, the writer's event loop: None when the state is busy, else the ticket of a transaction
to wait for with `committed`, off the loop, 0 for none);
`known_keys(stream)`, `known_count(stream)` and `forget(stream, keys)` list, count and drop confirmed keys
(`holds_nothing(stream)`: none at all); `commit()` waits for settles
in progress on other threads. `SKIP_UNCHANGED` is the skip
reason of unchanged rows. The semantics are in state.py; the records compared in fingerprints.py; the
backends (a local SQLite file, or PostgreSQL with `state.url_env`) in stores.py (the file's tables in
logfile.py) and pg_store.py (the rows a write sends in pg_rows.py); the writes of several threads grouped in few transactions in commit.py; the
keys a run has decided, for a run begun on an empty state, in seen.py. The fast path for unchanged rows,
before validation and mapping: each source row's print in rowprint.py (`row_print`, `RowPrint.prints`),
`DeltaState.unchanged_rows(stream, keys, prints)` takes the rows whose print is the one stored with their
user's confirmed record, and prints.py keeps prints with what is in flight until Braze confirms it.

Incremental cursors (streams with `incremental: {cursor: col}`): `open_incremental(pipeline, *, read_only,
full, partition, env) -> Incremental | None` keeps each stream's watermark in the same state (watermark.py
for the semantics, marks.py for the file and PostgreSQL tables, incremental.py for the pipeline's side).

Partitioned runs (`--partition K/N`): `check_partitioned_state(pipeline, label)` requires a state file per
partition (`{partition}` in `state.path`) when a stream keeps state. One shared file cannot serve partitions:
a watermark is the highest cursor its run read, so one partition's would make the next skip the other
partitions' lower cursors (measured: 150 of 300 rows never sent); a run's start discards the pending entries
a killed run left, which in a shared file are those of a partition still running; and the file's lock
admits one run at a time. A user (or a file) stays in the same partition while N stays the same, so each
partition's file stays right from run to run; with another N, rows change partitions and are sent again.
With the state in PostgreSQL (`state.url_env`) the partitions share the database: delta records are per user
(partitions hold disjoint users) and watermarks are kept per partition, so no {partition} is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.config import Pipeline
from connector.config.paths import fill_template
from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.delta.incremental import Incremental
    from connector.delta.state import SKIP_UNCHANGED, Counts, DeltaState
    from connector.delta.stores import Store
    from connector.delta.watermark import Watermarks

__all__ = ["SKIP_UNCHANGED", "Counts", "DeltaState", "Incremental", "Watermarks", "check_partitioned_state", "keeping_state",
           "open_incremental", "open_state", "state_path"]  # fmt: skip

WHOLE = "all"  # {partition} of a run that is not partitioned

# Imported on first use: a run whose streams keep no state needs none of them (nor sqlite3, xxhash) before
# its first request (tests/integration/test_http_child_lifetime.py).
_LAZY = {"Incremental": "incremental", "SKIP_UNCHANGED": "state", "Counts": "state", "DeltaState": "state",
         "SqliteStore": "stores", "Store": "stores", "Watermarks": "watermark"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def state_path(pipeline: Pipeline, partition: str | None = None) -> Path:
    """The state file of a pipeline (`state.path` with {pipeline} and {partition} filled in, relative to the
    pipeline file). `partition` is the run's label (`p2of4`); an unpartitioned run fills in `all`.

    Raises:
        ConfigError: the filled path leaves the folder `state.path` names (config.paths).
    """
    values = {"pipeline": pipeline.name, "partition": partition or WHOLE}
    return fill_template(pipeline.state.path, "state.path", values, Path(pipeline.base_dir))


def pg_index_copy(pipeline: Pipeline, partition: str | None = None) -> Path | None:
    """The local copy of a PostgreSQL state's index (pg_cache.py): where the state file would be, plus
    `.pg-index`; None (no copy) where `state.path` cannot be filled in."""
    try:
        path = state_path(pipeline, partition)
    except ConfigError:
        return None
    return path.with_name(path.name + ".pg-index")


def keeping_state(pipeline: Pipeline) -> list[str]:
    """The streams that keep state between runs (delta sync or an incremental cursor)."""
    return [s.name for s in pipeline.streams if s.delta or s.incremental is not None]


def check_partitioned_state(pipeline: Pipeline, partition: str | None) -> None:
    """A partitioned run of a pipeline that keeps state needs a state file of its own (module doc).

    Raises:
        ConfigError: a stream uses delta or an incremental cursor and `state.path` has no {partition}.
    """
    # State in PostgreSQL is shared safely: partitions hold disjoint users, and watermarks are kept per partition.
    if pipeline.state.url_env is not None:
        return
    keeping = keeping_state(pipeline)
    if partition is None or not keeping or "{partition}" in pipeline.state.path:
        return
    raise ConfigError(
        f"{pipeline.origin}: stream(s) {', '.join(keeping)} keep state (delta or an incremental cursor) in "
        f"state.path {pipeline.state.path!r}, one file for all partitions; partitions cannot share it (a "
        "watermark would skip the other partitions' rows, and only one run at a time may write it). Give each "
        "partition its own: put {partition} in state.path, e.g. state: {path: \"state/{pipeline}.{partition}.sqlite\"}, "
        "and keep N the same from run to run"
    )


def open_store(pipeline: Pipeline, *, read_only: bool, env: Mapping[str, str] | None = None,
               partition: str | None = None) -> Store:  # fmt: skip
    """The pipeline's state backend: PostgreSQL with `state.url_env`, else the local file `state.path`."""
    if pipeline.state.url_env is not None:
        from connector.delta.pg_store import PgStore

        return PgStore(pipeline.state.url_env, pipeline.name, os.environ if env is None else env, read_only=read_only,
                       cache=pg_index_copy(pipeline, partition), part=partition or WHOLE)  # fmt: skip
    from connector.delta.stores import SqliteStore

    return SqliteStore(state_path(pipeline, partition), read_only=read_only)


def open_state(pipeline: Pipeline, *, read_only: bool, full: bool, env: Mapping[str, str] | None = None,
               partition: str | None = None) -> DeltaState | None:  # fmt: skip
    """The delta-sync state, when a stream has `delta: true` (`env`: where `state.url_env` is read; the
    partition's file for a partitioned run)."""
    if not any(s.delta for s in pipeline.streams):
        return None
    from connector.delta.state import DeltaState

    return DeltaState(open_store(pipeline, read_only=read_only, env=env, partition=partition), read_only=read_only, full=full,
                      memo=prints_memo(pipeline, partition))  # fmt: skip


def prints_memo(pipeline: Pipeline, partition: str | None = None) -> Path | None:
    """The folder of the fast path's prints memo (memo.py): where the state file would be, plus `.prints`; None
    (no memo) where `state.path` cannot be filled in."""
    try:
        path = state_path(pipeline, partition)
    except ConfigError:
        return None
    return path.with_name(path.name + ".prints")


def open_incremental(pipeline: Pipeline, *, read_only: bool, full: bool, partition: str | None = None,
                     env: Mapping[str, str] | None = None) -> Incremental | None:  # fmt: skip
    """The watermarks of the incremental streams, when a stream has `incremental`: in the state database
    with `state.url_env` (keyed by pipeline and partition), else in the state file."""
    if not any(s.incremental is not None for s in pipeline.streams):
        return None
    from connector.delta.incremental import Incremental
    from connector.delta.watermark import Watermarks

    if pipeline.state.url_env is not None:
        from connector.delta.marks import PgMarks

        where = PgMarks(pipeline.state.url_env, pipeline.name, partition or WHOLE,
                        os.environ if env is None else env, read_only=read_only)  # fmt: skip
        return Incremental(Watermarks(where, read_only=read_only, full=full))
    return Incremental(Watermarks(state_path(pipeline, partition), read_only=read_only, full=full))
