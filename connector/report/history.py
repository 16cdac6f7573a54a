"""Run history: each run appends one JSON line (its summary) to the pipeline's history file.

The file is `report.history` (default `reports/{pipeline}/history.jsonl`, beside the run folders of the
default `report.dir`), resolved against the pipeline's folder; `null` turns history off. The
environment variable BRAZE_CONNECTOR_HISTORY overrides it for every pipeline of the process: a file path,
or `off` (test suites, one-off runs). Lines are
appended whole in one write, so runs of one pipeline never interleave a line; a line that cannot be
parsed (a run killed mid-write) is skipped when reading.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from connector.config import Pipeline
from connector.progress import duration_text
from connector.report.trend import partition_of

if TYPE_CHECKING:
    from connector.report.run import RunReport

log = logging.getLogger(__name__)


ENV_HISTORY = "BRAZE_CONNECTOR_HISTORY"
TREND_RUNS = 19  # report.html shows these earlier runs and the run itself


def history_path(pipeline: Pipeline, env: Mapping[str, str] | None = None) -> Path | None:
    """Where the pipeline's runs are listed, or None when history is off (`report.history: null`, or
    BRAZE_CONNECTOR_HISTORY=off in `env`, default the process environment)."""
    override = (os.environ if env is None else env).get(ENV_HISTORY)
    template = pipeline.report.history if not override else None if override == "off" else override
    if template is None:
        return None
    return pipeline.resolve(template.replace("{pipeline}", pipeline.name))


def run_entry(report: RunReport) -> dict[str, Any]:
    """The summary of a finished run that goes into the history."""
    kind = "validate" if report.mode_reason.startswith("validate only") else ("dry_run" if report.dry_run else "run")
    return {
        "run_id": report.run_id,
        "pipeline": report.pipeline_name,
        "started_at": report.started.isoformat().replace("+00:00", "Z"),
        "duration_s": report.duration_s,
        "kind": kind,
        "mode": report.mode,
        "exit_code": report.exit_code,
        "rows": dict(report.rows),
        "rejects_by_stage": dict(report.by_stage),
        "requests": sum(int(ep["requests"]) for ep in report.requests.values()),
        "rate_limited": report.rate_limited,
        "report_dir": str(report.report_dir),
        "partition": partition_of(report.partition),
    }



def append_history(path: Path, report: RunReport) -> None:
    """Append the run's summary line; a history that cannot be written is a warning, never a failed run."""
    line = orjson.dumps(run_entry(report)) + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            fh.write(line)
    except OSError as e:
        log.warning("could not append the run to the history file %s: %s", path, e.strerror or e)


ALL = "all"  # read_history's `partition` for every run, whole or partition


def read_history(path: Path, last: int = 20, partition: str | None = ALL) -> list[dict[str, Any]]:
    """The last `last` runs of the history file, oldest first (empty when there is no file).

    `partition`: only the runs of that `--partition` ("2/4"), or None for the runs of the whole pipeline
    (lines written before the history named the partition count as such); default every run.
    """
    if not path.is_file():
        return []
    out: deque[dict[str, Any]] = deque(maxlen=max(1, last))
    with path.open("rb") as fh:
        for raw in fh:
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and (partition == ALL or entry.get("partition") == partition):
                out.append(entry)
    return list(out)


def recent_runs(path: Path | None, last: int = TREND_RUNS, partition: str | None = None) -> list[dict[str, Any]]:
    """The runs report.html's trend shows (oldest first): the earlier runs of the same `partition` ("2/4",
    None for runs of the whole pipeline), so the parts of a partitioned run each have their own trend; a
    history that cannot be read is a warning."""
    if path is None:
        return []
    try:
        return read_history(path, last, partition)
    except OSError as e:
        log.warning("could not read the history file %s for the report's trend: %s", path, e.strerror or e)
        return []


def history_lines(entries: list[dict[str, Any]]) -> list[str]:
    """A table of runs that fits 80 columns: when, kind, exit code, rows, 429s, duration."""
    lines = [f"{'started (UTC)':<16} {'kind':<8} {'exit':>4} {'read':>9} {'delivered':>9} {'rejected':>8} "
             f"{'failed':>7} {'429s':>5} {'time':>6}"]  # fmt: skip
    for e in entries:
        r = e.get("rows", {})
        started = str(e.get("started_at", ""))[:16].replace("T", " ")
        took = e.get("duration_s")
        lines.append(
            f"{started:<16} {e.get('kind', ''):<8} {e.get('exit_code', ''):>4} {_count(r.get('read', 0), 9)} "
            f"{_count(r.get('delivered', 0), 9)} {_count(r.get('rejected', 0), 8)} "
            f"{_count(r.get('failed', 0), 7)} {_count(e.get('rate_limited', 0), 5)} "
            f"{duration_text(took) if isinstance(took, int | float) else '-':>6}"
        )
    return lines


def _count(n: int, width: int) -> str:
    """The count right-aligned in `width` characters: 1,234,567, else 12.3k / 123.5M / 1.2G."""
    unit, scale = ("k", 1e3) if n < 1e6 else ("M", 1e6) if n < 1e9 else ("G", 1e9)
    for text in (f"{n:,}", f"{n / scale:.1f}{unit}", f"{n / scale:.0f}{unit}"):
        if len(text) <= width:
            break
    return text.rjust(width)
