"""Parquet -> chunks with the file's own types (row numbers are 1-based row indices).

The file is read with ``pre_buffer=False``: with pyarrow's default (True) the reader's read-range cache
keeps the bytes of every row group it has read until the reader is closed, so memory grows with the file
(about +270 MB over a 10M-row, 280 MB file) instead of following ``chunk_rows``. Pre-buffering only pays
on high-latency filesystems; on local files the speed is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from connector.errors import SourceError
from connector.readers.files import open_file
from connector.records import Chunk


def read_parquet(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Parquet batches with the file's own types; row numbers are 1-based row indices."""
    with open_file(path) as fh:
        try:
            pf = pq.ParquetFile(fh, pre_buffer=False)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise SourceError(
                f"{path}: not a readable Parquet file ({e}); check the file or set source.format"
            ) from None
        start = 1
        try:
            for batch in pf.iter_batches(batch_size=chunk_rows):
                n = batch.num_rows
                yield Chunk(str(path), pa.Table.from_batches([batch]), list(range(start, start + n)))
                start += n
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{path}: the Parquet file is damaged near row {start} ({e})") from None
