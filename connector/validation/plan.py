"""A GX suite compiled once per runner and evaluated by GX on every chunk.

``batch.validate(suite)`` rebuilds, for every chunk, everything that does not depend on the data: a
validator, each expectation's metric dependencies (pydantic v1 models re-serialised a few hundred times
per expectation), and the metric graph. That fixed cost was ~75% of the validation time on 50k-row chunks.

``CompiledSuite`` does that work once, on the first chunk, through the same GX calls
``Validator.graph_validate`` makes (process the configurations, ``get_validation_dependencies`` with the
same runtime configuration, ``build_metric_dependency_graph``). Every chunk is then loaded into the same
GX execution engine under the same batch id, GX resolves the metric graph on it (``ValidationGraph.resolve``)
and each GX expectation decides from those metrics (``Expectation._validate``), exactly as in
``graph_validate``. The metric graph does not depend on the data: metric ids are built from the expectation
kwargs and the batch id, and every dependency is resolved again on each chunk (the engine's metric cache is
only read for metrics missing from the graph, and there are none).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .suites import quiet

# The result format SuiteRunner asks for: unexpected_index_list is what maps failures back to rows.
RESULT_FORMAT: dict[str, Any] = {"result_format": "COMPLETE"}


@dataclass(slots=True)
class Outcome:
    """One expectation's result on one chunk (what GX's ExpectationValidationResult carries that we read)."""

    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class _Step:
    """One expectation, ready to evaluate: its GX object, metric names -> metric ids, graph vertex ids."""

    expectation: Any
    metrics: dict[str, Any]
    runtime: dict[str, Any]
    graph: Any
    metric_ids: frozenset[Any]


class CompiledSuite:
    """One GX suite bound to a pandas batch definition; `run(df)` returns one Outcome per expectation."""

    def __init__(self, context: Any, batch_definition: Any, suite: Any) -> None:
        self._context = context
        self._batch_definition = batch_definition
        self._suite = suite
        self._engine: Any = None
        self._batch_id: str | None = None
        self._graph: Any = None
        # In suite order (GX's process step regroups by column; results are reported in suite order).
        self._steps: list[_Step | str] = []

    def run(self, df: Any) -> list[Outcome]:
        """Evaluate every expectation of the suite on `df` (a pandas frame); one Outcome each, in order."""
        with quiet():
            if self._engine is None:
                self._compile(df)
            else:
                self._engine.load_batch_data(self._batch_id, df)
            return self._evaluate()

    def _compile(self, df: Any) -> None:
        """Build the validator once and keep what graph_validate derives from the configurations."""
        from great_expectations.validator.validation_graph import ExpectationValidationGraph, ValidationGraph

        request = self._batch_definition.build_batch_request(batch_parameters={"dataframe": df})
        validator = self._context.get_validator(batch_request=request)
        engine, batch_id = validator.execution_engine, validator.active_batch_id
        configurations = list(self._suite.expectation_configurations)
        by_id = {c.id: c for c in validator.process_expectations_for_validation(configurations)}
        runtime_configuration: dict[str, Any] = {"result_format": copy.copy(RESULT_FORMAT)}
        edges: list[Any] = []
        steps: list[_Step | str] = []
        for expectation in self._suite.expectations:
            configuration = copy.deepcopy(by_id[expectation.id])
            if batch_id:
                configuration.kwargs.update({"batch_id": batch_id})
            try:
                gx_expectation = configuration.to_domain_obj()
                dependencies = gx_expectation.get_validation_dependencies(
                    execution_engine=engine, runtime_configuration=runtime_configuration
                )
                graph = validator.metrics_calculator.build_metric_dependency_graph(
                    metric_configurations=dependencies.get_metric_configurations(),
                    runtime_configuration=runtime_configuration,
                )
            except Exception as exc:  # graph_validate turns these into a failed result with exception_info
                steps.append(str(exc))
                continue
            edges += graph.edges
            vertices = {v.id for edge in graph.edges for v in (edge.left, edge.right) if v is not None}
            runtime = {**runtime_configuration, "result_format": dependencies.result_format}
            steps.append(
                _Step(
                    gx_expectation,
                    dict(dependencies.metric_configurations),
                    runtime,
                    ExpectationValidationGraph(configuration=configuration, graph=graph),
                    frozenset(vertices),
                )
            )
        self._graph = ValidationGraph(execution_engine=engine, edges=edges)
        self._steps, self._batch_id, self._engine = steps, batch_id, engine  # the engine last: compiled

    def _evaluate(self) -> list[Outcome]:
        """Resolve the suite's metric graph on the loaded batch; let each expectation judge its metrics."""
        try:
            resolved, aborted = self._graph.resolve(
                runtime_configuration=None, min_graph_edges_pbar_enable=0, show_progress_bars=False
            )
        except Exception as exc:  # graph_validate fails every expectation with this exception
            return [Outcome(False, error=str(exc)) for _ in self._steps]
        return [self._judge(step, resolved, aborted) for step in self._steps]

    def _judge(self, step: _Step | str, resolved: dict[Any, Any], aborted: dict[Any, Any]) -> Outcome:
        if isinstance(step, str):
            return Outcome(False, error=step)
        if aborted and step.metric_ids & aborted.keys():
            info = step.graph.get_exception_info(metric_info=aborted)
            messages = [getattr(i, "exception_message", None) or str(i) for i in info.values()]
            return Outcome(False, error=messages[0] if messages else "a metric could not be computed")
        try:
            provided = {name: resolved[config.id] for name, config in step.metrics.items()}
            raw = step.expectation._validate(
                metrics=provided,
                runtime_configuration=copy.deepcopy(step.runtime),
                execution_engine=self._engine,
            )
        except Exception as exc:  # as graph_validate: the expectation fails with the exception
            return Outcome(
                False, error=str(exc) if not isinstance(exc, KeyError) else f"missing metric {exc}"
            )
        if isinstance(raw, dict):
            return Outcome(bool(raw.get("success")), dict(raw.get("result") or {}))
        evr = step.expectation._build_evr(raw_response=raw)
        return Outcome(bool(evr.success), dict(evr.result or {}))
