"""Delta sync's fast path, remembered: each chunk's users (their key hashes) and source prints, by its content.

An unchanged re-run spent most of its CPU making, for every row read, the XXH3 hash of its user's key and its
source print (users.py, rowprint.py: two Python bytes objects and two XXH3 calls per row, 0.2 s of an
unchanged 1M-row re-run's 0.75 s on the development machine). Both are pure functions of the chunk's cells
and of the stream's configuration: this module keeps them, in a file beside the state, under a 128-bit
digest of the chunk's Arrow buffers (`content`: every column's name, type, length and the bytes its values
use) and of the print's seed (the stream's configuration, the suite, FORMAT, the connector's and pyarrow's
versions: rowprint.row_print). A chunk read again with the same digest gets them back from the file;
nothing else changes: the state's index still decides each row (state.unchanged_rows), mirror mode still
notes each row's user. A chunk whose digest differs (any cell, type or column changed, or the chunk's rows
cut elsewhere) makes them as before. Columns whose buffers this module does not read (dictionaries, lists,
structs, views) are never remembered.

The file (`<state file>.prints/<stream hash>`) is written whole at the end of a stream's read, under a
temporary name then renamed, with the chunks this run read; each entry carries the XXH3 checksum of its
arrays, checked when it is used (a torn or damaged file is ignored, never trusted). Memory: the file is
read through mmap, and the next one written as chunks go (bounded by the chunk, not the table).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import xxhash

logger = logging.getLogger(__name__)

_MAGIC = b"BCPRINTS1"
_I8 = np.dtype("<i8")


def content(table: pa.Table, seed: bytes) -> str | None:
    """The hex XXH3-128 digest of `seed` and the table's cells as its buffers hold them; None where a column
    is of a layout not read here."""
    h = xxhash.xxh3_128(seed)
    h.update(len(table.schema).to_bytes(8, "little"))
    for name, col in zip(table.column_names, table.columns, strict=True):
        h.update(json.dumps([name, str(col.type), len(col), col.num_chunks]).encode())
        for arr in col.chunks:
            if not _buffers(arr, h):
                return None
    return h.hexdigest()


def _buffers(arr: pa.Array, h: Any) -> bool:
    """Feed `h` the bytes `arr`'s values use (validity, offsets relative to the first, data), the same for the
    same values wherever the array starts in its buffers (a slice: SQL sources cut batches into chunks);
    False: a layout not read here."""
    t, n, start = arr.type, len(arr), arr.offset
    bufs = arr.buffers()
    h.update(n.to_bytes(8, "little") + arr.null_count.to_bytes(8, "little"))
    if pa.types.is_null(t):
        return len(bufs) <= 1
    if bufs[0] is not None and arr.null_count:
        h.update(_bits(bufs[0], start, n))
    if pa.types.is_boolean(t):
        h.update(_bits(bufs[1], start, n))
        return True
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        offsets = np.frombuffer(bufs[1], "<i8" if large else "<i4", start + n + 1)[start:]
        first, last = int(offsets[0]), int(offsets[-1])
        h.update(memoryview(offsets - offsets[0]) if first else memoryview(bufs[1])[: offsets.nbytes])
        if n and bufs[2] is not None:
            h.update(memoryview(bufs[2])[first:last])
        return True
    if len(bufs) == 2 and bufs[1] is not None and not pa.types.is_dictionary(t):
        try:
            width = t.bit_width
        except ValueError:
            return False
        if width % 8:
            return False
        h.update(memoryview(bufs[1])[start * width // 8 : (start + n) * width // 8])
        return True
    return False


def _bits(buf: pa.Buffer, start: int, n: int) -> bytes:
    """Bits start .. start + n of a bitmap, from bit 0, the bits past n cleared (Arrow leaves them as they were)."""
    if start % 8:
        bits = np.unpackbits(np.frombuffer(buf, np.uint8), count=start + n, bitorder="little")[start:]
        return np.packbits(bits, bitorder="little").tobytes()
    data = bytearray(memoryview(buf)[start // 8 : start // 8 + (n + 7) // 8])
    if n % 8:
        data[-1] &= (1 << (n % 8)) - 1
    return bytes(data)


class Memo:
    """One stream's remembered chunks: `get` what a digest holds, `put` what this run made, `close` to
    write the file of this run's chunks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._old: dict[str, list[int]] = {}  # digest -> [offset, n users, n rows, checksum]
        self._map: mmap.mmap | None = None
        self._new: list[tuple[str, int, int, int, int]] = []  # (digest, offset, n users, n rows, checksum)
        self._out: IO[bytes] | None = None
        self._tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        self._written = 0
        self._same = True  # every chunk so far is one of the file's, as it has it: nothing written yet
        self._failed = False
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            tail = self._map[-16:]
            if tail[8:] != _MAGIC[:8]:
                raise ValueError("no end mark")
            size = int.from_bytes(tail[:8], "little")
            head = json.loads(self._map[len(self._map) - 16 - size : len(self._map) - 16])
            self._old = {str(d): [int(x) for x in rest] for d, *rest in head}
        except (OSError, ValueError, KeyError, TypeError) as e:
            if not isinstance(e, FileNotFoundError):
                logger.debug("prints memo %s not used: %s", self.path, e)
            self._old = {}

    def get(self, digest: str) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray] | None:
        """(positions of the rows naming a user, their key hashes, each row's print) of a chunk seen before
        (the users None where they were not made then); None: not seen, or its entry is damaged."""
        entry = self._old.get(digest)
        if entry is None or self._map is None:
            return None
        off, users, rows, checksum = entry
        size = 8 * (2 * max(users, 0) + rows)
        if off < 0 or off + size > len(self._map) - 16 or xxhash.xxh3_64_intdigest(self._map[off : off + size]) != checksum:
            logger.debug("prints memo %s: entry %s damaged, not used", self.path, digest)
            del self._old[digest]  # made again, and the file written again
            return None
        body = np.frombuffer(self._map, _I8, size // 8, off).copy()  # writable, and the map is closed at the end
        if users < 0:
            return None, None, body[:rows]
        return body[:users], body[users : 2 * users], body[2 * users :]

    def again(self, digest: str) -> None:
        """A chunk whose entry get() returned whole (its users and prints), kept for the next run's file as it
        is (nothing made again)."""
        off, users, rows, checksum = self._old[digest]
        if self._same and len(self._new) < len(self._old):
            self._new.append((digest, off, users, rows, checksum))
            return
        out = self._writing()
        if out is not None and self._map is not None:
            size = 8 * (2 * max(users, 0) + rows)
            self._new.append((digest, self._written, users, rows, checksum))
            out.write(self._map[off : off + size])
            self._written += size

    def put(self, digest: str, users: tuple[np.ndarray, np.ndarray] | None, prints: np.ndarray) -> None:
        """What this run made (or got back) for a chunk, kept for the next run's file."""
        at, h = users if users is not None else (np.empty(0, np.int64), np.empty(0, np.int64))
        data = b"".join(np.ascontiguousarray(a, _I8).tobytes() for a in (at, h, prints))
        checksum = xxhash.xxh3_64_intdigest(data)
        n_users = len(at) if users is not None else -1
        old = self._old.get(digest)
        if self._same and old is not None and old[1:] == [n_users, len(prints), checksum] and len(self._new) < len(self._old):
            self._new.append((digest, old[0], n_users, len(prints), checksum))  # as the file has it: nothing to write
            return
        out = self._writing()
        if out is None:
            return
        self._new.append((digest, self._written, n_users, len(prints), checksum))
        out.write(data)
        self._written += len(data)

    def _writing(self) -> IO[bytes] | None:
        """The next file, open, with the entries so far copied from the file read (None: it cannot be written)."""
        if self._out is not None or self._failed:
            return self._out
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
            if self._same:
                assert self._map is not None or not self._new
                for i, (digest, off, users, rows, checksum) in enumerate(self._new):
                    size = 8 * (2 * max(users, 0) + rows)
                    self._out.write(self._map[off : off + size])  # type: ignore[index]
                    self._new[i] = (digest, self._written, users, rows, checksum)
                    self._written += size
            self._same = False
        except OSError as e:
            self._fail(e)
        return self._out

    def _fail(self, e: OSError) -> None:
        logger.warning("could not write the fast path's prints memo %s (%s); the next run makes them again",
                       self.path, e.strerror or e)  # fmt: skip
        self._failed = True
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

    def close(self, keep: bool) -> None:
        """Write the file of this run's chunks (`keep`: the stream's read went through; else nothing changes),
        unless it holds what the file holds already."""
        try:
            if keep and not self._failed and not (self._same and len(self._new) == len(self._old)):
                out = self._writing()
                if out is not None:
                    head = json.dumps([list(e) for e in self._new]).encode()
                    out.write(head + len(head).to_bytes(8, "little") + _MAGIC[:8])
                    out.close()
                    self._out = None
                    self._unmap()  # before the file it maps is replaced (which some systems refuse)
                    os.replace(self._tmp, self.path)
        except OSError as e:
            self._fail(e)
        finally:
            if self._out is not None:  # not kept
                self._out.close()
                self._out = None
                with contextlib.suppress(OSError):
                    self._tmp.unlink(missing_ok=True)
            self._unmap()

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
