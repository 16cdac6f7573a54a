"""Run history: each run appends one JSON line when it starts and one when it ends, to the pipeline's history file.

The file is `report.history` (default `reports/{pipeline}/history.jsonl`, beside the run folders of the
default `report.dir`), resolved against the pipeline's folder; `null` turns history off. The
environment variable BRAZE_CONNECTOR_HISTORY overrides it for every pipeline of the process: a file path,
or `off` (test suites, one-off runs). Lines are
appended whole in one write, so runs of one pipeline never interleave a line; a line that cannot be
parsed (a run killed mid-write) is skipped when reading.

The start line (`status: running`, with the run's pid and host) is there so that a run killed with kill -9,
which writes nothing more, is still listed: reading the file, the end line of a run (its summary,
`status: finished`, or `error` when it ended in an exception) takes the place of its start line, and a start
line left alone is `running` while its process lives and `interrupted` once it is gone. Lines of older
versions (no `status`) are finished runs. Appending rather than rewriting keeps partitions of one pipeline,
which share the file, from losing each other's lines.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from connector.config import Pipeline
from connector.processes import alive, this_process
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


def _kind(report: RunReport) -> str:
    if report.mode_reason.startswith("validate only"):
        return "validate"
    return "dry_run" if report.dry_run else "run"


def _started_at(report: RunReport) -> str:
    return report.started.isoformat().replace("+00:00", "Z")


def run_entry(report: RunReport) -> dict[str, Any]:
    """The summary of a finished run that goes into the history: its start line's keys, and its counts."""
    return {
        **start_entry(report),
        "status": "finished",
        "duration_s": report.duration_s,
        "exit_code": report.exit_code,
        "rows": dict(report.rows),
        "rejects_by_stage": dict(report.by_stage),
        "requests": sum(int(ep["requests"]) for ep in report.requests.values()),
        "rate_limited": report.rate_limited,
    }


def start_entry(report: RunReport) -> dict[str, Any]:
    """The line a run writes as it starts: what it is and which process runs it."""
    return {
        "run_id": report.run_id,
        "pipeline": report.pipeline_name,
        "started_at": _started_at(report),
        "kind": _kind(report),
        "mode": report.mode,
        "report_dir": str(report.report_dir),
        "partition": partition_of(report.partition),
        "status": "running",
        **this_process(),
    }


def record_error(path: Path | None, report: RunReport, error: BaseException) -> None:
    """The end line of a run that ended in an exception, without a report: `error` (with the exit code of the
    connector's own errors), or `interrupted` for Ctrl-C (KeyboardInterrupt). Nothing when history is off."""
    if path is None:
        return
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "error"
    append_history(path, report, {**start_entry(report), "status": status, "exit_code": getattr(error, "exit_code", None)})


def append_history(path: Path, report: RunReport, entry: dict[str, Any] | None = None) -> None:
    """Append a line (default: the finished run's summary); a history that cannot be written is a warning,
    never a failed run."""
    line = orjson.dumps(run_entry(report) if entry is None else entry) + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            fh.write(line)
    except OSError as e:
        log.warning("could not append the run to the history file %s: %s", path, e.strerror or e)


ALL = "all"  # read_history's `partition` for every run, whole or partition


