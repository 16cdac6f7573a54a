"""Mapping: a chunk of source rows -> Braze objects, with the contract's checks (mapping and contract rejects).

Interface: `map_chunk(stream, chunk, now) -> MappedChunk` builds the objects exactly as ../shared/braze-api.md
describes (attributes, events, purchases, Canvas recipients, Live Activity updates), runs the contract
on each and puts rows that fail a cast (stage "mapping") or a contract rule (stage "contract") into
`MappedChunk.rejects`; `user_key(obj) -> str` names the user an object belongs to, and
`identifier_keys(stream, chunk)` every row's user the same way, before any check; `columns_read(stream)`
lists the source columns a stream's mapping reads (checked before a run sends anything); `DateReadings`
keeps, across a stream's chunks, how each time column reads `07/09/2023` and warns when nothing told.
`MappedChunk.objects` is a list of dicts, or (attributes, events, purchases) a records.EncodedObjects:
the objects' JSON built column by column, each dict decoded only when read.
Inside: vectorised casts (casts.py, blanks.py, numbers.py, timeparse.py), Value resolution (columns.py),
batch building with the contract pre-checked per column (fast.py), JSON per column in Arrow (encode.py),
per-row object building and the reference path (objects.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.mapping.columns import columns_read
from connector.mapping.dates import DateReadings

if TYPE_CHECKING:
    from connector.mapping.objects import identifier_keys, map_chunk, user_key

__all__ = ["DateReadings", "columns_read", "identifier_keys", "map_chunk", "user_key"]

# Imported on first use: objects.py brings the casts, the contract and the JSON encoders (~20 modules), which
# a run maps rows with, but which an unchanged delta re-run (every row taken by the fast path) never calls:
# ~5 ms of its start, ~25 ms where PYTHONDONTWRITEBYTECODE makes every start compile them
# (tests/unit/test_cli_startup.py).
_LAZY = ("identifier_keys", "map_chunk", "user_key")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from connector.mapping import objects

        return getattr(objects, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
