"""The report folder of a run: --report-dir or report.dir, placeholders filled, checked writable up front."""

from __future__ import annotations

import os
from pathlib import Path

from connector.config import Pipeline
from connector.config.paths import fill_template
from connector.errors import ConfigError


def report_dir_for(pipeline: Pipeline, override: str | Path | None, run_id: str) -> Path:
    """--report-dir over report.dir, with {pipeline} and {run_id} filled in; relative to the current folder.

    A path that cannot become a writable folder is a ConfigError here, before anything is read (nothing is
    created: RunReport makes the folder).
    """
    template = str(override) if override is not None else pipeline.report.dir
    key = "--report-dir" if override is not None else "report.dir"
    path = fill_template(template, key, {"pipeline": pipeline.name, "run_id": run_id})
    problem = _unwritable(path)
    if problem:
        raise ConfigError(f"{key} {template!r}: cannot write the report to {path} ({problem}); choose another folder")
    return path


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
