"""Partitioned runs (`run --partition K/N`): a disjoint part of every stream, the same whichever machine reads it.

Each stream is split one of two ways (`stream.partition_by`, default `auto`):

- `file` (auto: a source of several files): whole files, by a CRC-32 of the file's path relative to the
  source's folder, so a file's partition does not depend on where a worker mounts the data or on which
  other files exist. One user's rows in two files may land in two partitions.
- `identifier` (auto: a single file): every partition reads the whole source and keeps the rows whose
  identifier value hashes to it (CRC-32 of the value as text; a user alias hashes name and label; Live
  Activities their activity_id), so one user's rows stay in one partition, in source order. Rows without
  a value and lines that could not be parsed go by their row number.

Rows of other partitions are not read for the accounting: each partition's report counts only its rows,
so the reports of all N partitions add up to the whole table (report/merge.py).
"""

from __future__ import annotations

import glob
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from connector import config
from connector.errors import ConfigError
from connector.records import Chunk

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SEP = "\x1f"  # between the parts of a composite identifier (alias name and label)


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition k of n (1-based)."""

    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`K/N` with 1 <= K <= N.

        Raises:
            ConfigError: anything else.
        """
        m = _SPEC.match(text)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ConfigError(f"--partition {text!r}: expected K/N with 1 <= K <= N, such as 2/4")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def label(self) -> str:
        """`p2of4`: for run ids and report folders."""
        return f"p{self.k}of{self.n}"

    def owns(self, key: str) -> bool:
        """Whether a key (a file's relative path, an identifier value) belongs to this partition."""
        return zlib.crc32(key.encode("utf-8")) % self.n == self.k - 1


def split_by(stream: config.Stream, files: list[Path]) -> Literal["file", "identifier"]:
    """How a stream is split: its `partition_by`, or for `auto` whole files when it has several."""
    if stream.partition_by != "auto":
        return stream.partition_by
    return "file" if len(files) > 1 else "identifier"


def source_root(source: config.Source, base_dir: Path) -> Path:
    """The folder a source's files are named relative to: the directory, the glob's fixed part, or the file's folder."""
    assert source.path is not None, "SQL sources are not split by file (pipeline._plan refuses them)"
    raw = Path(source.path).expanduser()
    path = raw if raw.is_absolute() else Path(base_dir) / raw
    text = str(path)
    if glob.has_magic(text):
        fixed = text[: min(text.index(c) for c in "*?[" if c in text)]
        return Path(fixed if fixed.endswith(os.sep) else os.path.dirname(fixed))
    return path if path.is_dir() else path.parent


def file_key(path: Path, root: Path) -> str:
    """A file's path relative to its source's root, with forward slashes (the partition hash input)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.name


def partition_files(files: list[Path], root: Path, part: Partition) -> list[Path]:
    """The files of this partition (whole files, by their relative path)."""
    return [f for f in files if part.owns(file_key(f, root))]


def key_columns(stream: config.Stream) -> list[config.Value]:
    """The values that identify whose row it is: the identifier (an alias's name and label), or for Live
    Activities the activity id (the writer keeps each activity's updates in order)."""
    ident = stream.identifier
    if ident is not None:
        if ident.user_alias is not None:
            return [ident.user_alias.name, ident.user_alias.label]
        value = getattr(ident, ident.kind)
        assert isinstance(value, config.Value)
        return [value]
    assert stream.live_activity is not None  # the model requires an identifier for every other kind
    return [stream.live_activity.activity_id]


def partition_rows(chunks: Iterator[Chunk], stream: config.Stream, root: Path, part: Partition) -> Iterator[Chunk]:
    """Keep the rows (and parse rejects) of this partition, in source order; chunks left empty are dropped."""
    values = key_columns(stream)
    for chunk in chunks:
        keep = _owned(chunk, values, root, part)
        rejects = [r for r in chunk.rejects if part.owns(_row_key(r.ref.file, r.ref.row, root))]
        if not any(keep) and not rejects:
            continue
        kept = chunk if all(keep) else chunk.filter(keep)
        kept.rejects = rejects
        yield kept


def _row_key(file: str, row: int, root: Path) -> str:
    return f"{file_key(Path(file), root)}:{row}"


def _owned(chunk: Chunk, values: list[config.Value], root: Path, part: Partition) -> list[bool]:
    """One bool per row: the row's identifier hashes to this partition (no value: its row number does)."""
    n = len(chunk)
    if n == 0:
        return []
    parts: list[pa.Array] = []
    for v in values:
        if v.column is None:
            parts.append(pa.array([str(v.value)] * n, pa.string()))
        elif v.column in chunk.table.column_names:
            parts.append(pc.cast(chunk.table.column(v.column).combine_chunks(), pa.string()))
        else:
            parts.append(pa.nulls(n, pa.string()))
    # Trimmed as the mapping trims emails and phones, so " a@b.c" and "a@b.c" stay together.
    key = pc.utf8_trim_whitespace(parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, _SEP))
    # Hash each distinct value once (a user's many event rows cost one hash).
    encoded = pc.dictionary_encode(key)
    owned = [part.owns(k) if k else None for k in encoded.dictionary.to_pylist()]
    out = []
    for i, idx in enumerate(encoded.indices.to_pylist()):
        mine = owned[idx] if idx is not None else None
        out.append(part.owns(_row_key(chunk.file, chunk.row_numbers[i], root)) if mine is None else mine)
    return out


def plan_partition(stream: config.Stream, files: list[Path], base_dir: Path,
                   part: Partition) -> tuple[list[Path], Path | None]:  # fmt: skip
    """(the files this partition reads, the root for partition_rows when its rows are split by identifier)."""
    root = source_root(stream.source, base_dir)
    if split_by(stream, files) == "file":
        return partition_files(files, root, part), None
    return files, root
