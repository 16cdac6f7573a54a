"""The end of a run: write the report, post the alerts it trips, write the metrics file.

Also for a run that failed before its first row was read (a missing source, a bad suite, the run lock
held: exit 2 with no report): its failure alert and metrics file. Neither an alert nor the metrics file
can change a run's exit code; their failures are warnings.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connector.config import Pipeline
from connector.errors import ConnectorError
from connector.report.alerts import Fired, evaluate, send_alerts
from connector.report.document import EXIT_MEANINGS
from connector.report.metrics import metrics_path, write_metrics
from connector.report.run import RunReport

log = logging.getLogger(__name__)


def publish_run(pipeline: Pipeline, report: RunReport, env: Mapping[str, str]) -> None:
    """Write report.json and report.html, then post the alert (if a trigger fired) and write the metrics
    file (runs that send); the report is written again with the alert's outcome."""
    alerts = pipeline.alerts
    sends = not report.dry_run
    fired: list[Fired] = []
    if alerts is not None and (sends or alerts.dry_runs):
        fired = evaluate(alerts, report.to_dict())
        # Written first, so the report the alert points at exists when it arrives.
        report.alerts = {"url_env": alerts.url_env, "fired": [{"trigger": f.trigger, "detail": f.detail,
                         "delivered": None} for f in fired], "posted": False, "delivered": False,
                         "status": None, "error": None}  # fmt: skip
    report.write()
    if alerts is not None and fired:
        try:
            summary, warning = send_alerts(alerts, report.to_dict(), env)
        except Exception as e:  # an alert must never break the run: a bug here is a warning, like a failed post
            # The frames, not the message: an exception's text might quote the URL.
            log.debug("alert failed (%s) at:\n%s", type(e).__name__, "".join(traceback.format_tb(e.__traceback__)))
            summary, warning = {**(report.alerts or {}), "error": type(e).__name__}, f"alert not sent: {type(e).__name__}"
        report.alerts = summary
        if warning:
            report.add_warning(warning)
        report.write(announce=False)
    path = metrics_path(pipeline, report.partition)
    if path is not None and sends:
        write_metrics(path, report.to_dict())


def publish_failure(pipeline: Pipeline, error: ConnectorError, env: Mapping[str, str], *, offline: bool,
                    partition: dict[str, int] | None = None) -> None:  # fmt: skip
    """A run that stopped before reading a row (no report): its failure alert and its metrics file."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    doc: dict[str, Any] = {"pipeline": pipeline.name, "run_id": None, "exit_code": error.exit_code,
                           "exit_meaning": EXIT_MEANINGS.get(error.exit_code, "failed"), "started_at": now,
                           "finished_at": now, "duration_s": 0.0, "rows": {}, "streams": [], "files": {},
                           "requests": {"total": 0, "rate_limited": 0, "retries": 0}}  # fmt: skip
    alerts = pipeline.alerts
    if alerts is not None and alerts.on_failure and error.exit_code and (not offline or alerts.dry_runs):
        only_failure = alerts.model_copy(update={"rejects_over": None, "reject_fraction_over": None,
                                                 "rows_read_below": None, "duration_over_s": None})  # fmt: skip
        try:
            _, warning = send_alerts(only_failure, doc, env, detail=str(error))
        except Exception as e:  # the run's own error is what the caller must see, not a bug in alerting
            warning = f"alert not sent: {type(e).__name__}"
        if warning:
            log.warning("%s", warning)
    path = metrics_path(pipeline, partition)
    if path is not None and not offline:
        write_metrics(path, doc)
