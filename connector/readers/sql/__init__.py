"""SQL sources -> the same bounded `Chunk`s the file readers produce.

`read_sql(source, base_dir, env, since=None)` streams a `sql` or `table` source in chunks of exactly
`source.chunk_rows` rows (the last one shorter): PostgreSQL and SQLite through ADBC, DuckDB in-process,
Snowflake and BigQuery through their ADBC drivers (optional extras); see drivers.py for how each stays in
bounded memory. `Chunk.file` is the source's label (`$PG_URL:public.users`, `duckdb:data/w.duckdb:query`),
`row_numbers` the 1-based position in the result and `keys` the row's key ("id=42") when the source has
key columns: `source.key`, else a table's primary key. Types are normalised in types.py.

`count_sql(...)` is the COUNT(*) of what `read_sql` would read (the progress total and the mode choice).
The connection URL comes from the environment (`url_env`) and never appears in a message or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa

from connector.config import Source
from connector.errors import SourceError
from connector.readers.ahead import read_ahead
from connector.readers.preflight import check_columns
from connector.readers.sql.connection import Target, mask_url, resolve_target
from connector.readers.sql.drivers import Database
from connector.readers.sql.keys import KeyTexts
from connector.readers.sql.query import ALIAS, Since, base_query, count_query, primary_key_query, rows_query
from connector.readers.sql.types import normalize
from connector.records import Chunk

__all__ = ["Since", "count_sql", "mask_url", "read_sql", "source_label"]

log = logging.getLogger(__name__)


def source_label(source: Source, target: Target) -> str:
    """What rejects and failed files show as the row's source: connection label and table (or 'query')."""
    return f"{target.label}:{source.table if source.table is not None else 'query'}"


def read_sql(source: Source, base_dir: Path, env: Mapping[str, str], since: Since | None = None) -> Iterator[Chunk]:
    """Stream the source's rows in chunks of `source.chunk_rows` (incremental: ordered by the cursor, >= its bound).

    Raises:
        SourceError: no connection, a failing query, a missing key or cursor column.
    """
    assert source.connection is not None
    target = resolve_target(source.connection, base_dir, env)
    label = source_label(source, target)
    with Database(target, label) as db:
        key = _key_columns(source, db)
        query, params = rows_query(source, db.dialect, since)
        log.info("reading %s (%s, chunks of %d rows)", label, target.shown, source.chunk_rows)
        row = 1
        checked = False
        # The next batch is fetched in a thread while this one is worked on (readers/ahead.py); closed before
        # the connection is, whatever ends the read.
        batches = read_ahead(db.batches(query, params, source.chunk_rows), name="sql-read-ahead")
        try:
            for table in _rechunk(batches, source.chunk_rows):
                table = normalize(table)
                if not checked:
                    _check_columns(label, table, key, since)
                    checked = True
                n = table.num_rows
                rows = range(row, row + n)
                # Key texts are made when a row is named (a reject, a failure): keys.py.
                keys = KeyTexts(key, table.select(key), rows) if key else None
                yield Chunk(label, table, rows, keys=keys)
                row += n
        finally:
            batches.close()


def count_sql(source: Source, base_dir: Path, env: Mapping[str, str], since: Since | None = None,
              needed: Mapping[str, str] | None = None, stream: str = "", origin: str | None = None) -> int:  # fmt: skip
    """How many rows `read_sql` would read (a COUNT(*) on the database), after checking that the query returns
    every column the stream reads (`needed`: column -> what reads it), its key and its cursor. `origin`: the
    pipeline file, named with the stream when the connection cannot be resolved (the first a run does).

    Raises:
        SourceError: no connection, the query fails, or it lacks a column (so a broken query or a missing
            column is reported before any row is read).
    """
    assert source.connection is not None
    where = f"{origin}: stream {stream}: " if origin else ""
    target = resolve_target(source.connection, base_dir, env, where)
    with Database(target, source_label(source, target)) as db:
        names = db.columns(f"SELECT * FROM ({base_query(source)}) {ALIAS} LIMIT 0", [])
        wanted = dict(needed or {})
        wanted.update({c: "source.key" for c in source.key or []})
        if since is not None:
            wanted[since.cursor] = "incremental.cursor"
        check_columns(db.label, stream, wanted, names, "query")
        query, params = count_query(source, db.dialect, since)
        return int(db.scalar(query, params) or 0)


def _key_columns(source: Source, db: Database) -> list[str]:
    if source.key is not None:
        return list(source.key)
    if source.table is None:
        return []
    found = primary_key_query(db.dialect, source.table)
    if found is None:
        return []
    return [str(c) for c in db.column(*found)]


def _check_columns(label: str, table: pa.Table, key: list[str], since: Since | None) -> None:
    names = set(table.column_names)
    wanted = [("source.key", c) for c in key] + ([("incremental.cursor", since.cursor)] if since else [])
    for where, col in wanted:
        if col not in names:
            raise SourceError(
                f"{label}: {where} names column {col!r}, which the source does not return "
                f"(columns: {', '.join(table.column_names)})"
            )


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one shorter) from batches of any size."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            held = rest.to_batches() if rest.num_rows else []
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(held)
