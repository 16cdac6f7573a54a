"""An incremental stream's cursor values and row identities, read from a chunk's Arrow columns.

Cursor values come back as Python values that order the way the database orders them: aware datetimes
(timestamps with a zone, in UTC), naive datetimes (without), dates, ints, floats, Decimals, and for SQL
sources strings. A CSV file's cursor cells are text: they are parsed as integers when every cell of the
column is one, else as ISO 8601 date-times (a time without an offset is UTC), so "10" sorts after "9" and
offsets are honoured. A row's identity is its key ("id=42") when the source has one, else a digest of the
whole row (a row identical in every column is the same row).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.errors import SourceError
from connector.records import Chunk

CursorValue = datetime | date | int | float | Decimal | str


def cursor_values(chunk: Chunk, column: str, *, parse_text: bool) -> list[CursorValue | None]:
    """The cursor of every row of the chunk (None where the cell is null).

    Raises:
        SourceError: the column is missing, or of a type that cannot order rows (booleans, lists, text
            that is neither integers nor date-times in a file).
    """
    if column not in chunk.table.column_names:
        raise SourceError(
            f"{chunk.file}: incremental.cursor names column {column!r}, which the source does not have "
            f"(columns: {', '.join(chunk.table.column_names)})"
        )
    col = chunk.table.column(column)
    t = col.type
    if pa.types.is_timestamp(t):
        if t.unit == "ns":
            col = pc.cast(col, pa.timestamp("us", t.tz), safe=False)
        values = col.to_pylist()
        if t.tz is not None:
            return [None if v is None else v.astimezone(UTC) for v in values]
        return list(values)
    if pa.types.is_date(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return list(col.to_pylist())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        texts = col.to_pylist()
        return _parse(chunk, column, texts) if parse_text else list(texts)
    raise SourceError(
        f"{chunk.file}: incremental.cursor column {column!r} is of type {t}; use a timestamp, date or "
        "number column (or text that sorts, such as ISO 8601 times)"
    )


def _parse(chunk: Chunk, column: str, texts: list[str | None]) -> list[CursorValue | None]:
    cells = [None if t is None or not t.strip() else t.strip() for t in texts]
    try:
        return [None if c is None else int(c) for c in cells]
    except ValueError:
        pass
    out: list[CursorValue | None] = []
    for i, c in enumerate(cells):
        if c is None:
            out.append(None)
            continue
        try:
            dt = datetime.fromisoformat(c)
        except ValueError:
            raise SourceError(
                f"{chunk.ref(i)}: incremental.cursor column {column!r} holds {c[:40]!r}, neither an integer "
                "nor an ISO 8601 date-time; every cursor cell of a file must be one or the other"
            ) from None
        out.append(dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC))
    return out


def row_ids(chunk: Chunk) -> list[str]:
    """Each row's identity: its key when the source has one, else a digest of all its columns."""
    if chunk.keys is not None:
        return list(chunk.keys)
    rows = chunk.table.to_pylist()
    return [
        "#" + hashlib.blake2b(orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
        for r in rows
    ]
