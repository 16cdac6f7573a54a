"""The key text of each row of an SQL source with key columns ('id=42'), made when first read.

A chunk's keys name its rows in rejects, failures and the incremental watermark; most chunks need none
(an unchanged delta re-run skips every row), and one f-string per row cost more than decoding the rows.
`KeyTexts` keeps the key columns as Arrow and makes every text of the chunk on the first read of any.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa

from connector.records import RowKeys


class KeyTexts(RowKeys):
    """'id=42' (or 'a=1, b=x' for a composite key) for every row; a NULL key names the row's position in the
    result ('id=NULL (row 7)'), since several such rows would otherwise read the same."""

    __slots__ = ("_names", "_table", "_rows", "_texts")

    def __init__(self, names: Sequence[str], table: pa.Table, rows: Sequence[int]) -> None:
        """`table`: the key columns (named `names`, in order); `rows`: each row's number in the result."""
        self._names = list(names)
        self._table = table
        self._rows = rows
        self._texts: list[str] | None = None

    def select(self, mask: Any, rows: Sequence[int]) -> KeyTexts:
        if self._texts is not None:  # made already: keep them
            picked = np.flatnonzero(np.asarray(mask, dtype=bool)).tolist()
            return _Made([self._texts[i] for i in picked], self._names, self._table.filter(mask), rows)
        return KeyTexts(self._names, self._table.filter(mask), rows)

    def __len__(self) -> int:
        return int(self._table.num_rows)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        return self._made()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._made())

    def _made(self) -> list[str]:
        if self._texts is None:
            self._texts = key_texts(self._table, self._names, self._rows)
        return self._texts


class _Made(KeyTexts):
    """KeyTexts whose texts were made before a filter (not made again)."""

    def __init__(self, texts: list[str], names: Sequence[str], table: pa.Table, rows: Sequence[int]) -> None:
        super().__init__(names, table, rows)
        self._texts = texts


def key_texts(table: pa.Table, key: Sequence[str], rows: Sequence[int]) -> list[str]:
    """The key text of every row of `table` (its key columns); one f-string per row, the NULL rows found
    by Arrow and mended afterwards. `rows`: each row's number in the result (named for a NULL key)."""
    cols = [table.column(c) for c in key]
    values = [c.to_pylist() for c in cols]
    if len(key) == 1:
        name = key[0]
        texts = [f"{name}={v}" for v in values[0]]
    else:
        texts = [", ".join(f"{c}={v}" for c, v in zip(key, vals, strict=True)) for vals in zip(*values, strict=True)]
    if any(c.null_count for c in cols):
        nulls = np.zeros(table.num_rows, dtype=bool)
        for c in cols:
            if c.null_count:
                nulls |= c.is_null().to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(nulls).tolist():
            shown = ", ".join(f"{c}={'NULL' if v[i] is None else v[i]}" for c, v in zip(key, values, strict=True))
            texts[i] = f"{shown} (row {rows[i]})"
    return texts
