"""Arrow types from the drivers -> the types the rest of the pipeline reads (as from Parquet).

Drivers return some columns as Arrow extension types the later stages do not know:

- PostgreSQL NUMERIC (`arrow.opaque`, text) -> float64, the number Braze stores (a double); integers past
  2**53 lose precision, so keep identifiers in BIGINT or TEXT columns.
- JSON / JSONB (`arrow.json`) -> string: `properties.json_column` and `type: object` parse it.
- UUID (`arrow.uuid`) -> its text form; other extension types -> their storage type.
- Intervals and durations (no Braze equivalent) -> text.

Timestamps keep their zone (with zone: an instant in UTC; without: wall-clock time, read in the value's
`timezone`, UTC by default), booleans, integers, floats, decimals, dates, lists and structs stay as they are.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def normalize(table: pa.Table) -> pa.Table:
    """The table with every column in a type the mapping stage reads; field metadata dropped."""
    columns = []
    fields = []
    for field, col in zip(table.schema, table.columns, strict=True):
        col = _column(col)
        columns.append(col)
        fields.append(pa.field(field.name, col.type, nullable=True))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    t = col.type
    if isinstance(t, pa.BaseExtensionType):
        name = t.extension_name
        storage = pa.chunked_array([c.storage for c in col.chunks], type=t.storage_type)
        if name == "arrow.opaque" and getattr(t, "type_name", "") == "numeric":
            return pc.cast(storage, pa.float64())
        if name == "arrow.uuid":
            return _text(col)
        return _column(storage)
    if pa.types.is_interval(t) or pa.types.is_duration(t):
        return _text(col)
    return col


def _text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())])
