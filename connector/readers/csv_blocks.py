"""A CSV file as byte blocks of whole lines, read in linear time, with oversized records cut out unread.

Blocks hold about `chunk_rows` lines and end after a newline outside quotes (a quoted field spanning the
cut extends the block, line by line, up to _MAX_EXTEND bytes). The buffer is a bytearray that only grows
at its end and each byte is searched once, so a single field of any size costs linear time.

Limits, so that one hostile line cannot take the memory: while a line has no end yet, the reader watches
its length and its trailing run of bytes without a delimiter or a line end. Such a run longer than
`max_field` means a field of that line is longer than `max_field` (quotes can only join runs), and a line
longer than `max_record` is too long whatever its fields; either way the rest of the line is skipped
without being kept and the line comes out as a `Block` with `rule` set: the caller rejects it. A field too
large inside a line short enough to be kept is found by the parsers (csv_reader.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

_MAX_EXTEND = 1 << 20  # bytes a block may grow to close a quoted multi-line field
_MIN_BLOCK = 64 << 10
_MAX_BLOCK = 64 << 20
_SKIP_READ = 1 << 20  # bytes read at a time while skipping an oversized line
_PREFIX = 200  # bytes of an oversized line kept for the rejects file

FIELD_TOO_LARGE = "csv.field_too_large"
RECORD_TOO_LARGE = "csv.record_too_large"


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines of the file from `first_line`; or, when `rule` is set, one line skipped as too large
    (`data` then holds its first bytes and `size` how many bytes it had)."""

    data: bytes
    first_line: int
    n_lines: int
    rule: str = ""
    size: int = 0


def record_limit(max_field: int) -> int:
    """The longest line read: four fields at the limit (64 MiB at the default 16 MiB).

    A longer line is rejected wherever it lies (cut out while reading, or found in a block by
    `longest_line`), so a row's fate does not depend on where a block happens to end.
    """
    return 4 * max_field


def longest_line(block: bytes) -> int:
    """The length in bytes of the block's longest line (line end included)."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 0x0A)
    if not len(ends):
        return len(block)
    lengths = np.diff(ends, prepend=-1)
    return max(int(lengths.max()), len(block) - 1 - int(ends[-1]))


def oversize_reason(rule: str, max_field: int, size: int) -> str:
    """The reject reason of a line with a field over the limit, or a line over the record limit."""
    if rule == FIELD_TOO_LARGE:
        what = f"a field of this line is over csv.max_field_bytes ({max_field:,} bytes)"
    else:
        what = f"the line ({size:,} bytes) is over {record_limit(max_field):,} bytes (4 x csv.max_field_bytes)"
    return f"{what}; raise source.csv.max_field_bytes in the pipeline file to read it"


def read_blocks(
    fh: BinaryIO,
    *,
    quote: bytes,
    delimiter: bytes,
    chunk_rows: int,
    est_line: int,
    line_no: int,
    max_field: int,
) -> Iterator[Block]:
    """Blocks of about `chunk_rows` lines from `fh`, whose next line is line `line_no`."""
    max_record = record_limit(max_field)
    target = min(max(chunk_rows * est_line, _MIN_BLOCK), _MAX_BLOCK)
    buf = bytearray()
    eof = False
    while True:
        # nl_end: just after the last line end in buf (0: none); run_start: where its trailing run of
        # bytes without a delimiter or line end begins. Each read searches only the new bytes.
        nl_end, run_start = _tail_state(buf, delimiter)
        oversize = ""
        while not eof and not oversize and (len(buf) < target or nl_end == 0):
            data = fh.read(max(target - len(buf), _MIN_BLOCK))
            if not data:
                eof = True
                break
            old = len(buf)
            buf += data
            nl = buf.rfind(b"\n", old)
            if nl >= 0:
                nl_end = nl + 1
            run_start = max(run_start, nl_end, buf.rfind(delimiter, max(old, nl_end)) + 1)
            if len(buf) - run_start > max_field + 2:  # + 2: the quotes around a quoted field
                oversize = FIELD_TOO_LARGE
            elif len(buf) - nl_end > max_record:
                oversize = RECORD_TOO_LARGE
        if oversize:
            if nl_end:
                head = bytes(buf[:nl_end])
                del buf[:nl_end]
                n_lines = _count_lines(head)
                yield Block(head, line_no, n_lines)
                line_no += n_lines
            prefix, size, buf, eof = _skip_line(fh, buf)
            yield Block(prefix, line_no, 1, oversize, size)
            line_no += 1
            continue
        if not buf:
            return  # the loop above stops with an empty buffer only at the end of the file
        cut = len(buf)
        if not eof:
            cut, eof = _balance_quotes(fh, buf, nl_end, quote)
        with memoryview(buf) as view:
            block = bytes(view[:cut])  # one copy (buf[:cut] would copy twice)
        del buf[:cut]
        n_lines = _count_lines(block)
        yield Block(block, line_no, n_lines)
        line_no += n_lines
        target = min(max(chunk_rows * max(len(block) // n_lines, 1), _MIN_BLOCK), _MAX_BLOCK)


def _tail_state(buf: bytearray, delimiter: bytes) -> tuple[int, int]:
    nl_end = buf.rfind(b"\n") + 1
    return nl_end, max(nl_end, buf.rfind(delimiter, nl_end) + 1)


def count_byte(data: bytes | bytearray, byte: int, end: int | None = None) -> int:
    """How many times `byte` occurs in data[:end] (numpy: several times faster than bytes.count)."""
    # The view is dropped before returning: a bytearray with a live export cannot be resized.
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8, count=len(data) if end is None else end) == byte))


def _count_lines(block: bytes | bytearray) -> int:
    return count_byte(block, 0x0A) + (0 if block.endswith(b"\n") else 1)


def _balance_quotes(fh: BinaryIO, buf: bytearray, cut: int, quote: bytes) -> tuple[int, bool]:
    """Move a cut made inside a quoted field to the line end that closes it, reading on if needed.

    Every quote toggles the in-quotes state (doubled quotes toggle twice), so parity tells. No balance
    within _MAX_EXTEND bytes: a stray quote, the cut stays (the careful parser rejects that line).
    Returns (cut, end of file reached).
    """
    odd = quote in buf and count_byte(buf, quote[0], cut) % 2 == 1
    first_cut = cut
    while odd and cut < first_cut + _MAX_EXTEND:
        nxt = buf.find(b"\n", cut)
        if nxt < 0:
            if len(buf) - first_cut > _MAX_EXTEND:
                break
            more = fh.read(_MIN_BLOCK)
            if not more:
                return len(buf), True
            buf += more
            continue
        odd ^= buf.count(quote, cut, nxt + 1) % 2 == 1
        cut = nxt + 1
    return (first_cut if odd else cut), False


def _skip_line(fh: BinaryIO, buf: bytearray) -> tuple[bytes, int, bytearray, bool]:
    """Read past the end of the line `buf` starts (it holds no line end), keeping only its first bytes.

    Returns (first bytes, the line's size in bytes, what follows the line, end of file reached).
    """
    prefix = bytes(buf[:_PREFIX])
    size = len(buf)
    while True:
        data = fh.read(_SKIP_READ)
        if not data:
            return prefix, size, bytearray(), True
        nl = data.find(b"\n")
        if nl >= 0:
            return prefix, size + nl + 1, bytearray(data[nl + 1 :]), False
        size += len(data)
