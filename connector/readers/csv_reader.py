"""CSV -> chunks of string columns; malformed lines become parse rejects.

CSV is read in byte blocks cut at line ends, so memory follows `chunk_rows`, not the file size. Each block
takes a fast path (pyarrow parses it whole) when it is clean: it decodes in the declared encoding, has no
lone quote in the middle of a field, and pyarrow finds one well-formed record per physical line. Any other
block (a malformed line, undecodable bytes, a blank line, a quoted multi-line field) is parsed line by line
with Python's csv module, which knows the physical line of every record, and its bad lines become
`Rejected(stage="parse")`.

Row numbers: the physical line number of the record's first line (the header is line 1). A quoted field
may span lines; the record then carries the number of the line it starts on and the lines after it are
not counted as rows. A quote left open is rejected as `csv.quoting` on its first line alone, and parsing
resumes on the next line. Blank lines are not rows: they are skipped, neither read nor rejected.
Encodings must be ASCII-compatible (utf-8, latin-1, cp1252, ...), since lines are cut on the byte b"\\n".

Limits (csv_blocks.py reads the blocks in linear time): a field over `csv.max_field_bytes` rejects its row
as `csv.field_too_large` (a line over 4 x that, `csv.record_too_large`, is skipped without being kept); a
header over `source.max_columns` columns refuses the file.
"""

from __future__ import annotations

import csv
import io
import logging
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from connector import arrow_values, config
from connector.errors import SourceError
from connector.readers.csv_blocks import (
    FIELD_TOO_LARGE,
    RECORD_TOO_LARGE,
    Block,
    longest_line,
    oversize_reason,
    read_blocks,
    record_limit,
)
from connector.readers.files import open_file
from connector.records import Chunk, Rejected, RowRef

log = logging.getLogger(__name__)

_CSV_FIELD_LIMIT = "field larger than field limit"


class _Dialect:
    """The CSV options of a source, checked once."""

    def __init__(self, path: Path, opts: config.CsvOptions) -> None:
        for name in ("delimiter", "quote_char"):
            val = getattr(opts, name)
            if len(val) != 1 or len(val.encode("ascii", "ignore")) != 1:
                raise SourceError(f"{path}: csv.{name} must be one ASCII character, got {val!r}")
        try:
            "".encode(opts.encoding)
        except LookupError:
            raise SourceError(
                f"{path}: unknown csv.encoding {opts.encoding!r}; use e.g. utf-8 or latin-1"
            ) from None
        self.delimiter = opts.delimiter
        self.quote = opts.quote_char
        self.encoding = opts.encoding
        self.utf8 = opts.encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
        self.nulls = frozenset(opts.null_values)
        self.max_field = opts.max_field_bytes
        self.max_record = record_limit(opts.max_field_bytes)
        self.dbyte = opts.delimiter.encode()
        q, d = (f"\\x{{{ord(c):02x}}}" for c in (opts.quote_char, opts.delimiter))
        # A quote with a non-delimiter, non-quote, non-line-end byte on both sides: a quoting error or a
        # literal quote inside an unquoted field; either way the block takes the careful path.
        self.lone_quote = f"[^{d}{q}\\r\\n]{q}[^{d}{q}\\r\\n]"
        self.qbyte = opts.quote_char.encode()

    def reader(self, lines: Iterator[str]) -> Any:
        return csv.reader(
            lines, delimiter=self.delimiter, quotechar=self.quote, doublequote=True, strict=True
        )