def read_history(path: Path, last: int = 20, partition: str | None = ALL, *,
                 finished: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """The last `last` runs of the history file, oldest first (empty when there is no file), each with its
    `status`: finished, error, running or interrupted (a start line whose process is gone).

    `partition`: only the runs of that `--partition` ("2/4"), or None for the runs of the whole pipeline
    (lines written before the history named the partition count as such); default every run.
    `finished`: only the runs that ended with a report (their counts are whole).
    """
    if not path.is_file():
        return []
    # Whether a start line ends is known only further down: with `finished`, keep every run until the end.
    out: deque[dict[str, Any]] = deque(maxlen=None if finished else max(1, last))
    started: dict[tuple[Any, Any], dict[str, Any]] = {}  # start lines not yet ended, by (run_id, pid)
    with path.open("rb") as fh:
        for raw in fh:
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            key = (entry.get("run_id"), entry.get("pid"))
            if entry.get("status") != "running" and key in started:
                start = started.pop(key)  # the end line takes the start line's place (it is in `out`, or gone)
                start.clear()
                start.update(entry)
            elif partition == ALL or entry.get("partition") == partition:
                if entry.get("status") == "running":
                    started[key] = entry
                out.append(entry)
    for entry in out:
        entry.setdefault("status", "finished")  # lines of older versions
        if entry["status"] == "running" and not _running(entry):
            entry["status"] = "interrupted"
    if finished:
        return [e for e in out if e["status"] == "finished"][-max(1, last):]
    return list(out)


def _running(entry: dict[str, Any]) -> bool:
    """A start line's process still runs (on another host it cannot be told: taken as running)."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or entry.get("host") not in (None, socket.gethostname()):
        return True
    started = entry.get("pid_started")
    return alive(pid, started if isinstance(started, int) else None)


def recent_runs(path: Path | None, last: int = TREND_RUNS, partition: str | None = None) -> list[dict[str, Any]]:
    """The runs report.html's trend shows (oldest first): the earlier runs of the same `partition` ("2/4",
    None for runs of the whole pipeline), so the parts of a partitioned run each have their own trend; a
    history that cannot be read is a warning."""
    if path is None:
        return []
    try:
        return read_history(path, last, partition, finished=True)
    except OSError as e:
        log.warning("could not read the history file %s for the report's trend: %s", path, e.strerror or e)
        return []


def history_lines(entries: list[dict[str, Any]]) -> list[str]:
    """A table of runs that fits 80 columns: when, kind, partition, exit code, rows, 429s, duration; a run
    with no end line says whether it is running or was interrupted (killed, or its machine went down)."""
    lines = [f"{'started (UTC)':<16} {'kind':<8} {'part':<5} {'exit':>4} {'read':>7} {'deliv.':>8} {'rejects':>7} "
             f"{'failed':>6} {'429s':>4} {'time':>6}"]  # fmt: skip
    for e in entries:
        r = e.get("rows", {})
        started = str(e.get("started_at", ""))[:16].replace("T", " ")
        head = f"{started:<16} {e.get('kind', ''):<8} {e.get('partition') or '-':<5}"
        status = e.get("status", "finished")
        if status != "finished":
            lines.append(f"{head} {_unfinished(e, status)}"[:80])
            continue
        took = e.get("duration_s")
        lines.append(
            f"{head} {e.get('exit_code', ''):>4} {_count(r.get('read', 0), 7)} {_count(r.get('delivered', 0), 8)} "
            f"{_count(r.get('rejected', 0), 7)} {_count(r.get('failed', 0), 6)} {_count(e.get('rate_limited', 0), 4)} "
            f"{duration_text(took) if isinstance(took, int | float) else '-':>6}"
        )
    return lines


def _unfinished(e: dict[str, Any], status: str) -> str:
    """The rest of a table row for a run with no summary: running, interrupted, or ended in an error."""
    pid = e.get("pid", "?")
    if status == "running":
        where = f" on {str(e['host'])[:16]}" if e.get("host") not in (None, socket.gethostname()) else ""
        return f"   - running (pid {pid}{where})"
    if status == "interrupted":
        return f"   - interrupted (pid {pid} gone, no report)"
    code = e.get("exit_code")
    return f"{'-' if code is None else code:>4} ended in an error, without a report"


def _count(n: int, width: int) -> str:
    """The count right-aligned in `width` characters: 1,234,567, else 12.3k / 123.5M / 1.2G."""
    unit, scale = ("k", 1e3) if n < 1e6 else ("M", 1e6) if n < 1e9 else ("G", 1e9)
    for text in (f"{n:,}", f"{n / scale:.1f}{unit}", f"{n / scale:.0f}{unit}"):
        if len(text) <= width:
            break
    return text.rjust(width)
