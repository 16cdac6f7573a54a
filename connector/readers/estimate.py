"""How many data rows a stream's files hold, before they are read (progress totals and the mode choice)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from connector.config import Source
from connector.errors import SourceError
from connector.readers.csv_blocks import count_byte

# CSV sources up to this size have their lines counted; bigger ones are estimated from a sample.
COUNT_CSV_BYTES = 32 * 2**20
SAMPLE_BYTES = 2**20


def estimate_rows(source: Source, files: Sequence[Path]) -> tuple[int, bool]:
    """Data rows in the source: (count, exact?). Parquet from its metadata (exact); CSV lines counted when small."""
    total, exact = 0, True
    for path in files:
        if is_parquet(source, path):
            total += _parquet_rows(path)
        else:
            n, e = _csv_rows(path, source.csv.header)
            total += n
            exact = exact and e
    return total, exact


def is_parquet(source: Source, path: Path) -> bool:
    """Whether a source file is read as Parquet (explicit format, else the extension)."""
    if source.format != "auto":
        return source.format == "parquet"
    return path.suffix.lower() in (".parquet", ".pq")


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq  # only the footer is read

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise SourceError(f"{path}: cannot read the Parquet metadata ({e})") from None


def _csv_rows(path: Path, header: bool) -> tuple[int, bool]:
    """Line count (minus the header) when the file is small; else size / mean line length of a sample."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if size <= COUNT_CSV_BYTES:
                data = f.read()
                lines = count_byte(data, 0x0A) + (1 if data and not data.endswith(b"\n") else 0)
                # Lines, not records: blank lines and quoted line breaks make this an estimate too.
                return max(0, lines - (1 if header else 0)), False
            sample = f.read(SAMPLE_BYTES)
    except OSError as e:
        raise SourceError(f"{path}: cannot read the file ({e.strerror})") from None
    per_line = len(sample) / max(1, sample.count(b"\n"))
    return int(size / per_line) - (1 if header else 0), False
