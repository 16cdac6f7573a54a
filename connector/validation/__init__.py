"""Great Expectations suites over streamed chunks: row-level rejects per chunk, table-level checks at finish.

This package is the only one that imports great_expectations (lazily, so a stream without suites never
pays for the import). Each GX suite is compiled once per runner and evaluated by GX on every chunk (plan.py). Suites are GX 1.x JSON files, ``expectations/<name>.json``:
``{"name": ..., "expectations": [{"type": "expect_...", "kwargs": {...}, "meta": {}}], "meta": {}}``.

How each expectation is evaluated:

- Column map expectations (not_null, in_set, between, match_regex, value_lengths, ...; every GX
  ``ColumnMapExpectation``, column-pair and multicolumn map expectation) run through GX on every chunk with
  result_format COMPLETE. Each unexpected row becomes a ``Rejected(stage="expectation")``; a row failing
  several expectations is rejected once, rule = the first failing expectation, reasons joined with "; ".
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
from .plan import CompiledSuite, Outcome
from .suites import SuiteExpectation, alias_column, load_suites, quiet, words
from .values import as_number, as_utc

__all__ = ["ChunkValidation", "SuiteRunner", "TableCheck"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ChunkValidation:
    """Row-level outcome for one chunk: keep[i] is False for every row in rejects."""

    keep: list[bool]
    rejects: list[Rejected] = field(default_factory=list)


class SuiteRunner:
    """Runs the named suites over a stream of chunks.

    GX context, datasource and suites are built once per runner; `validate` is called per chunk and
    `finish` once at the end of the stream.
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
        self._gx_expectations = [e for e in self._expectations if e.kind in ("map", "gx_table")]
        # A GX table expectation naming no column (column count, column set) sees every column.
        self._table_wide = [e for e in self._gx_expectations if e.kind == "gx_table" and not e.columns]
        self._all_columns = bool(self._table_wide)
        self._aliases = {(e.alias, e.column) for e in self._gx_expectations if e.alias and e.column}
        # GX suites (compiled once, see plan.py) and their expectations, in order. Table-wide checks (column
        # set, column count) get a suite of their own, run on the frame without the cast copies of columns
        # that between checks read.
        self._groups: list[tuple[CompiledSuite, list[SuiteExpectation], bool]] = []
        if self._gx_expectations:
            self._setup_gx()

    def _setup_gx(self) -> None:
        """Build the ephemeral context, pandas datasource and one suite holding every GX-run expectation."""
        with quiet():
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every in-memory batch (an md5 of a full-frame hash, twice per chunk): a third of
            # the validation time and only a batch marker we never read. This process's GX is ours alone.
            pandas_execution_engine.HASH_THRESHOLD = 0

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            source = context.data_sources.add_pandas("connector")
            asset = source.add_dataframe_asset("chunk")
            batch_definition = asset.add_batch_definition_whole_dataframe("whole")
            column_wise = [e for e in self._gx_expectations if e not in self._table_wide]
            for name, members, aliased in (
                ("columns", column_wise, True),
                ("table", self._table_wide, False),
            ):
                if members:
                    suite = gx.ExpectationSuite(name=name)
                    for e in members:
                        suite.add_expectation(e.build_gx(self._now()))
                    compiled = CompiledSuite(context, batch_definition, context.suites.add(suite))
                    self._groups.append((compiled, members, aliased))

    def needed_columns(self) -> dict[str, str]:
        """Every column an expectation reads -> the first expectation reading it (pre-flight checks)."""
        out: dict[str, str] = {}
        for e in self._expectations:
            for c in e.columns:
                out.setdefault(c, e.where())
        return out

    def validate(self, chunk: Chunk) -> ChunkValidation:
        """Validate one chunk: row-level rejects now, aggregates accumulated for finish()."""
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
        wanted = chunk.table.column_names if self._all_columns else sorted(self.columns)
        df = chunk.table.select(wanted).to_pandas() if wanted else None
        for agg in self._aggregates:
            if agg.e.kind == "aggregate":
                agg.add(df, n)
        if not self._gx_expectations or n == 0:
            return ChunkValidation(keep, [])
        frame = df if df is not None else _empty_frame(n)
        failures: dict[int, list[tuple[SuiteExpectation, str]]] = {}
        for suite, members, aliased in self._groups:
            results = self._run_gx(suite, members, self._with_aliases(frame) if aliased else frame)
            for e, result in zip(members, results, strict=True):
                self._collect(e, result, df, failures)
        rejects: list[Rejected] = []
        for i in sorted(failures):
            keep[i] = False
            first = failures[i][0][0]
            rejects.append(
                Rejected(
                    ref=chunk.ref(i),
                    stage="expectation",
                    rule=first.type,
                    reason="; ".join(reason for _, reason in failures[i]),
                    column=first.column,
                    values=chunk.values(i),
                )
            )
        if rejects:
            logger.debug("%s: %d of %d rows failed expectations", chunk.file, len(rejects), n)
        return ChunkValidation(keep, rejects)

    def _with_aliases(self, df: Any) -> Any:
        """The frame plus the cast copies of the columns that between checks compare."""
        if not self._aliases:
            return df
        return df.assign(
            **{
                alias_column(alias, column): as_number(df[column]) if alias == "num" else as_utc(df[column])
                for alias, column in self._aliases
            }
        )

    def _run_gx(self, suite: CompiledSuite, members: list[SuiteExpectation], df: Any) -> list[Outcome]:
        """Validate a pandas frame against one compiled GX suite; one outcome per expectation, in order."""
        outcomes = suite.run(df)
        for e, outcome in zip(members, outcomes, strict=True):
            if outcome.error is not None:
                raise SuiteError(f"{e.where()} could not be evaluated: {outcome.error}")
        return outcomes

    def _collect(
        self,
        e: SuiteExpectation,
        result: Outcome,
        df: Any,
        failures: dict[int, list[tuple[SuiteExpectation, str]]],
    ) -> None:
        """Turn one GX result into per-row failures (map) or a per-chunk outcome (other aggregates)."""
        if e.kind == "gx_table":
            next(a for a in self._aggregates if a.e is e).add_gx(bool(result.success), result.result)
            return
        indices = [i for i in result.result.get("unexpected_index_list") or [] if isinstance(i, int)]
        stats = self._map_stats.get((e.suite, e.index))
        if stats is not None:
            stats[0] += len(indices)
            stats[1] += int(result.result.get("element_count") or 0) - int(
                result.result.get("missing_count") or 0
            )
        if not indices:
            return
        # The original cell (not GX's copy, which holds the numeric cast for between checks on strings).
        cells = _cells(df[e.column], indices) if (e.column and df is not None) else [None] * len(indices)
        for i, cell in zip(indices, cells, strict=True):
            failures.setdefault(i, []).append((e, words(e, cell)))

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