def read_csv(
    path: Path, opts: config.CsvOptions, chunk_rows: int, max_columns: int = config.MAX_COLUMNS
) -> Iterator[Chunk]:
    """CSV as chunks of string columns; malformed lines become parse rejects. A zero-byte file is an
    empty table: no chunk at all.

    Raises:
        SourceError: not a CSV file, no header, a header over `max_columns` columns or unreadable.
    """
    dialect = _Dialect(path, opts)
    with open_file(path) as fh:
        head = _header(fh, path, opts, dialect, max_columns)
        if head is None:
            log.warning("%s is empty (0 bytes): read as a table with no rows", path)
            return
        names, header_bytes = head
        line_no = 2 if opts.header else 1
        est_line = max(header_bytes if opts.header else 64, 16)
        blocks = read_blocks(fh, quote=dialect.qbyte, delimiter=dialect.dbyte, chunk_rows=chunk_rows,
                             est_line=est_line, line_no=line_no, max_field=dialect.max_field)  # fmt: skip
        for block in blocks:
            if block.rule:
                yield _oversize(path, block, names, dialect)
            else:
                yield from _parse_block(path, block, names, dialect, chunk_rows)


def csv_columns(path: Path, opts: config.CsvOptions, max_columns: int = config.MAX_COLUMNS) -> list[str] | None:
    """The columns of a CSV file (its header, or csv.column_names), read as read_csv would; None when the
    file is empty (0 bytes, or a byte-order mark alone).

    Raises:
        SourceError: unreadable file, bad CSV options, or a header that cannot be read.
    """
    dialect = _Dialect(path, opts)
    with open_file(path) as fh:
        head = _header(fh, path, opts, dialect, max_columns)
    return None if head is None else head[0]


def _header(fh: BinaryIO, path: Path, opts: config.CsvOptions, dialect: _Dialect,
            max_columns: int) -> tuple[list[str], int] | None:  # fmt: skip
    """Read the header (when there is one) and leave `fh` at the first data line: (names, header bytes);
    None for an empty file."""
    head = fh.read(4)
    if head.startswith(b"PAR1"):
        raise SourceError(
            f"{path}: this is a Parquet file; set source.format: parquet (or rename it .parquet)"
        )
    bom = head.startswith(b"\xef\xbb\xbf") and dialect.utf8
    if head == b"" or (bom and len(head) == 3):
        return None
    fh.seek(3 if bom else 0)
    start = fh.tell()
    names: list[str]
    if opts.header:
        names = _read_header(path, fh, dialect)
        if opts.column_names is not None:
            names = list(opts.column_names)
    elif opts.column_names:
        names = list(opts.column_names)
    else:
        raise SourceError(f"{path}: csv.header is false, so csv.column_names must list the columns")
    _check_names(path, names, max_columns)
    return names, fh.tell() - start


def _read_header(path: Path, fh: BinaryIO, dialect: _Dialect) -> list[str]:
    """The header line's names; a line too long to keep, or one that does not parse, is a SourceError."""
    limit = record_limit(dialect.max_field)
    header = fh.readline(limit + 1)
    if len(header) > limit:
        raise SourceError(
            f"{path}, line 1: the header line is over {limit:,} bytes (4 x csv.max_field_bytes); "
            "is this a CSV file? Raise source.csv.max_field_bytes if the header really is that long"
        )
    if not header.strip():
        raise SourceError(
            f"{path}: the first line is blank; a header line is expected (a 0-byte file is read as an empty table)"
        )
    try:
        text = header.decode(dialect.encoding)
        csv.field_size_limit(dialect.max_field)
        return list(next(dialect.reader(iter([text]))))
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}, line 1: the header line cannot be read ({e}); check csv.encoding") from None
    except csv.Error as e:
        if _CSV_FIELD_LIMIT in str(e):
            raise SourceError(
                f"{path}, line 1: a header name is over csv.max_field_bytes ({dialect.max_field:,}); "
                "raise source.csv.max_field_bytes or fix the header"
            ) from None
        raise SourceError(f"{path}, line 1: the header line cannot be read ({e}); check its quoting") from None


