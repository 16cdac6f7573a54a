"""The expectations Great Expectations evaluates, on a pandas copy of each chunk (imports GX when built).

Built only when a suite holds an expectation the native plan does not cover (native.py, coverage.py), or
when a chunk's column has a type it does not cover. Column-wise expectations form one GX suite, table-wide
ones (column set, column count: they see every column) another; each is compiled once (plan.py). Equal
expectations (two suites may hold the same one) go to suites of their own, as GX keeps one per suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..errors import SuiteError
from .plan import CompiledSuite, Outcome
from .suites import SuiteExpectation, alias_column, quiet
from .values import as_number, as_utc


class GxEvaluator:
    """GX context, pandas datasource and compiled suites for a fixed list of expectations."""

    def __init__(self, expectations: list[SuiteExpectation], now: Callable[[], datetime]) -> None:
        self.expectations = expectations
        # A GX table expectation naming no column (column count, column set) sees every column.
        self.table_wide = [e for e in expectations if e.kind == "gx_table" and not e.columns]
        self.columns = {c for e in expectations for c in e.columns}
        self._aliases = {(e.alias, e.column) for e in expectations if e.alias and e.column}
        self._groups: list[tuple[CompiledSuite, list[SuiteExpectation], bool]] = []
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
            column_wise = [e for e in expectations if e not in self.table_wide]
            groups = [(f"columns{i}", m, True) for i, m in enumerate(_distinct_layers(column_wise))]
            groups += [(f"table{i}", m, False) for i, m in enumerate(_distinct_layers(self.table_wide))]
            for name, members, aliased in groups:
                if members:
                    suite = gx.ExpectationSuite(name=name)
                    for e in members:
                        suite.add_expectation(e.build_gx(now()))
                    compiled = CompiledSuite(context, batch_definition, context.suites.add(suite))
                    self._groups.append((compiled, members, aliased))

    def run(self, frame: Any) -> list[tuple[SuiteExpectation, Outcome]]:
        """Each expectation's outcome on a pandas frame (table-wide ones get it without the cast copies)."""
        out: list[tuple[SuiteExpectation, Outcome]] = []
        for suite, members, aliased in self._groups:
            outcomes = suite.run(self._with_aliases(frame) if aliased else frame)
            for e, outcome in zip(members, outcomes, strict=True):
                if outcome.error is not None:
                    raise SuiteError(f"{e.where()} could not be evaluated: {outcome.error}")
                out.append((e, outcome))
        return out

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


def _distinct_layers(expectations: list[SuiteExpectation]) -> list[list[SuiteExpectation]]:
    """The expectations split so that no list holds two equal ones (a GX suite keeps only one of them)."""
    layers: list[list[SuiteExpectation]] = []
    seen: list[set[str]] = []
    for e in expectations:
        key = json.dumps([e.type, e.kwargs], sort_keys=True, default=str)
        depth = next((i for i, keys in enumerate(seen) if key not in keys), len(layers))
        if depth == len(layers):
            layers.append([])
            seen.append(set())
        layers[depth].append(e)
        seen[depth].add(key)
    return layers
