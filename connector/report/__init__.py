"""Report: the accounting of a run -> report.json, report.html, the rejects file and the failed file.

Interface: `RunReport(pipeline_name, *, run_id, dry_run, report_dir, ...)` with thread-safe recorders
(`add_read`, `add_rejects`, `add_delivered`, `add_failed`, `add_skipped`, `add_not_sent`,
`record_request`, `record_retry`, ...), `finish(exit_code)` (checks read = delivered + rejected + failed
+ skipped) and `write() -> paths`; `exit_code`, `raise_on_failures()` (RunFailed). Rejected and failed
rows stream to disk through the sinks as they arrive (sinks.py); the JSON document is built in
document.py, the HTML page in html.py; `paths.report_dir_for` picks and checks the run's folder;
`merge.write_merged` sums the reports of a partitioned run's partitions (`report merge`).
"""

from __future__ import annotations

from connector.report.document import EXIT_MEANINGS
from connector.report.run import ReportInvariantError, RunFailed, RunReport
from connector.report.sinks import FAILED_META, REJECT_META, CsvSink, FailedSink, ParquetSink, RejectsSink
from connector.report.stats import LatencyHistogram

__all__ = [
    "EXIT_MEANINGS",
    "FAILED_META",
    "REJECT_META",
    "CsvSink",
    "FailedSink",
    "LatencyHistogram",
    "ParquetSink",
    "RejectsSink",
    "ReportInvariantError",
    "RunFailed",
    "RunReport",
]
