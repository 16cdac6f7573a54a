"""Pre-flight: every file of a stream opened and its columns checked before anything is read or sent.

A bad file in the last stream must fail the run before the first stream is delivered, so the pipeline
checks every stream's files up front: each file exists and is readable, its header (CSV) or schema
(Parquet) can be read, and it has every column the stream's mapping and suites read. A zero-byte CSV is
not an error: it is an empty table (no rows, no columns to check), returned so the run can warn about it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from connector import config
from connector.errors import SourceError
from connector.readers.files import format_of, open_file


def check_files(stream: str, source: config.Source, files: Sequence[Path], needed: Mapping[str, str]) -> list[Path]:
    """Check each file of a stream; returns the empty (zero-byte) CSV files.

    Args:
        needed: column -> what reads it (e.g. "identifier.external_id"), for the message.

    Raises:
        SourceError: a file cannot be opened or parsed, or lacks a needed column (named with the file).
    """
    empty: list[Path] = []
    for path in files:
        names = columns_of(source, path)
        if names is None:
            empty.append(path)
            continue
        check_columns(str(path), stream, needed, names, "file")
    return empty


def check_columns(label: str, stream: str, needed: Mapping[str, str], names: Sequence[str], what: str) -> None:
    """Every needed column among `names` (what a `what`, "file" or "query", returns).

    Raises:
        SourceError: one message naming the first missing column, what reads it, the others missing and the
            columns there are.
    """
    have = set(names)
    missing = [c for c in needed if c not in have]
    if missing:
        first = missing[0]
        more = f"; also missing: {', '.join(repr(c) for c in missing[1:])}" if len(missing) > 1 else ""
        verb = "does not have" if what == "file" else "does not return"
        raise SourceError(
            f"{label}: stream '{stream}' reads column '{first}' ({needed[first]}), which the {what} {verb}"
            f"{more} (columns: {', '.join(names) or '(none)'}); fix the {what} or the pipeline"
        )


def columns_of(source: config.Source, path: Path) -> list[str] | None:
    """A file's column names (CSV header or Parquet schema); None for a zero-byte CSV."""
    if format_of(path, source.format) == "csv":
        from connector.readers.csv_reader import csv_columns  # (not for a run reading only Parquet files)

        return csv_columns(path, source.csv, source.max_columns)
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_file(path) as fh:
        try:
            return list(pq.ParquetFile(fh, pre_buffer=False).schema_arrow.names)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise SourceError(
                f"{path}: not a readable Parquet file ({e}); check the file or set source.format"
            ) from None
