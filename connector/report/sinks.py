"""Streaming sinks for the rejects and failed files (CSV via the csv module, Parquet via pyarrow).

A sink's file is created with its first row: a run that rejects (or fails) nothing leaves no empty file,
and `file` is None until then, so a report never names a file that is not there. Creating a sink removes
the file an earlier run left at its path (a resumed run, or a reused folder): what is there is this run's.

CSV: the columns are the original row columns (union, as strings, first-seen order over the first batch),
then the metadata columns. A column first seen after the header was written is appended to the rows written
from then on, and on close the file is rewritten once (streamed, bounded memory) with the full header
(original columns, late columns, metadata). Parquet: the schema is fixed from the first batch, all strings,
missing columns null; columns first seen later go as a JSON object into the trailing ``_extra`` column.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

from connector.cells import neutralise

Row = tuple[dict[str, Any], list[Any]]
REJECT_META = ["_source_file", "_row_number", "_stage", "_rule", "_column", "_reason"]
FAILED_META = ["_source_file", "_row_number", "_status", "_outcome", "_error", "_stream"]
DUPLICATED_META = ["_source_file", "_row_number", "_stream", "_reason"]
DUPLICATED_FILE = "possibly_duplicated.csv"


def to_text(value: Any) -> str | None:
    """A cell as a string for the rejects/failed files (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, default=str).decode()
    return str(value)


_PLAIN = frozenset((str, type(None)))


# what to_text does for them
_ONE_TYPE: dict[type, Callable[[Any], str]] = {int: str, float: str, bool: str, datetime: datetime.isoformat}


def texts(values: list[Any]) -> list[str | None]:
    """to_text of every value; a list of strings and Nones as it is, one type of value without a call of
    to_text per cell."""
    types = set(map(type, values))
    if types <= _PLAIN:
        return values
    types.discard(type(None))
    convert = _ONE_TYPE.get(types.pop()) if len(types) == 1 else None
    if convert is not None:
        return [None if v is None else convert(v) for v in values]
    return [to_text(v) for v in values]


class CsvSink:
    """Streams rows (original columns + fixed metadata columns) to a CSV file; thread-safe.

    With `escape` (the default), cells and header names a spreadsheet would run as a formula get a
    leading quote (connector/cells.py).
    """

    def __init__(self, path: Path, meta: list[str], *, escape: bool = True) -> None:
        self.path, self.meta, self.count = path, meta, 0
        self._cell = neutralise if escape else _same
        self._cols: list[str] = []
        self._extra: list[str] = []
        self._lock = threading.Lock()
        self._fh: TextIO | None = None  # opened with the first row
        self._closed = False
        path.unlink(missing_ok=True)

    @property
    def file(self) -> Path | None:
        """The file, once a row was written to it (None: there is no file)."""
        return self.path if self.count else None

    def write(self, rows: list[Row]) -> None:
        """Write (original values, metadata values) pairs."""
        if not rows:
            return
        with self._lock:
            if self._fh is None:
                if self._closed:
                    raise ValueError(f"{self.path}: written after it was closed")
                for values, _ in rows:
                    self._cols.extend(c for c in values if c not in self._cols and c not in self.meta)
                self._fh = self.path.open("w", newline="", encoding="utf-8")
                self._csv = csv.writer(self._fh)
                self._csv.writerow([self._cell(c) for c in self._cols + self.meta])
            known = set(self._cols) | set(self._extra) | set(self.meta)
            for values, _ in rows:
                if values.keys() - known:
                    for c in values:
                        if c not in known:
                            known.add(c)
                            self._extra.append(c)
            # Column by column (one pass each), then row by row; a row written before a late column was
            # seen gets "" there, as close() pads it when it rewrites the file with the full header.
            cols = [texts([v.get(c) for v, _ in rows]) for c in self._cols]
            cols += [texts([m[k] for _, m in rows]) for k in range(len(self.meta))]
            cols += [texts([v.get(c) for v, _ in rows]) for c in self._extra]
            cell = self._cell
            self._csv.writerows(["" if c is None else cell(c) for c in row] for row in zip(*cols, strict=True))
            self.count += len(rows)

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()

    def close(self) -> None:
        """Close the file; rewrite it once with the full header when columns appeared late."""
        with self._lock:
            self._closed = True
            if self._fh is None or self._fh.closed:
                return
            self._fh.close()
            if self._extra:
                self._rewrite()

    def _rewrite(self) -> None:
        n, m = len(self._cols), len(self.meta)
        # The csv module's field limit is process-wide (the CSV reader sets it per source); a rejected line
        # kept whole in `_raw` may be longer: this file is ours, read it whatever its fields' size.
        csv.field_size_limit(2**31 - 1)
        tmp = self.path.with_suffix(".tmp")
        with (
            self.path.open(newline="", encoding="utf-8") as src,
            tmp.open("w", newline="", encoding="utf-8") as dst,
        ):
            reader, writer = csv.reader(src), csv.writer(dst)
            next(reader)
            writer.writerow([self._cell(c) for c in self._cols + self._extra + self.meta])
            for row in reader:
                extra = row[n + m :] + [""] * (len(self._extra) - len(row[n + m :]))
                writer.writerow(row[:n] + extra + row[n : n + m])
        os.replace(tmp, self.path)