def _check_names(path: Path, names: list[str], max_columns: int) -> None:
    if len(names) > max_columns:
        raise SourceError(
            f"{path}: the header has {len(names):,} columns, over source.max_columns ({max_columns:,}); "
            "raise source.max_columns in the pipeline file if the file really has that many"
        )
    seen: set[str] = set()
    for i, n in enumerate(names, start=1):
        if not n:
            raise SourceError(f"{path}: header column {i} has no name; name it or set csv.column_names")
        if n in seen:
            raise SourceError(
                f"{path}: the header names column '{n}' twice; rename one or set csv.column_names"
            )
        seen.add(n)


def _oversize(path: Path, block: Block, names: list[str], dialect: _Dialect) -> Chunk:
    """A line skipped unread for its size: a chunk with no rows and the line's parse reject."""
    reason = oversize_reason(block.rule, dialect.max_field, block.size)
    shown = block.data.decode(dialect.encoding, "backslashreplace").rstrip("\r\n") + "…"
    reject = Rejected(RowRef(str(path), block.first_line), "parse", block.rule, reason, values={"_raw": shown})
    empty = pa.table({n: arrow_values.array([], pa.string()) for n in names})
    return Chunk(str(path), empty, [], [reject])


def _parse_block(path: Path, blk: Block, names: list[str], dialect: _Dialect, chunk_rows: int) -> Iterator[Chunk]:
    block, first_line, n_lines = blk.data, blk.first_line, blk.n_lines
    table = _fast_parse(block, n_lines, names, dialect)
    if table is not None:
        rows: Sequence[int] = range(first_line, first_line + n_lines)
        rejects: list[Rejected] = []
    else:
        table, rows, rejects = _careful_parse(str(path), block, first_line, names, dialect)
        if rejects:
            log.info(
                "%s: %d malformed line(s) between lines %d and %d",
                path,
                len(rejects),
                first_line,
                first_line + n_lines - 1,
            )
    if table.num_rows <= chunk_rows:
        yield Chunk(str(path), table, rows, rejects)
        return
    prev_hi = 0
    for off in range(0, table.num_rows, chunk_rows):
        part = rows[off : off + chunk_rows]
        last = off + chunk_rows >= table.num_rows
        hi = part[-1]
        mine = [r for r in rejects if r.ref.row > prev_hi and (last or r.ref.row <= hi)]
        prev_hi = hi
        yield Chunk(str(path), table.slice(off, chunk_rows), part, mine)


def _fast_parse(block: bytes, n_lines: int, names: list[str], dialect: _Dialect) -> pa.Table | None:
    """pyarrow parses a clean block whole; None when the block needs the careful path."""
    if dialect.utf8:
        data = block  # pyarrow checks UTF-8 itself and raises, which sends the block the careful way
    else:
        try:
            data = block.decode(dialect.encoding).encode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(block) > dialect.max_record and longest_line(block) > dialect.max_record:
        return None  # the careful path rejects the long line
    if dialect.qbyte in data and _has_lone_quote(data, dialect):
        return None
    if data.startswith((b"\n", b"\r\n")) or _has_blank_line(data):
        return None  # blank lines are skipped by the careful path
    bad: list[int] = []

    def on_invalid(row: Any) -> str:
        bad.append(1)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            # One thread: the same CPU time or less than pyarrow's pool (measured), and the run's other
            # work (and the HTTP child) has the other core.
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=dialect.delimiter,
                quote_char=dialect.quote,
                double_quote=True,
                newlines_in_values=False,  # multi-line records fail the line count check below
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=sorted(dialect.nulls),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException):
        return None
    if bad or table.num_rows != n_lines:
        return None  # malformed or multi-line records: the careful path knows their line numbers
    if any((pc.max(pc.binary_length(c)).as_py() or 0) > dialect.max_field for c in table.columns):
        return None  # a field over the limit: the careful path rejects its row
    return table


