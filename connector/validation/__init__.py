"""Great Expectations suites over streamed chunks: row-level rejects per chunk, table-level checks at finish.

This package is the only one that imports great_expectations, and only when a suite needs it. Suites are
GX 1.x JSON files, ``expectations/<name>.json``:
``{"name": ..., "expectations": [{"type": "expect_...", "kwargs": {...}, "meta": {}}], "meta": {}}``.

Each suite is compiled once per runner. The common row-level expectations are evaluated natively over the
chunk's Arrow columns (native.py, with GX's pandas verdict per row; which types and kwargs: coverage.py):
not_null, null, in_set, not_in_set, between (numbers and timestamps), match_regex, not_match_regex,
match_regex_list, value_lengths_to_be_between, value_lengths_to_equal. Any other expectation, kwarg (e.g.
``row_condition``) or value runs through GX (gx_run.py, plan.py), which is then imported when the runner
is built (2-5 s of CPU, 7-13 s on a slow machine); so does a covered expectation on a chunk whose column
type native.py does not cover (GX is then imported at that chunk). ``SuiteRunner.uses_gx`` tells.

How each expectation is evaluated:

- Column map expectations (natively, or every other GX ``ColumnMapExpectation``, column-pair and
  multicolumn map expectation through GX on every chunk with result_format COMPLETE). Each unexpected row
  becomes a ``Rejected(stage="expectation")``; a row failing several expectations is rejected once, rule = the first failing expectation, reasons joined with "; ".
  Rows are rejected whatever ``mostly`` says; when ``mostly`` < 1 a TableCheck also reports whether the
  whole stream met it. ``expect_column_values_to_be_between`` compares a cast copy of the column: as numbers
  when the bounds are numbers, as UTC timestamps when they are strings (ISO-8601, or "now-24h" resolved
  once when the runner is built). Cells that do not cast (CSV text) pass here and are left to the mapper.
- Aggregates over the whole stream, reported by ``finish()`` as TableCheck objects and never as row rejects:
  ``expect_table_row_count_to_be_between`` / ``_to_equal`` (rows that parsed, summed over chunks),
  ``expect_column_max_to_be_between`` / ``min`` (merged per-chunk max/min), ``expect_column_mean_to_be_between``
  (merged sums and counts), ``expect_column_values_to_be_unique`` (see below).
- Freshness: the max/min bounds may be ISO-8601 datetimes ("2026-01-01T00:00:00Z"; naive means UTC) or
  relative to the time of ``finish()``: ``"now"``, ``"now-24h"``, ``"now-30m"``, ``"now-7d"``,
  ``"now+1h"`` (units s, m, h, d). With datetime bounds the column is compared as UTC timestamps (string
  columns are parsed as ISO-8601; unparseable cells are ignored).
- Uniqueness is checked across chunks with bounded memory: each non-null value is hashed to 8 bytes
  (a 64-bit hash, so collisions are negligible); past 1M hashes they are spilled to temporary files
  partitioned by hash (aggregates.HashSpill) and duplicates are counted per partition with ``np.unique``
  at finish, so RAM does not grow with the stream (the temporary disk use does: 8 bytes per value).
  Duplicate rows are NOT rejected row by row: streaming can only see duplicates inside one chunk, which
  would make the outcome depend on ``chunk_rows``. The check reports the number of surplus rows.
- Aggregates count every row that parsed, including rows that row-level expectations reject.
- Any other aggregate expectation (median, sum, column set, ...) runs through GX on every chunk; its
  TableCheck succeeds only if it succeeded on every chunk (the detail says how many chunks failed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import SuiteError
from ..records import Chunk, Rejected
from .aggregates import Aggregate, TableCheck
from .coverage import MAP_TYPES
from .native import NativeCheck, arrow_cells, compile_native
from .suites import SuiteExpectation, load_suites, show, wording
from .values import RELATIVE

__all__ = ["ChunkValidation", "SuiteRunner", "TableCheck"]

logger = logging.getLogger(__name__)

# (expectation, positions of unexpected rows, rows judged, whether the cells come from Arrow)
_Result = tuple[SuiteExpectation, list[int], int, bool]


@dataclass(slots=True)
class ChunkValidation:
    """Row-level outcome for one chunk: keep[i] is False for every row in rejects."""

    keep: list[bool]
    rejects: list[Rejected] = field(default_factory=list)


class SuiteRunner:
    """Runs the named suites over a stream of chunks.

    Suites are read and compiled once per runner (native checks now, GX suites when first needed);
    `validate` is called per chunk and `finish` once at the end of the stream.
    """

    def __init__(
        self,
        names: list[str],
        expectations_dir: Path,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._expectations: list[SuiteExpectation] = load_suites(names, Path(expectations_dir))
        self.columns: set[str] = {c for e in self._expectations for c in e.columns}
        self._aggregates = [Aggregate(e) for e in self._expectations if e.kind in ("aggregate", "gx_table")]
        # (suite, index) -> [unexpected, non-missing] over the stream, for map expectations with mostly < 1
        self._map_stats: dict[tuple[str, int], list[int]] = {
            (e.suite, e.index): [0, 0] for e in self._expectations if e.kind == "map" and e.mostly < 1
        }
        self._by_key = {(e.suite, e.index): e for e in self._expectations}
        self._maps = [e for e in self._expectations if e.kind == "map"]
        resolved = self._now()  # "now-24h" bounds of between checks are resolved once, as GX's would be
        self._native: dict[tuple[str, int], NativeCheck] = {}
        for e in self._maps:
            native = compile_native(e, resolved)
            if native is not None:
                self._native[(e.suite, e.index)] = native
        self._gx_always = [
            e
            for e in self._expectations
            if e.kind == "gx_table" or (e.kind == "map" and (e.suite, e.index) not in self._native)
        ]
        self._gx_built: dict[tuple[tuple[str, int], ...], Any] = {}  # GxEvaluator per set of expectations
        self._pandas_aggregates = {
            a.e.column for a in self._aggregates if a.e.kind == "aggregate" and a.e.column
        }
        if self._gx_always:
            self._evaluator(self._gx_always)  # the suite's own GX cost is paid at start, not mid-stream

    def row_alone(self) -> str | None:
        """Why a row's verdict may depend on more than its own cells (None: it does not). Delta sync's fast
        path (delta/rowprint.py) skips rows before validation only when it does not: table-level checks
        (aggregates, GX table expectations, `mostly` below 1) must see every row, an expectation only GX
        evaluates is judged over a whole chunk (some compare rows), and a bound relative to the run's time
        ("now-24h") may reject tomorrow a row it accepts today."""
        for e in self._expectations:
            if e.kind != "map" or e.mostly < 1:
                return f"{e.where()} is a table-level check"
            if e.type not in MAP_TYPES:  # GX judges it over the chunk: it may compare rows (compound uniqueness)
                return f"{e.where()} is evaluated by Great Expectations over whole chunks"
            if any(isinstance(v, str) and RELATIVE.match(v.strip().lower()) for v in e.kwargs.values()):
                return f"{e.where()} has a bound relative to the run's time"
        return None

    def described(self) -> list[list[object]]:
        """Every expectation as plain values (suite, type, arguments), in suite order: what a row print's
        seed covers, so that any change to a suite changes every print."""
        return [[e.suite, e.index, e.type, e.kwargs] for e in self._expectations]

    @property
    def uses_gx(self) -> bool:
        """Whether any expectation so far was evaluated (or set up) through Great Expectations."""
        return bool(self._gx_built)

    def needed_columns(self) -> dict[str, str]:
        """Every column an expectation reads -> the first expectation reading it (pre-flight checks)."""
        out: dict[str, str] = {}
        for e in self._expectations:
            for c in e.columns:
                out.setdefault(c, e.where())
        return out

    def validate(self, chunk: Chunk) -> ChunkValidation:
        """Validate one chunk: row-level rejects now, aggregates accumulated for finish()."""
        return self._validate(chunk, rejects=True)

    def table_pass(self, chunk: Chunk) -> None:
        """Validate one chunk of a first pass for the table checks (stages.py): what finish() reports
        (aggregates, `mostly` ratios, GX table expectations), with the same verdicts, errors and GX imports as
        `validate`, but without building the row rejects, which that pass discards."""
        self._validate(chunk, rejects=False)

    def _validate(self, chunk: Chunk, *, rejects: bool) -> ChunkValidation:
        n = len(chunk)
        keep = [True] * n
        if not self._expectations:
            return ChunkValidation(keep, [])
        missing = sorted(self.columns - set(chunk.table.column_names))
        if missing:
            users = [e for e in self._expectations if set(missing) & set(e.columns)]
            raise SuiteError(
                f"{users[0].where()} needs column '{missing[0]}', which {chunk.file} does not have "
                f"(columns: {', '.join(chunk.table.column_names)}); fix the suite or the source"
            )
        frames = _Frames(chunk)
        for agg in self._aggregates:
            if agg.e.kind == "aggregate":
                agg.add(frames.frame(sorted(self._pandas_aggregates)) if agg.e.column else None, n)
        if n == 0 or not (self._maps or self._gx_always):
            return ChunkValidation(keep, [])
        results = self._results(chunk, frames)
        failures: dict[int, list[tuple[SuiteExpectation, str]]] = {}
        for e, indices, judged, from_arrow in results:
            stats = self._map_stats.get((e.suite, e.index))
            if stats is not None:
                stats[0] += len(indices)
                stats[1] += judged
            if not indices or not rejects:
                continue
            cells = frames.cells(e.column, indices, from_arrow)
            head, tail = wording(e)  # words(e, cell) for every cell, the expectation's part built once
            for i, cell in zip(indices, cells, strict=True):
                failures.setdefault(i, []).append((e, head if tail is None else head + show(cell) + tail))
        out: list[Rejected] = []
        failing = sorted(failures)
        # the original columns of every failing row, converted at once (Chunk.values gives the same per row)
        originals = chunk.table.take(_indices(failing)).to_pylist() if failing else []
        for i, values in zip(failing, originals, strict=True):
            keep[i] = False
            first = failures[i][0][0]
            out.append(
                Rejected(
                    ref=chunk.ref(i),
                    stage="expectation",
                    rule=first.type,
                    reason="; ".join(reason for _, reason in failures[i]),
                    column=first.column,
                    values=dict(values),
                )
            )
        if out:
            logger.debug("%s: %d of %d rows failed expectations", chunk.file, len(out), n)
        return ChunkValidation(keep, out)

    def _results(self, chunk: Chunk, frames: _Frames) -> list[_Result]:
        """Every map expectation's unexpected rows on this chunk, in suite order; GX table checks recorded."""
        native: dict[tuple[str, int], _Result] = {}
        gx_needed = list(self._gx_always)
        for e in self._maps:
            check = self._native.get((e.suite, e.index))
            verdict = check.evaluate(chunk.table.column(e.column)) if check is not None else None
            if verdict is not None:
                native[(e.suite, e.index)] = (e, verdict.unexpected.tolist(), verdict.judged, True)
            elif check is not None:  # a column type the native plan does not cover: GX decides
                gx_needed.append(e)
        if gx_needed:
            evaluator = self._evaluator([e for e in self._expectations if e in gx_needed])  # suite order
            wanted = chunk.table.column_names if evaluator.table_wide else sorted(evaluator.columns)
            frame = frames.frame(wanted) if wanted else _empty_frame(len(chunk))
            for e, outcome in evaluator.run(frame):
                if e.kind == "gx_table":
                    next(a for a in self._aggregates if a.e is e).add_gx(
                        bool(outcome.success), outcome.result
                    )
                    continue
                result = outcome.result
                indices = [i for i in result.get("unexpected_index_list") or [] if isinstance(i, int)]
                judged = int(result.get("element_count") or 0) - int(result.get("missing_count") or 0)
                native[(e.suite, e.index)] = (e, indices, judged, False)
        return [native[(e.suite, e.index)] for e in self._maps]

    def _evaluator(self, expectations: list[SuiteExpectation]) -> Any:
        """The GX evaluator for exactly these expectations, built (and GX imported) on first use."""
        key = tuple((e.suite, e.index) for e in expectations)
        if key not in self._gx_built:
            from .gx_run import GxEvaluator

            if not self._gx_built:
                logger.info(
                    "%d expectation(s) evaluated by Great Expectations, imported now (a few seconds), e.g. %s",
                    len(expectations),
                    expectations[0].where(),
                )

            self._gx_built[key] = GxEvaluator(expectations, self._now)
        return self._gx_built[key]

    def finish(self) -> list[TableCheck]:
        """Evaluate the table-level expectations over everything validated so far."""
        now = self._now()
        checks = [agg.check(now) for agg in self._aggregates]
        for key, (unexpected, total) in self._map_stats.items():
            e = self._by_key[key]
            ratio = 1.0 - (unexpected / total) if total else 1.0
            checks.append(
                TableCheck(
                    e.type,
                    e.column,
                    ratio >= e.mostly,
                    round(ratio, 6),
                    f"{unexpected} of {total} values unexpected; mostly={e.mostly} ({e.where()})",
                )
            )
        for c in checks:
            if not c.success:
                logger.info("table expectation %s failed: %s", c.expectation, c.detail)
        return checks


