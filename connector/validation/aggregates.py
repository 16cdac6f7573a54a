"""Table-level expectations merged across chunks: row count, max/min (freshness), mean, uniqueness."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .suites import SuiteExpectation, show
from .values import as_number, as_utc, resolve_bound


@dataclass(frozen=True, slots=True)
class TableCheck:
    """The outcome of one table-level expectation over the whole stream."""

    expectation: str
    column: str | None
    success: bool
    observed: Any
    detail: str


class Aggregate:
    """Running state of one table-level expectation; `add` per chunk, `check` once at the end."""

    def __init__(self, e: SuiteExpectation) -> None:
        self.e = e
        self.rows = 0
        self.extreme: Any = None
        self.total = 0.0
        self.count = 0
        self.hashes = HashSpill()
        self.chunks = 0
        self.failed_chunks = 0
        self.first_failure: Any = None
        kw = e.kwargs
        self._datetime = any(isinstance(kw.get(k), str) for k in ("min_value", "max_value"))

    def add(self, df: Any, n: int) -> None:
        """Fold one chunk's (pandas) columns into the running state."""
        t = self.e.type
        self.rows += n
        if n == 0 or df is None or self.e.column is None:
            return  # a row count: no pandas to import
        import pandas as pd

        series = df[self.e.column]
        if t in ("expect_column_max_to_be_between", "expect_column_min_to_be_between"):
            use_dt = self._datetime or pd.api.types.is_datetime64_any_dtype(series)
            self._datetime = use_dt
            values = (as_utc(series) if use_dt else as_number(series)).dropna()
            if len(values):
                v = values.max() if t.endswith("max_to_be_between") else values.min()
                better = self.extreme is None or (
                    v > self.extreme if t.endswith("max_to_be_between") else v < self.extreme
                )
                self.extreme = v if better else self.extreme
        elif t == "expect_column_mean_to_be_between":
            values = as_number(series).dropna()
            self.total += float(values.sum())
            self.count += int(len(values))
        elif t == "expect_column_values_to_be_unique":
            values = series.dropna()
            if len(values):
                self.hashes.add(pd.util.hash_pandas_object(values, index=False).to_numpy(copy=True))

    def add_gx(self, success: bool, result: dict[str, Any]) -> None:
        """Record one chunk's outcome of an aggregate GX ran (ANDed over chunks)."""
        self.chunks += 1
        if not success:
            self.failed_chunks += 1
            if self.first_failure is None:
                self.first_failure = result.get("observed_value")

    def check(self, now: datetime) -> TableCheck:
        """The merged outcome."""
        e, kw, t = self.e, self.e.kwargs, self.e.type
        where = e.where()
        if e.kind == "gx_table":
            ok = self.failed_chunks == 0
            detail = f"failed in {self.failed_chunks} of {self.chunks} chunks (evaluated per chunk)"
            return TableCheck(t, e.column, ok, self.first_failure, f"{detail}; {where}")
        if t == "expect_table_row_count_to_equal":
            ok = self.rows == kw.get("value")
            return TableCheck(
                t, None, ok, self.rows, f"{self.rows} rows, expected exactly {kw.get('value')}; {where}"
            )
        if t == "expect_table_row_count_to_be_between":
            ok = _within(self.rows, kw, now)
            return TableCheck(t, None, ok, self.rows, f"{self.rows} rows, expected {_expected(kw)}; {where}")
        if t == "expect_column_values_to_be_unique":
            return self._unique_check(where)
        if t == "expect_column_mean_to_be_between":
            mean = self.total / self.count if self.count else None
            ok = mean is not None and _within(mean, kw, now)
            return TableCheck(
                t,
                e.column,
                ok,
                mean,
                f"mean {show(mean)} of {self.count} values, expected {_expected(kw)}; {where}",
            )
        observed = self.extreme
        if observed is not None and self._datetime:
            observed = observed.isoformat()
        ok = self.extreme is not None and _within(self.extreme, kw, now)
        label = "max" if t == "expect_column_max_to_be_between" else "min"
        return TableCheck(
            t, e.column, ok, observed, f"{label} {show(observed)}, expected {_expected(kw)}; {where}"
        )

    def _unique_check(self, where: str) -> TableCheck:
        total, surplus, values = self.hashes.duplicates()
        detail = f"{surplus} duplicate rows ({values} values occur more than once) in {total} non-null values"
        return TableCheck(self.e.type, self.e.column, surplus == 0, surplus, f"{detail}; {where}")


