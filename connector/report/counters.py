"""The counters of one run (what report.json is built from), apart from the recorders that fill them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from connector.report.sinks import DUPLICATED_FILE, CsvSink, FailedSink, ParquetSink, RejectsSink
from connector.report.stats import LatencyHistogram


class ReportCounters:
    """The state of a run's report; RunReport (run.py) adds the thread-safe recorders."""

    def __init__(
        self,
        pipeline_name: str,
        *,
        run_id: str | None = None,
        dry_run: bool = False,
        report_dir: Path,
        source_format: Literal["csv", "parquet"] = "csv",
        max_reject_fraction: float = 0.05,
        sample_bodies: int = 5,
        rate_limits: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        csv_formula_escape: bool = True,
    ) -> None:
        self.pipeline_name = pipeline_name
        self.started = datetime.now(UTC)
        self.run_id = run_id or self.started.strftime("%Y%m%dT%H%M%SZ")
        self.dry_run, self.max_reject_fraction, self.sample_bodies = (
            dry_run,
            max_reject_fraction,
            sample_bodies,
        )
        self.report_dir = Path(report_dir)
        self.report_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.RLock()
        self.rows = {"read": 0, "delivered": 0, "rejected": 0, "failed": 0, "skipped": 0}
        self.by_stage: Counter[str] = Counter()
        self.by_rule: Counter[str] = Counter()
        self.skipped_by_reason: Counter[str] = Counter()
        self.sample: list[dict[str, Any]] = []
        self.masked: dict[str, frozenset[str]] = {}  # per stream: columns whose sample values are masked
        self._sample_rules: Counter[str] = Counter()
        self.rejects: CsvSink | ParquetSink = RejectsSink(self.report_dir, source_format, escape=csv_formula_escape)
        self.failed: CsvSink = FailedSink(self.report_dir, escape=csv_formula_escape)
        self._confirmed: Any = None
        self.confirmed_count = 0
        self.removed: dict[str, Any] | None = None  # mirror mode, per stream (delivery/mirror.py)
        self.requests: dict[str, dict[str, Any]] = {}
        self.probes: list[dict[str, Any]] = []  # requests that ask, not deliver (the sync-access probe)
        self.by_status: Counter[str] = Counter()
        self.retry_reasons: Counter[str] = Counter()
        self.retries = self.rate_limited = self.objects_ok = 0
        self.latency = LatencyHistogram()
        # The sending window: from the first request's start to the last answer (seconds since start).
        self.first_sent_s: float | None = None
        self.last_answer_s: float | None = None
        self.timeline: dict[int, list[int]] = {}
        self.per_second_by_endpoint: dict[str, Counter[int]] = {}
        self.rate_limits = dict(rate_limits or {})
        self.mode: str | None = None
        self.mode_reason = ""
        self.destination: dict[str, str | None] = {"kind": None, "url": None}
        self.table_checks: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.streams: dict[str, dict[str, Any]] = {}
        self.sample_files: list[Path] = []
        self.emulator: dict[str, Any] | None = None
        self.retry: dict[str, Any] | None = None
        self.http_engine: str | None = None  # what sent the requests (None: a dry run, no client)
        self.delta: dict[str, Any] | None = None  # delta sync: the state file
        self.shared_limits: dict[str, Any] | None = None  # write.shared_limits: the budget shared through Redis
        self.partition: dict[str, Any] | None = None  # run --partition K/N: which part of each stream
        self.stop: dict[str, Any] | None = None  # a stop that cut the run short: reason, how, exit code
        self.not_sent = 0  # skipped rows of a stopped run, listed in the failed file for a retry run
        self.unknown = 0  # failed rows with outcome "unknown" (Braze may have applied them)
        self.unchecked = 0  # of those, rows read after the stop and never checked  # a retry run: which failed file, how many rows
        # Rows Braze may have applied more than once, by reason, and their file (created with the first).
        self.possibly_duplicated = 0
        self.duplicated_by_reason: Counter[str] = Counter()
        self.duplicated: CsvSink | None = None
        (self.report_dir / DUPLICATED_FILE).unlink(missing_ok=True)  # a reused folder's is not this run's
        self.reads_sql = False  # a stream reads SQL: its rows are sent again by a new run, never by row number
        self.rerun = "braze-connector run PIPELINE"  # the command that runs this pipeline again (report.paths)
        self.resume: dict[str, Any] | None = None  # a resumed run: its journal and what it carried over
        self.alerts: dict[str, Any] | None = None  # `alerts:` in the pipeline: what fired, whether it was posted
        self.recent_runs: list[dict[str, Any]] = []  # the history's last runs before this one (report.html trend)
        self.finished: datetime | None = None
        self.duration_s: float | None = None
        self._exit_code: int | None = None
        self.invariant_ok: bool | None = None

    def elapsed(self) -> float:
        """Seconds since the report was created (by the injected clock)."""
        return float(self._clock() - self._t0)

    def compute_exit_code(self) -> int:
        """0 when nothing failed and rejects are within max_reject_fraction of rows read, else 1."""
        with self._lock:
            read, rejected = self.rows["read"], self.rows["rejected"]
            over = read > 0 and rejected / read > self.max_reject_fraction
            return 1 if self.rows["failed"] or over else 0

    @property
    def stopped(self) -> bool:
        """A stop (a signal, Ctrl-C or the caller's StopToken) cut the run short: rows may be left to send."""
        return self.stop is not None

    @property
    def exit_code(self) -> int:
        """The run's exit code (as given to finish(), else derived from the counts)."""
        return self.compute_exit_code() if self._exit_code is None else self._exit_code
