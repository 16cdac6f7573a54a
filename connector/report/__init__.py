"""The results report of a run: RunReport -> report.json, report.html, rejects and failed files."""

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
