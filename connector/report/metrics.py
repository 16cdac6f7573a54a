"""The run's counters as an OpenMetrics text file, for node_exporter's textfile collector.

`report.metrics_file` (e.g. `/var/lib/node_exporter/textfile/braze_{pipeline}.prom`) names the file; each
run that sends replaces it atomically (a temporary file in the same folder, then a rename), so the
collector never reads half a file. Every metric is a gauge describing the last run (its counts start at
zero each run), labelled `pipeline` and, for rows, `stream`. Gauges with no unit metadata read the same
in OpenMetrics 1.0 and in Prometheus' text format 0.0.4 (which node_exporter parses; `# EOF` is a
comment there). A partitioned run writes `<name>.p<K>of<N><suffix>`, one file per partition.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from connector.config import Pipeline

log = logging.getLogger(__name__)

PREFIX = "braze_connector_last_run_"
ROW_KEYS = ("read", "delivered", "rejected", "failed", "skipped")


def metrics_path(pipeline: Pipeline, partition: dict[str, Any] | None = None) -> Path | None:
    """Where the run's metrics go (resolved against the pipeline's folder), or None when there is no file."""
    template = pipeline.report.metrics_file
    if template is None:
        return None
    path = pipeline.resolve(template.replace("{pipeline}", pipeline.name))
    if partition:
        path = path.with_name(f"{path.stem}.p{partition['k']}of{partition['n']}{path.suffix}")
    return path


def _label(value: object) -> str:
    """A label value, escaped as both formats require (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, help_text: str, samples: Iterable[tuple[dict[str, object], float]]) -> list[str]:
    lines = [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
        lines.append(f"{PREFIX}{name}{{{text}}} {number}")
    return lines


def _epoch(iso: str | None) -> float:
    if not iso:
        return 0.0
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def render_metrics(doc: dict[str, Any]) -> str:
    """The OpenMetrics text of a report.json document (ends with `# EOF`)."""
    p = {"pipeline": doc["pipeline"]}
    code = int(doc["exit_code"] or 0)
    req = doc["requests"]
    lines: list[str] = []
    lines += _family("timestamp_seconds", "When the last run finished (Unix time).",
                     [(p, _epoch(doc.get("finished_at") or doc.get("started_at")))])  # fmt: skip
    lines += _family("success", "1 when the last run exited 0, else 0.", [(p, 1 if code == 0 else 0)])
    lines += _family("exit_code", "The last run's exit code (README: Exit codes).", [(p, code)])
    lines += _family("duration_seconds", "How long the last run took.", [(p, float(doc["duration_s"] or 0))])
    for key in ROW_KEYS:
        samples = [({**p, "stream": s["name"]}, s[key]) for s in doc["streams"]]
        lines += _family(f"rows_{key}", f"Rows {key} by the last run, per stream.", samples)
    lines += _family("requests", "HTTP requests the last run sent (final attempts).", [(p, req["total"])])
    lines += _family("rate_limited", "429 answers the last run received, retried or final.",
                     [(p, req["rate_limited"])])  # fmt: skip
    lines += _family("retries", "Retries the last run made.", [(p, req["retries"])])
    return "\n".join([*lines, "# EOF"]) + "\n"


def write_metrics(path: Path, doc: dict[str, Any]) -> bool:
    """Replace `path` with the run's metrics atomically; a file that cannot be written is a warning."""
    text = render_metrics(doc).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)  # node_exporter often runs as another user
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        log.warning("could not write the metrics file %s: %s", path, e.strerror or e)
        return False
    return True
