"""How many data rows a stream's files hold, before they are read (progress totals and the mode choice)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from connector.config import CsvOptions, Source
from connector.errors import SourceError

# CSV sources up to this size have their lines counted; bigger ones are estimated from a sample.
COUNT_CSV_BYTES = 32 * 2**20
SAMPLE_BYTES = 2**20


def estimate_rows(source: Source, files: Sequence[Path]) -> tuple[int, bool]:
    """Data rows in the source: (count, exact?). Parquet from its metadata (exact); CSV records counted
    when small, else estimated from a sample (never exact: see _csv_rows)."""
    total, exact = 0, True
    for path in files:
        if is_parquet(source, path):
            total += _parquet_rows(path)
        else:
            n, e = _csv_rows(path, source.csv)
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


def _csv_rows(path: Path, csv: CsvOptions) -> tuple[int, bool]:
    """Records (minus the header) of a small file, counted once; else the file's size over the mean record
    length of its first SAMPLE_BYTES. An estimate either way (exact False): a stray quote, an encoding
    the count does not decode or a line the reader rejects can make the count differ from the rows read."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if size <= COUNT_CSV_BYTES:
                return max(0, count_records(f.read(), csv.quote_char) - (1 if csv.header else 0)), False
            sample = f.read(SAMPLE_BYTES)
    except OSError as e:
        raise SourceError(f"{path}: cannot read the file ({e.strerror})") from None
    cut = sample.rfind(b"\n") + 1 or len(sample)  # whole lines: a record cut in two would count twice
    per_record = cut / max(1, count_records(sample[:cut], csv.quote_char))
    return max(0, int(size / per_record) - (1 if csv.header else 0)), False


def count_records(data: bytes, quote_char: str = '"') -> int:
    """CSV records in `data`, as the reader reads them: a line break inside a quoted field does not end a
    record (a doubled quote toggles the quoting twice, so parity tells), and blank lines are skipped."""
    if not data:
        return 0
    import numpy as np

    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 0x0A)
    quote = quote_char.encode()
    if len(quote) == 1 and quote in data:
        quotes = np.flatnonzero(arr == quote[0])
        ends = ends[np.searchsorted(quotes, ends) % 2 == 0]  # an even number of quotes before: outside
    starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
    lengths = ends - starts
    cr_only = (lengths == 1) & (arr[np.minimum(starts, len(arr) - 1)] == 0x0D)
    blank = int(np.count_nonzero((lengths == 0) | cr_only))
    tail = data[int(ends[-1]) + 1 :] if len(ends) else data
    return len(ends) - blank + (1 if tail.strip(b"\r") else 0)
