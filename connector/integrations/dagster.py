"""Dagster: `BrazeResource` (the API key and endpoint, e.g. from `EnvVar`) and `braze_pipeline_asset()`,
an asset factory whose materialization runs a pipeline and records the run's counts as metadata.

    defs = Definitions(
        assets=[braze_pipeline_asset("pipelines/users.yaml", name="braze_users", deps=["users_table"])],
        resources={"braze": BrazeResource(api_key=EnvVar("BRAZE_API_KEY"))},
    )

A run whose exit code is not 0 fails the materialization (`dagster.Failure`, with the same metadata).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetsDefinition,
    ConfigurableResource,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from connector.integrations import failure_message, run_for_scheduler, run_summary


class BrazeResource(ConfigurableResource):  # type: ignore[misc]
    """Where runs deliver: the API key and, optionally, the REST endpoint (else the pipeline's URL)."""

    api_key: str | None = None
    endpoint: str | None = None

    def run(self, pipeline: str | Path, *, mode: str | None = None, report_dir: str | Path | None = None,
            dry_run: bool = False, full: bool = False, ignore_unfinished: bool = False) -> Any:  # fmt: skip
        """Run the pipeline with this key and endpoint; the RunReport whatever its exit code."""
        return run_for_scheduler(pipeline, api_key=self.api_key, endpoint=self.endpoint, mode=mode,
                                 report_dir=report_dir, dry_run=dry_run, full=full,
                                 ignore_unfinished=ignore_unfinished)  # fmt: skip


def run_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """Materialization metadata: counts as integers, the report as a path, the rest as text."""
    meta: dict[str, Any] = {f"rows_{k}": int(v) for k, v in summary["rows"].items()}
    meta.update(
        exit_code=int(summary["exit_code"]),
        exit_meaning=summary["exit_meaning"],
        run_id=summary["run_id"],
        mode=str(summary["mode"]),
        duration_s=float(summary["duration_s"] or 0.0),
        report=MetadataValue.path(summary["report_json"]),
        report_html=MetadataValue.path(summary["report_html"]),
    )
    return meta


def braze_pipeline_asset(
    pipeline: str | Path,
    *,
    name: str | None = None,
    key_prefix: str | Sequence[str] | None = None,
    deps: Sequence[Any] | None = None,
    group_name: str | None = None,
    resource_key: str = "braze",
    mode: str | None = None,
    report_dir: str | Path | None = None,
    dry_run: bool = False,
    full: bool = False,
    ignore_unfinished: bool = False,
) -> AssetsDefinition:
    """An asset that runs `pipeline` through the `resource_key` resource (a BrazeResource).

    The asset name defaults to `braze_<pipeline file stem>`. The inner function carries no annotations:
    Dagster inspects them at definition time, and with postponed annotations they are plain strings.
    """
    asset_name = name or f"braze_{Path(pipeline).stem}".replace("-", "_")

    @asset(name=asset_name, key_prefix=key_prefix, deps=deps, group_name=group_name,
           required_resource_keys={resource_key},
           description=f"Delivers {pipeline} to Braze (braze-connector).")  # fmt: skip
    def _braze_asset(context):  # type: ignore[no-untyped-def]  # Dagster reads the annotations: none (see above)
        resource = getattr(context.resources, resource_key)  # a BrazeResource
        report = resource.run(pipeline, mode=mode, report_dir=report_dir, dry_run=dry_run, full=full,
                              ignore_unfinished=ignore_unfinished)
        meta = run_metadata(run_summary(report))
        if report.exit_code:
            raise Failure(description=failure_message(report), metadata=meta)
        return MaterializeResult(metadata=meta)

    return _braze_asset
