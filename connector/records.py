"""Small value types passed between the stages of a run."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Literal, overload

import orjson

Stage = Literal["parse", "mapping", "contract", "expectation", "destination"]
ObjectKind = Literal["attributes", "events", "purchases", "canvas_trigger", "live_activity"]


@dataclass(frozen=True, slots=True)
class RowRef:
    """Where a row came from: the source file and its row number (or, for SQL sources, its key).

    For CSV the row number is the physical line number in the file (the header is line 1, so the first
    data row is line 2). For Parquet it is the 1-based row index within the file. For an SQL source `file`
    names the source (`$PG_URL:public.users`), `row` is the 1-based position in the result, and `key`
    ("id=42") names the row by its key columns when the source has a key; files and reports show the key
    instead of the row number.
    """

    file: str
    row: int
    key: str | None = None

    @property
    def where(self) -> int | str:
        """The row for files and messages: its key when it has one, else its row number."""
        return self.key if self.key is not None else self.row

    def __str__(self) -> str:
        return f"{self.file}:{self.where}"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row that will not be delivered, with the rule it broke.

    `values` holds the row's original columns (as read, before mapping) so the rejects file can carry them;
    for a row that could not be parsed at all it holds {"_raw": "<the line as text>"}.
    """

    ref: RowRef
    stage: Stage
    rule: str
    reason: str
    column: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        ref = self.ref
        where = f"{ref.file}, key {ref.key}" if ref.key is not None else f"{ref.file}, row {ref.row}"
        if self.column:
            where += f", column '{self.column}'"
        return f"{where}: [{self.rule}] {self.reason}"


@dataclass(frozen=True, slots=True)
class Failed:
    """A valid row that could not be delivered after every retry (or whose outcome is unknown)."""

    ref: RowRef
    error: str
    status: int | None = None
    outcome: Literal["failed", "unknown"] = "failed"
    values: dict[str, Any] = field(default_factory=dict)


