"""Read a run's failed file back: which source rows a retry run should send again.

`failed.csv` holds every row that could not be delivered, with its original columns and `_source_file`,
`_row_number`, `_status`, `_outcome` and `_error`. A retry run (`braze-connector run PIPELINE
--retry-failed DIR`) re-reads the pipeline's own sources and keeps exactly those rows, so the rows keep
their types (Parquet), file and row number, and go through the same checks as the first time.

Rows whose outcome is "unknown" (the connection dropped after the request was sent: Braze may have applied
it) are left out unless asked for, since resending them can count an event, a purchase or an `inc` twice.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from connector.cells import restore
from connector.errors import SourceError

FAILED_FILE = "failed.csv"
# The advice for every row an SQL run did not deliver (stopped, failed, unknown, not sent): its failed file
# names rows by key, which no run re-reads, so this is the one command that applies. Messages about SQL runs
# use it (the CLI's summary, stop and abort warnings, refusals of --resume and --retry-failed).
SQL_RUN_AGAIN = (
    "run the pipeline again: an incremental cursor or delta sync makes that run send only what Braze did not "
    "confirm (without either, it sends every row again)"
)
_NEEDED = ("_source_file", "_row_number", "_outcome")
_STREAM = "_stream"


# A failed file written before the `_stream` column existed names no stream: its rows go to every stream
# that reads their file.
ANY_STREAM = ""


@dataclass
class RetrySet:
    """The rows to send again, by (stream, source file as the run reported it), and what was left out."""

    failed_file: Path
    rows: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    unknown_excluded: int = 0
    include_unknown: bool = False

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def for_stream(self, stream: str) -> dict[str, set[int]]:
        """file -> the row numbers this stream sends again."""
        out: dict[str, set[int]] = {}
        for (s, f), rows in self.rows.items():
            if s in (stream, ANY_STREAM):
                out.setdefault(f, set()).update(rows)
        return out

    def adopt(self, stream: str, files: list[Path], base_dir: Path) -> None:
        """Re-key failed rows of a project that moved: a recorded path that names none of `files` but ends
        with one file's path relative to `base_dir` (data/users.csv) is that file, when only one matches."""
        current = {str(f) for f in files}
        mine = [k for k in self.rows if k[0] in (stream, ANY_STREAM) and k[1] not in current]
        for f in files:
            try:
                rel = f.resolve().relative_to(base_dir.resolve())
            except ValueError:
                continue
            tail = "/" + rel.as_posix()
            matches = [k for k in mine if k[1].replace("\\", "/").endswith(tail)]
            if len(matches) == 1 and (matches[0][0], str(f)) not in self.rows:
                self.rows[(matches[0][0], str(f))] = self.rows.pop(matches[0])
                mine.remove(matches[0])

    def orphans(self, used: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Failed rows no stream of this run reads, given the (stream, file) pairs it reads."""
        files = {f for _s, f in used}
        return {
            (s, f): len(rows)
            for (s, f), rows in self.rows.items()
            if not ((s, f) in used or (s == ANY_STREAM and f in files))
        }

    def describe(self) -> dict[str, object]:
        """For report.json: where the rows came from and how many."""
        return {
            "failed_file": str(self.failed_file),
            "rows": self.total,
            "files": len({f for _s, f in self.rows}),
            "unknown_outcome_excluded": self.unknown_excluded,
            "include_unknown": self.include_unknown,
        }


def load_failed(path: str | Path, *, include_unknown: bool = False) -> RetrySet:
    """Read a failed file (or the report folder holding `failed.csv`) into a RetrySet.

    Raises:
        SourceError: the file is missing, unreadable or not a failed file of this tool.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / FAILED_FILE
    if not p.is_file():
        if p.name == FAILED_FILE and (p.parent / "report.json").is_file():
            return RetrySet(p, include_unknown=include_unknown)  # a run that failed no row writes no failed file
        raise SourceError(f"{p}: no failed file here; pass a run's failed.csv or the report folder holding it")
    try:
        with p.open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{p}: cannot be read ({exc})") from None
    columns = [*_NEEDED, _STREAM] if _STREAM in header else list(_NEEDED)
    try:
        reader = pacsv.open_csv(
            p,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
        if "include_columns" in str(exc) or "not found" in str(exc).lower():
            raise SourceError(
                f"{p}: not a failed file of braze-connector (it needs the columns {', '.join(_NEEDED)})"
            ) from None
        raise SourceError(f"{p}: cannot be read ({exc})") from None
    out = RetrySet(p, include_unknown=include_unknown)
    record = 0
    try:
        for batch in reader:
            files, rows, kinds = (batch.column(i).to_pylist() for i in range(3))
            streams = batch.column(3).to_pylist() if len(columns) == 4 else [ANY_STREAM] * len(files)
            for f, r, kind, stream in zip(files, rows, kinds, streams, strict=True):
                record += 1
                try:
                    row = int(r)
                except ValueError:
                    raise SourceError(
                        f"{p}, record {record}: _row_number {r!r} is not a row number"
                        + (f" (a row of an SQL source, named by its key: {SQL_RUN_AGAIN})" if "=" in r else "")
                    ) from None
                if kind == "unknown" and not include_unknown:
                    out.unknown_excluded += 1
                    continue
                # Cells a spreadsheet would run were written with a leading quote (connector/cells.py).
                out.rows.setdefault((restore(stream), restore(f)), set()).add(row)
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{p}: cannot be read ({exc})") from None
    return out
