"""CSV reader: a line holding one huge field against an ordinary file of the same size, in one process.

The old reader copied the whole line on every read (quadratic: 32 MiB took 12 s, 200 MiB never ended);
the block reader (connector/readers/csv_blocks.py) is linear. Prints both times and their ratio, for a
field over the limit (rejected unread) and one under it (read whole); target: ratio <= 5.

    python bench/reader_speed.py [--mb 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config import CsvOptions, Source  # noqa: E402
from connector.readers import read_source  # noqa: E402

MB = 1 << 20


def write_field_file(path: Path, field_mb: int) -> None:
    with path.open("wb") as f:
        f.write(b"id,name\n1,a\n2,")
        for _ in range(field_mb):
            f.write(b"x" * MB)
        f.write(b"\n3,c\n")


def write_plain_file(path: Path, size_mb: int) -> None:
    line = b"%d,an ordinary line of about a hundred bytes and padded with words to look like data....\n"
    with path.open("wb") as f:
        f.write(b"id,name\n")
        f.write(b"".join(line % (i % 1000) for i in range(size_mb * MB // len(line % 1000))))


def timed(path: Path, csv: CsvOptions | None = None) -> float:
    t0 = time.perf_counter()
    for _ in read_source(Source(path=str(path), csv=csv or CsvOptions()), path.parent):
        pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=32)
    mb = ap.parse_args().mb
    with tempfile.TemporaryDirectory() as tmp:
        plain, field = Path(tmp) / "plain.csv", Path(tmp) / "field.csv"
        write_plain_file(plain, mb)
        write_field_file(field, mb)
        t_plain = timed(plain)
        cases = [("over the limit (16 MiB, rejected)", timed(field)),
                 ("under the limit (read whole)", timed(field, CsvOptions(max_field_bytes=(mb + 1) * MB)))]  # fmt: skip
    print(f"ordinary {mb} MiB file: {t_plain:.2f} s (baseline)")
    for name, t in cases:
        ratio = t / t_plain if t_plain else float("inf")
        print(f"one {mb} MiB field, {name}: {t:.2f} s = {ratio:.2f} x baseline (target <= 5: "
              f"{'met' if ratio <= 5 else 'missed'})")  # fmt: skip


if __name__ == "__main__":
    main()
