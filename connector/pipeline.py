"""run_pipeline(): a run set up and handed to stages.Run, which knows the stage order.

Before anything is read, every stream's files are opened and their columns checked (readers.check_files;
the plans, `Plan`), a sending run takes the pipeline's run lock (runlock.py), and the run's state (delta,
watermarks), journal and report are opened; stages.Run then reads, validates, maps, delivers and reports.

A retry run (`retry`, from a failed file) re-reads the same sources and keeps only the rows that failed;
table-level checks are not evaluated again (a subset of the table proves nothing about the table).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from connector import readers
from connector.config import DEFAULT_RATE_LIMITS, Pipeline, Stream
from connector.config.destination import resolve_destination
from connector.delivery.mode import choose_mode
from connector.delivery.shared_budget import resolve_shared_limits
from connector.delivery.sync_access import asked_for_sync, needs_probe
from connector.delivery.unfinished import Unfinished, check_unfinished
from connector.delta import check_partitioned_state, open_incremental, open_state
from connector.errors import ConfigError, ConnectorError, UnfinishedRun
from connector.logs import run_context
from connector.mapping import columns_read
from connector.progress import Progress
from connector.quiet_gc import quiet_gc
from connector.readers.dbscope import shared_databases
from connector.readers.estimate import estimate_rows, is_parquet
from connector.readers.failed import SQL_RUN_AGAIN
from connector.report import RunFailed, RunReport
from connector.report.history import append_history, history_path, recent_runs, record_error, start_entry
from connector.report.masking import columns_to_mask
from connector.report.paths import report_dir_for, run_command
from connector.runlock import RunLocks, lock_files, shared_lock_files
from connector.stages import Plan, Run, suite_for
from connector.stop import StopToken
from connector.validation.tables import has_table_expectations

if TYPE_CHECKING:
    from connector.delivery.resume import ResumeSet
    from connector.delta import Incremental
    from connector.readers.partition import Partition

__all__ = ["run_pipeline"]

logger = logging.getLogger(__name__)


def run_pipeline(
    pipeline: Pipeline,
    *,
    mode: str | None = None,
    report_dir: str | Path | None = None,
    dry_run: bool = False,
    validate_only: bool = False,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    retry: readers.RetrySet | None = None,
    full: bool = False,
    overwrite: bool = False,
    stop: StopToken | None = None,
    raise_on_failure: bool = True,
    resume: ResumeSet | None = None,
    partition: Partition | None = None,
    allow_deletes: int | None = None,
    ignore_unfinished: bool = False,
    on_report_dir: Callable[[Path], None] | None = None,
) -> RunReport:
    """Run every stream of the pipeline and return the finished, written RunReport.

    `validate_only` reads, validates and maps without any network; `dry_run` also builds the exact
    request bodies (a sample is written under the report folder) and sends nothing. A report folder that
    already holds a run is left alone (the run writes beside it) unless `overwrite`. Errors found before
    any row is read raise; once the run has started, every error ends up in the report's exit code
    (2 source/suite, 3 destination fatal, 4 stopped) and the report is always written. `stop.request()`
    (from any thread) stops the run gracefully, a second request at once. A delivering run keeps a
    journal (delivery.journal); `resume` continues an interrupted run from its journal, in its folder.
    `allow_deletes`: mirror streams may delete up to that many users past `max_delete_fraction`.
    `on_report_dir`: called with a new run's report folder once it is chosen, before any row is read (upload
    writes its pipeline file there, so that even a killed upload can be resumed).

    Raises:
        RunFailed: the report's exit code is not 0 (`.report` holds it), unless raise_on_failure=False.
        ConfigError: bad mode, destination URL, missing API key, or a missing/malformed suite (SuiteError).
        SourceError: a stream's source matches no file, cannot be opened or lacks a column it needs.
        RunLocked: another run of this pipeline holds its lock (same report root or delta state).
        UnfinishedRun: the last run was killed or stopped and this one would apply its rows of stateless,
            non-idempotent streams again (same files); `ignore_unfinished` sends them anyway.
    """
    locks = RunLocks()
    try:
        with shared_databases():  # the run's PostgreSQL connections share the driver's catalogue (dbscope.py)
            report = _run_pipeline(pipeline, mode, report_dir, dry_run, validate_only, env, progress, retry, full,
                                   stop or StopToken(), locks, overwrite, resume, partition, allow_deletes,
                                   ignore_unfinished, on_report_dir)  # fmt: skip
    except ConnectorError as e:  # before the first row (no report): still alert and update the metrics
        from connector.report.publish import publish_failure  # (alerts, metrics: not before a first request)

        publish_failure(pipeline, e, os.environ if env is None else env, offline=dry_run or validate_only,
                        partition={"k": partition.k, "n": partition.n} if partition else None)
        raise
    finally:
        locks.release()
    if raise_on_failure and report.exit_code:
        raise RunFailed(report)
    return report


def _run_pipeline(pipeline: Pipeline, mode: str | None, report_dir: str | Path | None, dry_run: bool,
                  validate_only: bool, env: Mapping[str, str] | None, progress: Progress | None,
                  retry: readers.RetrySet | None, full: bool, stop: StopToken, locks: RunLocks,
                  overwrite: bool = False, resume: ResumeSet | None = None,
                  partition: Partition | None = None, allow_deletes: int | None = None,
                  ignore_unfinished: bool = False,
                  on_report_dir: Callable[[Path], None] | None = None) -> RunReport:  # fmt: skip
    env = os.environ if env is None else env
    if resume is not None:
        if validate_only or dry_run or retry is not None:
            raise ConfigError("--resume continues a delivering run: not with validate, --dry-run or --retry-failed")
        mode, full, retry = mode or resume.mode, full or resume.full, resume.retry_set()  # as the run began
    if mode is not None and mode not in ("auto", "bulk", "sync"):
        raise ConfigError(f"--mode {mode!r}: allowed values are auto, bulk, sync")
    offline = dry_run or validate_only
    dest = resolve_destination(pipeline, env, offline=offline)
    shared = resolve_shared_limits(pipeline, env, offline=offline)
    label = partition.label if partition else None
    check_partitioned_state(pipeline, label)
    incremental = open_incremental(pipeline, read_only=offline or retry is not None, full=full, partition=label,
                                   env=env)
    try:
        plans = [_plan(pipeline, s, validate_only, retry, env, incremental, partition) for s in pipeline.streams]
        if not offline:
            locks.acquire(pipeline.name, lock_files(pipeline, report_dir, label),
                          shared=shared_lock_files(pipeline, report_dir, label))  # fmt: skip
            locks.acquire_database(pipeline, env, label)
        # The embedded emulator starts empty every run: nothing there to apply twice.
        unfinished = _unfinished(pipeline, report_dir, label, plans, ignore_unfinished) if not offline and \
            resume is None and retry is None and dest.kind != "local" else None
    except BaseException:
        if incremental is not None:
            incremental.close()
        raise
    started = datetime.now(UTC)
    if resume is None:
        run_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}" + (f"-{label}" if label else "")
        out = report_dir_for(pipeline, report_dir, run_id, overwrite=overwrite, partition=label)
        if on_report_dir is not None:
            on_report_dir(out)
    else:
        run_id, out = resume.run_id, resume.run_dir
    resume_warnings = resume.check(pipeline, {p.stream.name: p.files for p in plans}, label, report_dir) \
        if resume else []
    # The rejects file is Parquet only when every source is (it holds the original columns of all streams).
    all_parquet = all(p.files and all(is_parquet(p.stream.source, f) for f in p.files) for p in plans)
    report = RunReport(
        pipeline.name,
        run_id=run_id,
        dry_run=offline,
        report_dir=out,
        source_format="parquet" if all_parquet else "csv",
        max_reject_fraction=pipeline.report.max_reject_fraction,
        sample_bodies=pipeline.report.sample_bodies,
        csv_formula_escape=pipeline.report.csv_formula_escape,
    )
    history = history_path(pipeline)
    report.recent_runs = recent_runs(history, partition=f"{partition.k}/{partition.n}" if partition else None)
    report.set_rate_limits({e: pipeline.write.rate_limit(e).requests / pipeline.write.rate_limit(e).per_seconds
                            for e in DEFAULT_RATE_LIMITS})  # fmt: skip
    for p in plans:
        report.add_stream(p.stream.name, p.stream.kind, p.stream.source.describe(),
                          columns_to_mask(p.stream, pipeline.report.mask_columns))  # fmt: skip
        for f in p.empty:
            report.add_warning(f"empty source: stream {p.stream.name}: {f} is empty (0 bytes), read as a table "
                               "with no rows")  # fmt: skip
    for w in locks.warnings:
        report.add_warning(w)
    if unfinished is not None:
        report.add_warning(unfinished.warning)
    if partition is not None:
        report.partition = {"k": partition.k, "n": partition.n,
                            "by": {p.stream.name: "file" if p.split_root is None else "identifier" for p in plans}}  # fmt: skip
    left_behind = _note_retry(report, retry, plans) if retry is not None else 0
    for w in resume_warnings:
        report.add_warning(w)
    report.resume = resume.summary if resume is not None else None
    report.reads_sql = any(p.stream.source.is_sql for p in plans)
    report.rerun = run_command(pipeline, report.report_dir)
    chosen, reason = choose_mode(pipeline, mode, [(p.stream, p.rows, p.exact) for p in plans])
    if resume is not None and mode == resume.mode:
        reason = f"resumed run {resume.run_id}: the mode of its first attempt"
    if offline and needs_probe(pipeline, mode, chosen):
        reason += " (a run first probes whether the key can use /users/track/sync, a Braze beta)"
    if validate_only:
        reason = f"validate only, nothing sent (a run would use {chosen}: {reason})"
    report.set_mode(chosen, reason)
    logger.info("pipeline %s run %s: mode %s (%s)", pipeline.name, run_id, chosen, reason,
                extra={"pipeline": pipeline.name, "run_id": run_id})  # fmt: skip
    run = Run(pipeline, report, progress or Progress.disabled(), started, validate_only, retry, stop,
               resume)  # fmt: skip
    run.probe_sync = not offline and needs_probe(pipeline, mode, chosen)
    run.sync_asked = asked_for_sync(pipeline, mode)
    if left_behind:
        run.exit_code = 1  # failed rows this run does not send (no stream, or unknown left out): not a success
    run.env, run.incremental = env, incremental
    run.partition = partition
    run.shared = shared
    if history is not None:
        append_history(history, report, start_entry(report))  # so a run killed with kill -9 is still listed
    try:  # a state that cannot be opened (damaged, say) or a refused mirror: close what was opened
        run.delta = open_state(pipeline, read_only=offline, full=full, env=env, partition=label)
        if run.delta is not None:
            file = pipeline.state.url_env is None
            report.delta = {"state_file": run.delta.label if file else None, "state": run.delta.label,
                            "full": full, "read_only": offline, "not_recorded": None}  # fmt: skip
        if not validate_only and any(s.mirror is not None for s in pipeline.streams):
            from connector.delivery.mirror import open_mirror  # imported by runs with a mirror stream only

            run.mirror = open_mirror(pipeline, run.delta, report, dry_run=dry_run, allow_deletes=allow_deletes,
                                     retrying=retry is not None, resuming=resume is not None,
                                     partitioned=partition is not None)  # fmt: skip
    except BaseException as e:
        if run.delta is not None:
            run.delta.close()
        if incremental is not None:
            incremental.close()
        record_error(history, report, e)
        raise
    try:
        if not offline:
            from connector.delivery.resume import open_journal

            run.journal = open_journal(pipeline, out, {p.stream.name: p.files for p in plans}, resume,
                                       run_id=run_id, started=started.isoformat(), mode=chosen, full=full,
                                       retry=report.retry)  # fmt: skip
        with quiet_gc(), run_context(pipeline.name, run_id):
            run.execute(plans, dest, chosen, dry_run)
        if run.journal is not None:
            run.journal.close(report.exit_code)  # the end record: this attempt finished and wrote its report
    except BaseException as e:
        record_error(history, report, e)
        raise
    finally:
        if run.delta is not None:
            run.delta.close()
        if incremental is not None:
            incremental.close()
        if run.journal is not None:
            run.journal.close()
    if history is not None:
        append_history(history, report)
    return report


def _plan(pipeline: Pipeline, stream: Stream, validate_only: bool, retry: readers.RetrySet | None,
          env: Mapping[str, str], incremental: Incremental | None,
          partition: Partition | None = None) -> Plan:  # fmt: skip
    base = Path(pipeline.base_dir)
    files = readers.list_files(stream.source, base)
    split_root = None
    if partition is not None:
        if stream.source.is_sql:
            raise ConfigError(
                f"{pipeline.origin}: stream {stream.name} reads an SQL source, which --partition cannot split yet; "
                "partition the query itself, one pipeline file per worker K of N, e.g. in PostgreSQL "
                "WHERE mod(abs(hashtext(id::text)::bigint), N) = K - 1 (hashtext can be negative: without abs, "
                "some rows would belong to no worker)"
            )
        from connector.readers.partition import plan_partition

        files, split_root = plan_partition(stream, files, base, partition)
    since = incremental.since(stream) if incremental is not None else None
    suite = suite_for(pipeline, stream) if stream.expectations else None
    needed = columns_read(stream)
    if suite is not None:
        needed = {**suite.needed_columns(), **needed}
    if stream.source.is_sql:
        rows, exact = _sql_rows(pipeline, stream, retry, env, since, needed)
    elif retry is not None:
        retry.adopt(stream.name, files, base)
        wanted = retry.for_stream(stream.name)
        files = [f for f in files if str(f) in wanted]
        rows, exact = sum(len(wanted[str(f)]) for f in files), True
    else:
        rows, exact = estimate_rows(stream.source, files)
    if split_root is not None and partition is not None:
        rows, exact = rows // partition.n, False  # about 1/N of the rows hash to this partition
    table_first = False
    if suite is not None:
        table_first = (
            retry is None
            and not validate_only
            and stream.on_table_expectation_failure == "fail"
            and has_table_expectations(
                suite, stream.expectations, pipeline.resolve(pipeline.expectations_dir)
            )
        )
    empty = readers.check_files(stream.name, stream.source, files, needed)
    return Plan(stream, files, rows, exact, suite, table_first, empty, since, split_root)


def _sql_rows(pipeline: Pipeline, stream: Stream, retry: readers.RetrySet | None, env: Mapping[str, str],
              since: readers.Since | None, needed: Mapping[str, str]) -> tuple[int, bool]:  # fmt: skip
    """An SQL source's row count (its query runs once as COUNT(*), so a broken query, or one that lacks a
    column the stream reads, stops the run here)."""
    if retry is not None:
        raise ConfigError(
            f"{pipeline.origin}: stream {stream.name} reads an SQL source, which --retry-failed cannot re-read "
            "by row; " + SQL_RUN_AGAIN
        )
    return readers.count_sql(stream.source, Path(pipeline.base_dir), env, since, needed, stream.name,
                             pipeline.origin), True  # fmt: skip


def _unfinished(pipeline: Pipeline, report_dir: str | Path | None, label: str | None, plans: list[Plan],
                ignore: bool) -> Unfinished | None:  # fmt: skip
    """The last run, when killed or stopped short (the lock is held: a journal without an end is a killed
    run's). A plain re-run that would apply its rows again is refused unless `ignore` (--ignore-unfinished)."""
    found = check_unfinished(pipeline, report_dir, label, {p.stream.name: p.files for p in plans})
    if found is not None and found.twice and not ignore:
        raise UnfinishedRun(found.refusal(pipeline))
    return found


def _note_retry(report: RunReport, retry: readers.RetrySet, plans: list[Plan]) -> int:
    """Say what a retry run sends; warn about the failed rows it leaves behind: those no stream of this
    pipeline reads, and those of outcome unknown without --include-unknown. Returns how many it leaves."""
    report.retry = retry.describe()
    orphans = retry.orphans({(p.stream.name, str(f)) for p in plans for f in p.files})
    report.retry["no_stream"] = sum(orphans.values())
    for (stream, f), n in sorted(orphans.items()):
        of = f" (stream {stream})" if stream else ""
        report.add_warning(f"retry: {n:,} failed row(s) of {f}{of} belong to no stream of this pipeline; not sent")
    if retry.unknown_excluded:
        report.add_warning(
            f"retry: {retry.unknown_excluded:,} row(s) with outcome 'unknown' (Braze may have applied them) "
            "were left out; add --include-unknown to send them again (at least once)"
        )
    return sum(orphans.values()) + retry.unknown_excluded

