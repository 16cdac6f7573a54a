"""CSV, Parquet and SQL sources -> an iterator of bounded chunks (the only package that reads tables with pyarrow).

`list_files` finds a source's files (a file, a directory's files of the format, or a glob's matches, sorted;
none for an SQL source); `read_source` streams them as `Chunk`s of at most `source.chunk_rows` rows. Memory
follows the chunk size, not the file size. See csv_reader for CSV row numbers, quoted multi-line fields and
parse rejects, sql/ for SQL sources (same chunks, rows named by their key), cursor.py for incremental
cursors.
`check_files` (preflight.py) opens every file of a stream before a run sends anything and checks its
header or schema has the columns the stream needs; a zero-byte CSV is an empty table.
`partition` splits a stream for `run --partition K/N` (whole files, or rows by identifier hash).
`infer.infer_types` guesses each column's Value type from a file's schema or first rows (`upload`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector import config
from connector.readers.failed import RetrySet, load_failed
from connector.readers.files import format_of, list_files
from connector.readers.preflight import check_files
from connector.records import Chunk

if TYPE_CHECKING:
    from connector.readers.csv_reader import read_csv
    from connector.readers.parquet_reader import read_parquet
    from connector.readers.sql import Since, count_sql, read_sql

__all__ = [
    "RetrySet",
    "check_files",
    "Since",
    "count_sql",
    "list_files",
    "load_failed",
    "read_csv",
    "read_parquet",
    "read_source",
    "read_sql",
]

log = logging.getLogger(__name__)

# Imported on first use: a run reading CSV files needs neither pyarrow.parquet (and the pyarrow.fs and ssl
# it loads) nor the SQL readers before its first request (tests/integration/test_http_child_lifetime.py), and
# one reading Parquet files or a database needs no CSV reader.
_LAZY = {"read_csv": "connector.readers.csv_reader", "read_parquet": "connector.readers.parquet_reader",
         "Since": "connector.readers.sql",
         "count_sql": "connector.readers.sql", "read_sql": "connector.readers.sql"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_source(
    source: config.Source,
    base_dir: Path,
    files: list[Path] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    since: Since | None = None,
) -> Iterator[Chunk]:
    """Stream every file of a source (or only `files`, from list_files), or an SQL source's rows, as chunks
    of at most `source.chunk_rows` rows. `env` holds an SQL connection's `url_env`; `since` bounds and orders
    an SQL read by an incremental cursor (file rows are filtered by the caller).

    Raises:
        SourceError: a file is missing, unreadable or not in the declared format; a database cannot be
            reached or its query fails.
    """
    if source.is_sql:
        import os

        from connector.readers.sql import read_sql

        yield from read_sql(source, base_dir, os.environ if env is None else env, since)
        return
    for path in list_files(source, base_dir) if files is None else files:
        fmt = format_of(path, source.format)
        log.info("reading %s (%s, chunks of %d rows)", path, fmt, source.chunk_rows)
        if fmt == "parquet":
            from connector.readers.parquet_reader import read_parquet

            yield from read_parquet(path, source.chunk_rows, source.max_columns)
        else:
            from connector.readers.csv_reader import read_csv

            yield from read_csv(path, source.csv, source.chunk_rows, source.max_columns)
