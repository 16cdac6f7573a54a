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

from connector.mapping.columns import columns_read
from connector.mapping.dates import DateReadings
from connector.mapping.objects import identifier_keys, map_chunk, user_key

__all__ = ["DateReadings", "columns_read", "identifier_keys", "map_chunk", "user_key"]
