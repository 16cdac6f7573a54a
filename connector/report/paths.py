"""The report folder of a run: --report-dir or report.dir, placeholders filled, checked writable up front."""

from __future__ import annotations

import os
from pathlib import Path

from connector.config import Pipeline
from connector.errors import ConfigError


def report_dir_for(pipeline: Pipeline, override: str | Path | None, run_id: str,
                   partition: str | None = None) -> Path:  # fmt: skip
    """--report-dir over report.dir, with {pipeline}, {run_id} and {partition} (`p2of4`, or `all`) filled in;
    relative to the current folder.

    A path that cannot become a writable folder is a ConfigError here, before anything is read (nothing is
    created: RunReport makes the folder). So is a partitioned run whose folder names neither {run_id} nor
    {partition}: the partitions would overwrite each other's reports.
    """
    template = str(override) if override is not None else pipeline.report.dir
    key = "--report-dir" if override is not None else "report.dir"
    if partition is not None and "{run_id}" not in template and "{partition}" not in template:
        raise ConfigError(
            f"{key} {template!r}: a partitioned run needs its own report folder; put {{partition}} (or {{run_id}}) "
            "in it, e.g. reports/{pipeline}/2024-06-01/{partition}"
        )
    text = template.replace("{pipeline}", pipeline.name).replace("{run_id}", run_id)
    text = text.replace("{partition}", partition or "all")
    if "{" in text or "}" in text:
        raise ConfigError(
            f"{key} {template!r}: only the placeholders {{pipeline}}, {{run_id}} and {{partition}} are allowed"
        )
    path = Path(text)
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
