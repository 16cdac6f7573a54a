"""Parquet -> chunks with the file's own types (row numbers are 1-based row indices).

The file is read with ``pre_buffer=False``: with pyarrow's default (True) the reader's read-range cache
keeps the bytes of every row group it has read until the reader is closed, so memory grows with the file
(about +270 MB over a 10M-row, 280 MB file) instead of following ``chunk_rows``. Pre-buffering only pays
on high-latency filesystems; on local files the speed is the same.

Parquet does not check that its strings are UTF-8, and a string that is not would raise later, where a row
can no longer be told apart. Each batch is validated here (Arrow's full validation, vectorised); a row
holding such a string becomes a parse reject (`parquet.encoding`) with its row number, the others go on.
A file whose schema has more than `max_columns` columns is refused before any row is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connector.config import MAX_COLUMNS
from connector.errors import SourceError
from connector.readers.ahead import read_ahead
from connector.readers.files import open_file
from connector.records import Chunk, Rejected, RowRef


def read_parquet(path: Path, chunk_rows: int, max_columns: int = MAX_COLUMNS) -> Iterator[Chunk]:
    """Parquet batches with the file's own types; row numbers are 1-based row indices."""
    with open_file(path) as fh:
        try:
            pf = pq.ParquetFile(fh, pre_buffer=False)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise SourceError(
                f"{path}: not a readable Parquet file ({e}); check the file or set source.format"
            ) from None
        width = len(pf.schema_arrow)
        if width > max_columns:
            raise SourceError(
                f"{path}: the file has {width:,} columns, over source.max_columns ({max_columns:,}); "
                "raise source.max_columns in the pipeline file if it really has that many"
            )
        start = 1
        try:
            # The next batch decoded on a thread (Arrow, without the GIL) while the run works on this one.
            for batch in read_ahead(pf.iter_batches(batch_size=chunk_rows), name="parquet-read-ahead"):
                n = batch.num_rows
                yield _checked(str(path), pa.Table.from_batches([batch]), range(start, start + n))
                start += n
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{path}: the Parquet file is damaged near row {start} ({e})") from None


def _checked(file: str, table: pa.Table, rows: Sequence[int]) -> Chunk:
    """The chunk, with the rows holding a string that is not UTF-8 moved to its parse rejects."""
    try:
        table.validate(full=True)
        return Chunk(file, table, rows)
    except pa.ArrowInvalid:
        pass
    bad: dict[int, list[str]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        col = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        try:
            col.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        for i in range(len(col)):  # only a column that failed: find its rows (nested values too)
            if not _decodes(col.slice(i, 1)):
                bad.setdefault(i, []).append(name)
    if not bad:  # invalid for another reason than its strings: let the reader report it
        raise pa.ArrowInvalid(f"rows {rows[0]}-{rows[-1]} do not validate")
    rejects = [
        Rejected(
            RowRef(file, rows[i]),
            "parse",
            "parquet.encoding",
            f"column(s) {', '.join(repr(c) for c in cols)} hold bytes that are not valid UTF-8; "
            "re-write the file with UTF-8 strings (or type the column as binary)",
            column=cols[0],
            values=_row_text(table, i),
        )
        for i, cols in sorted(bad.items())
    ]
    keep = pa.array([i not in bad for i in range(table.num_rows)], type=pa.bool_())
    kept = pc.filter(table, keep)
    return Chunk(file, kept, [r for i, r in enumerate(rows) if i not in bad], rejects)


def _row_text(table: pa.Table, i: int) -> dict[str, Any]:
    """Row i's values for the rejects file, invalid strings shown with backslash escapes."""
    out: dict[str, Any] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        col = column.slice(i, 1)
        if _decodes(col):
            out[name] = col.to_pylist()[0]
        else:
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                raw = col.cast(pa.binary() if pa.types.is_string(col.type) else pa.large_binary())[0].as_py()
                out[name] = None if raw is None else raw.decode("utf-8", "backslashreplace")
            else:
                out[name] = "(not valid UTF-8)"
    return out


def _decodes(values: Any) -> bool:
    """Whether these values convert to Python (a slice of a nested array validates its whole child)."""
    try:
        values.to_pylist()
    except UnicodeDecodeError:
        return False
    return True