def _has_blank_line(data: bytes) -> bool:
    """Whether the block holds "\\n\\n" or "\\n\\r\\n" (one numpy pass: `in` is several times slower)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == 0x0A)
    gaps = np.diff(ends)
    if (gaps == 1).any():
        return True
    two = ends[:-1][gaps == 2]
    return bool((raw[two + 1] == 0x0D).any())


def _has_lone_quote(data: bytes, dialect: _Dialect) -> bool:
    """RE2 over the whole block (pyarrow.compute): many times faster than Python's re on large blocks."""
    offsets = pa.py_buffer(struct.pack("=qq", 0, len(data)))  # not pa.array([...]): that imports pandas
    arr = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    return bool(pc.match_substring_regex(arr, dialect.lone_quote)[0].as_py())


class _Feed:
    """Decoded lines handed to csv.reader from a position, remembering how far it has read."""

    def __init__(self, lines: list[tuple[int, str]], pos: int) -> None:
        self.lines = lines
        self.pos = pos

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1][1]


def _careful_parse(
    file: str, block: bytes, first_line: int, names: list[str], dialect: _Dialect
) -> tuple[pa.Table, list[int], list[Rejected]]:
    """Parse a block record by record, rejecting undecodable, wrongly quoted and wrong-width lines."""
    rejects: list[Rejected] = []
    lines: list[tuple[int, str]] = []
    for i, raw in enumerate(io.BytesIO(block)):
        n = first_line + i
        if len(raw) > dialect.max_record:
            reason = oversize_reason(RECORD_TOO_LARGE, dialect.max_field, len(raw))
            shown = raw[:200].decode(dialect.encoding, "backslashreplace") + "…"
            rejects.append(Rejected(RowRef(file, n), "parse", RECORD_TOO_LARGE, reason, values={"_raw": shown}))
            continue
        try:
            lines.append((n, raw.decode(dialect.encoding)))
        except UnicodeDecodeError as e:
            shown = raw.decode(dialect.encoding, "backslashreplace").rstrip("\r\n")
            reason = f"bytes at offset {e.start} of the line are not valid {dialect.encoding}; re-save the file as {dialect.encoding} or set csv.encoding"
            rejects.append(Rejected(RowRef(file, n), "parse", "csv.encoding", reason, values={"_raw": shown}))
    width = len(names)
    cols: list[list[str | None]] = [[] for _ in names]
    rows: list[int] = []
    nulls = dialect.nulls
    pos = 0
    csv.field_size_limit(dialect.max_field)  # the csv module's limit is process-wide: set it per block
    while pos < len(lines):
        feed = _Feed(lines, pos)
        reader = dialect.reader(feed)
        pos = len(lines)
        while True:
            start = feed.pos
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                n, text = lines[start]
                rule, reason = "csv.quoting", f"invalid quoting ({e}); close every quoted field and double quotes inside it"
                if _CSV_FIELD_LIMIT in str(e):
                    rule, reason = FIELD_TOO_LARGE, oversize_reason(FIELD_TOO_LARGE, dialect.max_field, 0)
                    text = text[:200] + "…"
                rejects.append(Rejected(RowRef(file, n), "parse", rule, reason, values={"_raw": text.rstrip("\r\n")}))
                if feed.pos - start > 1:
                    pos = start + 1  # an open quote swallowed later lines: resume right after its line
                    break
                continue
            if not rec:
                continue
            if len(rec) != width:
                text = "".join(t for _, t in lines[start : feed.pos]).rstrip("\r\n")
                reason = (
                    f"expected {width} fields, found {len(rec)}; check delimiters and quoting on this line"
                )
                rejects.append(
                    Rejected(
                        RowRef(file, lines[start][0]),
                        "parse",
                        "csv.column_count",
                        reason,
                        values={"_raw": text},
                    )
                )
                continue
            rows.append(lines[start][0])
            for j, v in enumerate(rec):
                cols[j].append(None if v in nulls else v)
    table = pa.table({n: arrow_values.array(c, pa.string()) for n, c in zip(names, cols, strict=True)})
    rejects.sort(key=lambda r: r.ref.row)
    return table, rows, rejects