class HashSpill:
    """The 64-bit hashes of a column's values, with memory bounded by `spill_at`, not by the stream length.

    Up to `spill_at` hashes stay in memory. Beyond that, buffered hashes are appended to PARTITIONS temporary
    files by their top bits (equal values share a hash, hence a partition), and `duplicates()` counts each
    partition on its own: RAM holds at most `spill_at` hashes while reading and 1/PARTITIONS of them at the
    end (10M rows: 1.25 MB per partition instead of 80 MB plus np.unique's sort copy). The files are deleted
    once counted (or when the runner is dropped).
    """

    SPILL_AT = 1_000_000  # 8 MB of hashes
    PARTITIONS = 64
    _SHIFT = 64 - 6  # top 6 bits -> 64 partitions

    def __init__(self, spill_at: int | None = None) -> None:
        self.spill_at = self.SPILL_AT if spill_at is None else spill_at
        self._buffer: list[Any] = []
        self._buffered = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.spilled = 0

    def add(self, hashes: Any) -> None:
        """Add one chunk's hashes (a uint64 numpy array)."""
        if len(hashes):
            self._buffer.append(hashes)
            self._buffered += len(hashes)
            if self._buffered >= self.spill_at:
                self._spill()

    def _spill(self) -> None:
        import numpy as np

        if not self._buffered:
            return
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="braze-connector-unique-")
        hashes = np.concatenate(self._buffer).astype(np.uint64, copy=False)
        self._buffer, self._buffered = [], 0
        part = (hashes >> np.uint64(self._SHIFT)).astype(np.intp)
        order = np.argsort(part, kind="stable")
        hashes, part = hashes[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.PARTITIONS + 1))
        for p in range(self.PARTITIONS):
            lo, hi = int(bounds[p]), int(bounds[p + 1])
            if hi > lo:
                with open(self._path(p), "ab") as fh:
                    hashes[lo:hi].tofile(fh)
        self.spilled += len(hashes)

    def _path(self, p: int) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / f"{p:02d}.u64"

    def duplicates(self) -> tuple[int, int, int]:
        """(non-null values, surplus rows, values occurring more than once) over everything added."""
        import numpy as np

        def count(hashes: Any) -> tuple[int, int, int]:
            _, counts = np.unique(hashes, return_counts=True)
            return len(hashes), int((counts - 1).sum()), int((counts > 1).sum())

        if self._dir is None:
            return count(np.concatenate(self._buffer) if self._buffer else np.empty(0, dtype=np.uint64))
        self._spill()
        total = surplus = values = 0
        try:
            for p in range(self.PARTITIONS):
                path = self._path(p)
                if path.exists():
                    n, s, v = count(np.fromfile(path, dtype=np.uint64))
                    total, surplus, values = total + n, surplus + s, values + v
        finally:
            self._dir.cleanup()
            self._dir = None
            self.spilled = 0
        return total, surplus, values


def _within(value: Any, kw: dict[str, Any], now: datetime) -> bool:
    lo, hi = resolve_bound(kw.get("min_value"), now), resolve_bound(kw.get("max_value"), now)
    if lo is not None and (value <= lo if kw.get("strict_min") else value < lo):
        return False
    return not (hi is not None and (value >= hi if kw.get("strict_max") else value > hi))


def _expected(kw: dict[str, Any]) -> str:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    parts = []
    if lo is not None:
        parts.append(f"{'>' if kw.get('strict_min') else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if kw.get('strict_max') else '<='} {hi}")
    return " and ".join(parts) or "any value"