class _Frames:
    """Pandas copies of a chunk's columns, converted once and only when something reads them."""

    def __init__(self, chunk: Chunk) -> None:
        self._chunk = chunk
        self._series: dict[str, Any] = {}

    def series(self, column: str) -> Any:
        if column not in self._series:
            self._series[column] = self._chunk.table.select([column]).to_pandas()[column]
        return self._series[column]

    def frame(self, columns: list[str]) -> Any:
        import pandas as pd

        return pd.DataFrame({c: self.series(c) for c in columns}, index=self.series(columns[0]).index)

    def cells(self, column: str | None, indices: list[int], from_arrow: bool) -> list[Any]:
        """The original cells of `column` at `indices`, as pandas holds them (what reasons show)."""
        if column is None:
            return [None] * len(indices)
        if from_arrow:
            found = arrow_cells(self._chunk.table.column(column), indices)
            if found is not None:
                return found
        return _cells(self.series(column), indices)


def _indices(rows: list[int]) -> Any:
    """Row positions as an Arrow int64 array (built without pandas, which `take` of a list imports)."""
    import pyarrow as pa

    from connector import arrow_values

    return arrow_values.array(rows, pa.int64())


def _cells(series: Any, indices: list[int]) -> list[Any]:
    """The cells at `indices` as ``series.to_numpy()`` gives them, converting only those rows.

    For numpy and string dtypes the element type of ``to_numpy()`` depends on the dtype alone, so the subset
    converts alike; for other extension dtypes (nullable ints, Arrow) it depends on whether the whole column
    has nulls, so the whole column is converted.
    """
    import numpy as np
    import pandas as pd

    if isinstance(series.dtype, np.dtype | pd.StringDtype):
        return list(series.iloc[indices].to_numpy())
    values = series.to_numpy()
    return [values[i] for i in indices]


def _empty_frame(n: int) -> Any:
    import pandas as pd

    return pd.DataFrame(index=range(n))