class RowKeys(Sequence[str]):
    """Row keys made only when read (readers/sql/keys.py): most chunks of an SQL source never show one, and
    a text per row of every chunk read cost more than the rest of reading. Equal to a list of the same keys."""

    def select(self, mask: Any, rows: Sequence[int]) -> RowKeys:
        """The keys of the rows where `mask` (an Arrow boolean array) is true; `rows`: their row numbers."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class Chunk:
    """A bounded slice of one source file, as read.

    `table` holds the rows that parsed (CSV: every column as a string, nulls where a null marker stood;
    Parquet: the file's own types). `row_numbers[i]` is the RowRef row of `table` row i. `rejects` holds
    the rows of this slice that could not be parsed (stage "parse"). `keys[i]`, for SQL sources with key
    columns, names row i by its key ("id=42").
    """

    file: str
    table: Any  # pyarrow.Table
    row_numbers: Sequence[int]  # a list, or a range for consecutive rows (no Python int per row)
    rejects: list[Rejected] = field(default_factory=list)
    keys: Sequence[str] | None = None  # a list, or RowKeys made when read

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def ref(self, i: int) -> RowRef:
        return RowRef(self.file, self.row_numbers[i], None if self.keys is None else self.keys[i])

    def values(self, i: int) -> dict[str, Any]:
        """The original columns of row i (for the rejects file)."""
        return dict(self.table.slice(i, 1).to_pylist()[0])

    def filter(self, keep: Any) -> Chunk:
        """The rows where `keep` (a sequence of bools, or a numpy bool array, one per row) is true; parse
        rejects are not carried."""
        import pyarrow as pa

        from connector import arrow_values

        if len(keep) != len(self.row_numbers):
            raise ValueError(f"filter: {len(keep)} flags for {len(self.row_numbers)} rows")
        if hasattr(keep, "dtype"):  # numpy (delta's fast path): no Python bool per row, nothing to copy when none stay
            mask = arrow_values.from_numpy(keep)
            rows = self.row_numbers
            kept = list(map(rows.__getitem__, keep.nonzero()[0].tolist())) if keep.any() else []
        else:
            mask = arrow_values.array(keep, pa.bool_())
            kept = list(compress(self.row_numbers, keep))  # in C: a chunk's fast path may drop 50,000 rows at once
        keys: Sequence[str] | None = None
        if isinstance(self.keys, RowKeys):
            keys = self.keys.select(mask, kept)
        elif self.keys is not None:
            keys = list(compress(self.keys, keep))
        return Chunk(self.file, self.table.filter(mask), kept, [], keys)


class EncodedObjects(Sequence[dict[str, Any]]):
    """Objects held as their JSON encoding: object j is `data[offsets[j]:offsets[j + 1] - 1]` (each object is
    followed by a comma in `data`, so a run of objects j..k-1 is one slice, minus its last comma).

    Reading `objects[j]` decodes object j into a dict once (the same dict on every later read); the packer
    (delivery/batching.py) takes the bytes without building any dict. `cached` seeds dicts already built
    (rows the contract checked one by one).
    """

    __slots__ = ("data", "offsets", "_dicts", "_listed")

    def __init__(
        self, data: bytes | memoryview, offsets: Sequence[int], cached: dict[int, dict[str, Any]] | None = None
    ) -> None:
        self.data = data  # bytes, or a view of an Arrow buffer (no copy)
        self.offsets = offsets  # n + 1 ascending byte offsets, offsets[0] == 0 (a list or a numpy array)
        self._dicts: dict[int, dict[str, Any]] = cached if cached is not None else {}
        self._listed: list[int] | None = None  # the offsets as a list (encoded_at)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def encoded(self, j: int) -> bytes:
        """The JSON of object j."""
        return bytes(self.data[self.offsets[j] : self.offsets[j + 1] - 1])

    def encoded_run(self, lo: int, hi: int) -> bytes:
        """The JSON of objects lo..hi-1 joined by commas (what goes between a request body's brackets)."""
        return bytes(self.data[self.offsets[lo] : self.offsets[hi] - 1]) if hi > lo else b""

    def encoded_at(self, positions: Sequence[int]) -> bytes:
        """The JSON of the objects at `positions`, in that order, joined by commas."""
        offsets = self._listed
        if offsets is None:  # once per chunk: a numpy array's item costs ~0.1 us to read, a list's a few ns
            o = self.offsets
            offsets = self._listed = o if isinstance(o, list) else list(o.tolist() if hasattr(o, "tolist") else o)
        data = self.data
        return b",".join([data[offsets[j] : offsets[j + 1] - 1] for j in positions])

    def size(self, j: int) -> int:
        """Bytes of object j's JSON."""
        return int(self.offsets[j + 1] - self.offsets[j] - 1)

    @overload
    def __getitem__(self, j: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, j: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, j: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(len(self)))]
        n = len(self)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"object {j} of {n}")
        obj = self._dicts.get(j)
        if obj is None:
            obj = self._dicts[j] = orjson.loads(self.encoded(j))
        return obj

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n = len(self)
        if len(self._dicts) < n:  # decode everything not decoded yet in one call
            every = orjson.loads(b"[" + self.encoded_run(0, n) + b"]")
            for j, obj in enumerate(every):
                self._dicts.setdefault(j, obj)
        return (self._dicts[j] for j in range(n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedObjects | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EncodedObjects({len(self)} objects, {len(self.data)} bytes)"


def alias_key(name: object, label: object) -> str:
    """A user alias's user key: "user_alias:name|label", with `\\` and `|` escaped by a backslash when the
    name or the label holds a `|`, so that the key always tells where the name ends (alias_of_key).

    An alias without `|` keeps the plain form (the key a delta state written before the escaping holds);
    an escaped key holds at least two `|` (the separator and an escaped one), a plain key exactly one.
    """
    n, lb = str(name), str(label)
    if "|" in n or "|" in lb:
        n, lb = (t.replace("\\", "\\\\").replace("|", "\\|") for t in (n, lb))
    return f"user_alias:{n}|{lb}"


def alias_of_key(value: str) -> tuple[str, str] | None:
    """(name, label) of a user key's value after "user_alias:" (alias_key); None when it cannot tell: a key
    with several `|` and no escaping, written before alias_key escaped them (where the name ends is unknown)."""
    if value.count("|") == 1:
        name, _, label = value.partition("|")
        return name, label
    found = _ESCAPED_ALIAS.fullmatch(value)
    if found is None:
        return None
    return _UNESCAPE.sub(r"\1", found[1]), _UNESCAPE.sub(r"\1", found[2])


_ESCAPED_ALIAS = re.compile(r"((?:[^\\|]|\\[\\|])*)\|((?:[^\\|]|\\[\\|])*)", re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)


@dataclass(slots=True)
class MappedChunk:
    """Braze objects built from a chunk, parallel lists: objects[i] came from chunk row indices[i].

    `user_keys[i]` names the profile the object touches ("external_id:u1", alias_key()'s "user_alias:name|label",
    ...) so
    the writer can keep one user's objects in source order; for live activities it is the activity id.
    `objects` is a list of dicts or, from mapping's column path, an EncodedObjects (dicts built on reading).
    """

    kind: ObjectKind
    chunk: Chunk
    objects: list[dict[str, Any]] | EncodedObjects
    indices: Sequence[int]  # a list, or range(n) when every row became an object
    user_keys: list[str]
    rejects: list[Rejected] = field(default_factory=list)
    # Delta sync: the state key of each object (connector/delta.py), when the stream has `delta: true`.
    delta_keys: list[str] | None = None
    # ... and its new users in flight by position (delta/flights.py Flight), when the state keeps them so.
    delta_flight: Any = None

    def __len__(self) -> int:
        return len(self.objects)

    def delta_rows(self, tokens: list[int]) -> Any:
        """What the delta state settles for the objects at `tokens` (DeltaState.settle): their positions when
        the chunk is a flight, else their keys (None: not a delta stream)."""
        if self.delta_flight is not None:
            return self.delta_flight.at(tokens)
        keys = self.delta_keys
        return None if keys is None else [keys[j] for j in tokens]

    def ref(self, j: int) -> RowRef:
        return self.chunk.ref(self.indices[j])

    def values(self, j: int) -> dict[str, Any]:
        return self.chunk.values(self.indices[j])