class ParquetSink:
    """Streams rows to a Parquet file (all string columns) through a pyarrow ParquetWriter; thread-safe."""

    def __init__(self, path: Path, meta: list[str]) -> None:
        self.path, self.meta, self.count = path, meta, 0
        self._cols: list[str] | None = None
        self._writer: Any = None
        self._lock = threading.Lock()
        path.unlink(missing_ok=True)

    @property
    def file(self) -> Path | None:
        """The file, once a row was written to it (None: there is no file)."""
        return self.path if self.count else None

    def write(self, rows: list[Row]) -> None:
        if not rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            if self._cols is None:
                self._cols = []
                for values, _ in rows:
                    self._cols.extend(c for c in values if c not in self._cols and c not in self.meta)
                names = self._cols + self.meta + ["_extra"]
                schema = pa.schema([(c, pa.string()) for c in names])
                self._writer = pq.ParquetWriter(self.path, schema)
            # Column by column: one list per column, converted to text in one pass when not all strings.
            cols: dict[str, list[str | None]] = {c: texts([v.get(c) for v, _ in rows]) for c in self._cols}
            for k, c in enumerate(self.meta):
                cols[c] = texts([m[k] for _, m in rows])
            known = set(self._cols)
            extras: list[str | None] = []
            for values, _ in rows:
                extra = {k: to_text(v) for k, v in values.items() if k not in known} if values.keys() - known else None
                extras.append(orjson.dumps(extra).decode() if extra else None)
            cols["_extra"] = extras
            self._writer.write_table(pa.table(cols, schema=self._writer.schema))
            self.count += len(rows)

    def flush(self) -> None:
        """Parquet row groups are complete once written; nothing to flush."""

    def close(self) -> None:
        """Close the writer (nothing written: no file)."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def RejectsSink(dir: Path, fmt: Literal["csv", "parquet"] = "csv", *, escape: bool = True) -> CsvSink | ParquetSink:  # noqa: N802
    """The rejects file for a run: rejects.parquet for Parquet sources (never escaped), else rejects.csv."""
    if fmt == "parquet":
        return ParquetSink(Path(dir) / "rejects.parquet", REJECT_META)
    return CsvSink(Path(dir) / "rejects.csv", REJECT_META, escape=escape)


def DuplicatedSink(dir: Path, *, escape: bool = True) -> CsvSink:  # noqa: N802
    """possibly_duplicated.csv: rows Braze may have applied more than once (source file, row, why)."""
    return CsvSink(Path(dir) / DUPLICATED_FILE, DUPLICATED_META, escape=escape)


def FailedSink(dir: Path, *, escape: bool = True) -> CsvSink:  # noqa: N802
    """failed.csv: rows not delivered after every retry (a later run can retry them)."""
    return CsvSink(Path(dir) / "failed.csv", FAILED_META, escape=escape)


def _same(cell: str) -> str:
    return cell
