"""Optional integrations with schedulers: Airflow (`pip install 'braze-connector[airflow]'`) and Dagster
(`[dagster]`). Each lives in its own module and imports its framework; this package imports neither.

What both share is here: `run_for_scheduler()` loads and runs a pipeline with credentials that the
scheduler holds (an Airflow Connection, a Dagster resource) instead of the process environment, and
never raises on a failed run (the scheduler decides from the report's exit code); `run_summary()` is the
small JSON document both publish (XCom, materialization metadata): report paths, exit code and counts.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.report import RunReport


def scheduler_env(api_key_env: str, api_key: str | None, endpoint: str | None,
                  base: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """The environment a run sees: `base` (default os.environ) plus the key and endpoint given."""
    env = dict(os.environ if base is None else base)
    if api_key:
        env[api_key_env] = api_key
    if endpoint:
        env["BRAZE_REST_ENDPOINT"] = endpoint
    return env


def run_for_scheduler(
    pipeline: str | Path,
    *,
    api_key: str | None = None,
    endpoint: str | None = None,
    mode: str | None = None,
    report_dir: str | Path | None = None,
    dry_run: bool = False,
    full: bool = False,
    ignore_unfinished: bool = False,
) -> RunReport:
    """Load `pipeline` and run it with this key and endpoint; return the report whatever the exit code.

    Raises:
        ConfigError, SourceError: before anything is read (a bad file, a missing source or key).
        UnfinishedRun: the last run was killed or stopped and this one would apply its events again (a task
            retried by the scheduler): finish it with `braze-connector run PIPELINE --resume`, or pass
            ignore_unfinished=True.
    """
    from connector import load_pipeline, run_pipeline

    p = load_pipeline(pipeline)
    env = scheduler_env(p.destination.api_key_env, api_key, endpoint)
    kwargs: dict[str, Any] = {}
    if "raise_on_failure" in inspect.signature(run_pipeline).parameters:
        kwargs["raise_on_failure"] = False  # the caller reads the exit code and fails its task itself
    if ignore_unfinished:
        kwargs["ignore_unfinished"] = True
    report: RunReport = run_pipeline(p, mode=mode, report_dir=report_dir, dry_run=dry_run, full=full, env=env,
                                     **kwargs)  # fmt: skip
    return report


def run_summary(report: RunReport) -> dict[str, Any]:
    """Report paths, exit code and counts of a finished run, as plain JSON values."""
    from connector.report.document import report_meaning

    return {
        "pipeline": report.pipeline_name,
        "run_id": report.run_id,
        "exit_code": report.exit_code,
        "exit_meaning": report_meaning(report),
        "report_dir": str(report.report_dir),
        "report_json": str(report.report_dir / "report.json"),
        "report_html": str(report.report_dir / "report.html"),
        "rows": dict(report.rows),
        "duration_s": report.duration_s,
        "mode": report.mode,
        "dry_run": report.dry_run,
    }


def failure_message(report: RunReport) -> str:
    """One line for a failed task: pipeline, run, exit code and meaning, counts, where the report is."""
    s = run_summary(report)
    r = s["rows"]
    return (
        f"pipeline {s['pipeline']} run {s['run_id']}: exit code {s['exit_code']} ({s['exit_meaning']}); "
        f"read {r['read']:,}, delivered {r['delivered']:,}, rejected {r['rejected']:,}, failed {r['failed']:,}, "
        f"skipped {r['skipped']:,}; report: {s['report_json']}"
    )
