"""The report folder of a run: --report-dir or report.dir, placeholders filled, checked writable up front.

A folder that already holds a run (its report.json, failed.csv or rejects file) is never overwritten: the
new run writes to a folder beside it named with its run id, unless the caller asks to overwrite.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from pathlib import Path

from connector.config import Pipeline
from connector.config.paths import fill_template
from connector.errors import ConfigError

log = logging.getLogger(__name__)

# What a run leaves in its folder (RunReport.write and the sinks).
RUN_FILES = ("report.json", "report.html", "rejects.csv", "rejects.parquet", "failed.csv", "confirmed.jsonl",
             "removed.csv")
RUN_DIRS = ("sample_requests",)
# The pipeline file an upload writes into its report folder as it starts (upload_cli.py): the file a
# `--resume` of that folder runs, even after a kill -9.
PIPELINE_FILE = "pipeline.yaml"


def run_command(pipeline: Pipeline, run_dir: str | Path, args: str = "") -> str:
    """`braze-connector run` of the pipeline of the run in `run_dir`, with `args`: its pipeline file, or, for a
    pipeline built without one (an upload, which has no --resume, --retry-failed or --ignore-unfinished of
    its own), the pipeline file in the run's folder."""
    file = pipeline.file or str(Path(run_dir) / PIPELINE_FILE)
    return f"braze-connector run {file}" + (f" {args}" if args else "")


def resume_command(pipeline: Pipeline, run_dir: str | Path) -> str:
    """The command that finishes the run of `run_dir`."""
    return run_command(pipeline, run_dir, f"--resume {run_dir}")


def retry_command(pipeline: Pipeline, run_dir: str | Path) -> str:
    """The command that sends the rows listed in the failed file of the run in `run_dir` again."""
    return run_command(pipeline, run_dir, f"--retry-failed {run_dir}")


def report_dir_for(pipeline: Pipeline, override: str | Path | None, run_id: str, *, overwrite: bool = False,
                   partition: str | None = None) -> Path:
    """--report-dir over report.dir, with {pipeline} and {run_id} filled in.

    {partition} is `p2of4` (or `all`); a partitioned run whose folder names neither {run_id} nor {partition}
    is a ConfigError (the partitions would overwrite each other's reports). A relative report.dir resolves against the pipeline's folder (like sources and state); a relative
    --report-dir against the current folder. A folder holding an earlier run gives `<folder>-<run_id>`
    instead, or with `overwrite` the earlier run's files are removed. A path that cannot become a
    writable folder is a ConfigError here, before anything is read.
    """
    template = str(override) if override is not None else pipeline.report.dir
    key = "--report-dir" if override is not None else "report.dir"
    if partition is not None and "{run_id}" not in template and "{partition}" not in template:
        raise ConfigError(
            f"{key} {template!r}: a partitioned run needs its own report folder; put {{partition}} (or {{run_id}}) "
            "in it, e.g. reports/{pipeline}/2024-06-01/{partition}"
        )
    values = {"pipeline": pipeline.name, "run_id": run_id, "partition": partition or "all"}
    path = fill_template(template, key, values,
                         None if override is not None else Path(pipeline.base_dir))
    problem = _unwritable(path)
    if problem:
        raise ConfigError(f"{key} {template!r}: cannot write the report to {path} ({problem}); choose another folder")
    if holds_run(path):
        if overwrite:
            clear_run(path)
            log.warning("report folder %s held an earlier run: its files were replaced (--overwrite)", path)
        else:
            taken = path
            path = path.with_name(f"{path.name}-{run_id}")
            log.warning("report folder %s already holds a run; this run's report goes to %s "
                        "(--overwrite to replace it)", taken, path)  # fmt: skip
    return path


def holds_run(path: Path) -> bool:
    """True when `path` holds the files of a run."""
    return any((path / name).exists() for name in RUN_FILES)


def clear_run(path: Path) -> None:
    """Remove an earlier run's files from `path` (other files are left alone)."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(path / name, ignore_errors=True)


def report_root(pipeline: Pipeline, override: str | Path | None) -> Path:
    """The folder a pipeline's runs share: the report folder's path up to the part holding {run_id} or
    {partition} (the folder itself when the template has neither). The run lock of the pipeline lives there."""
    template = str(override) if override is not None else pipeline.report.dir
    parts = Path(template.replace("{pipeline}", pipeline.name)).parts
    fixed = list(itertools.takewhile(lambda p: "{run_id}" not in p and "{partition}" not in p, parts))
    shared = Path(*fixed) if fixed else Path(".")
    return shared if override is not None else pipeline.resolve(str(shared))


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot be (or become) a writable folder, or None; creates nothing."""
    for folder in (path, *path.absolute().parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable"
            return None
    return None
