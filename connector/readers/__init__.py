"""CSV and Parquet sources -> an iterator of bounded chunks (the only package that reads tables with pyarrow).

`list_files` finds a source's files (a file, a directory's files of the format, or a glob's matches, sorted);
`read_source` streams them as `Chunk`s of at most `source.chunk_rows` rows. Memory follows the chunk size,
not the file size. See csv_reader for CSV row numbers, quoted multi-line fields and parse rejects.
`partition` splits a stream for `run --partition K/N` (whole files, or rows by identifier hash).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from connector import config
from connector.readers.csv_reader import read_csv
from connector.readers.failed import RetrySet, load_failed
from connector.readers.files import format_of, list_files
from connector.readers.parquet_reader import read_parquet
from connector.records import Chunk

__all__ = ["RetrySet", "list_files", "load_failed", "read_csv", "read_parquet", "read_source"]

log = logging.getLogger(__name__)


def read_source(source: config.Source, base_dir: Path, files: list[Path] | None = None) -> Iterator[Chunk]:
    """Stream every file of a source (or only `files`, from list_files) as chunks of at most `source.chunk_rows` rows.

    Raises:
        SourceError: a file is missing, unreadable or not in the declared format.
    """
    for path in list_files(source, base_dir) if files is None else files:
        fmt = format_of(path, source.format)
        log.info("reading %s (%s, chunks of %d rows)", path, fmt, source.chunk_rows)
        if fmt == "parquet":
            yield from read_parquet(path, source.chunk_rows)
        else:
            yield from read_csv(path, source.csv, source.chunk_rows)
