"""The stage order of one run (read, validate, map, deliver, report), stream by stream and chunk by chunk.

pipeline.run_pipeline() sets a run up (plans, locks, state, journal, report) and hands it to `Run.execute`:
for each stream, readers.read_source -> parse rejects -> delta's fast path (rows whose source print is the
one stored at their last confirmed delivery are skipped as unchanged: delta/fastpath.py) ->
SuiteRunner.validate -> Chunk.filter(keep) -> mapping.map_chunk -> mapping/contract rejects -> delta ->
Writer.submit; then SuiteRunner.finish() for the
table-level checks, mirror mode's removals, and the stop's accounting. Only this module and pipeline.py
know that order (tests/unit/test_layout.py).

Table-level checks with `on_table_expectation_failure: fail` are evaluated *before* delivery: when a
stream's suites hold any table-level expectation, a first pass reads and validates the whole stream
(nothing is sent); if a check fails, the second pass still rejects the bad rows but counts every valid
row as skipped ("table check failed"), so a failing table is never delivered at all. With `warn` (and in
`validate`) there is one pass and the checks are read at its end.

A stop token (connector.stop) ends the run early like an abort: the rest of the sources is read unchecked
and listed as not_sent (not after a stop at once), requests in flight get write.stop_grace_s, and the
report is written with exit code 4.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from connector import readers
from connector.config import Pipeline, Stream
from connector.config.destination import Destination
from connector.delivery.resume import SQL_NO_RESUME, uncarried
from connector.delivery.shared_budget import SharedTarget
from connector.errors import ConnectorError
from connector.logs import stream_context
from connector.mapping import DateReadings
from connector.progress import Progress
from connector.readers.failed import SQL_RUN_AGAIN
from connector.records import Chunk, Rejected
from connector.report import ReportInvariantError, RunReport
from connector.report.paths import resume_command, retry_command
from connector.stop import StopToken

if TYPE_CHECKING:
    from connector.delivery.client import BrazeClient
    from connector.delivery.journal import Journal
    from connector.delivery.mirror import Mirror
    from connector.delivery.resume import ResumeSet
    from connector.delivery.shared_limits import SharedRateLimiter
    from connector.delivery.writer import Writer
    from connector.delta import DeltaState, Incremental
    from connector.delta.fastpath import FastPath
    from connector.delta.users import ChunkUsers
    from connector.emulator import EmulatorServer
    from connector.readers.partition import Partition
    from connector.validation import SuiteRunner

__all__ = ["Plan", "Run", "suite_for"]

logger = logging.getLogger(__name__)

SKIP_VALIDATE_ONLY = "validate only (nothing sent)"
SKIP_TABLE_CHECK = "table check failed (stream not delivered)"


@dataclass
class Plan:
    """One stream, checked before anything is read: its files, suite and whether it needs a first pass."""

    stream: Stream
    files: list[Path]
    rows: int
    exact: bool
    suite: SuiteRunner | None
    table_first: bool
    empty: list[Path]
    since: readers.Since | None = None
    split_root: Path | None = None  # --partition by identifier: rows are filtered (readers/partition.py)

def _error_kind(e: ConnectorError) -> str:
    """A run-stopping error in words, for a skip reason (never a class name; the error itself is in the report)."""
    kinds = {"ConfigError": "a pipeline error", "SourceError": "a source error", "SuiteError": "a suite error"}
    return kinds.get(type(e).__name__, "an error")


def suite_for(pipeline: Pipeline, stream: Stream) -> SuiteRunner:
    from connector.validation import SuiteRunner  # Great Expectations is slow to import: only when used

    return SuiteRunner(list(stream.expectations), pipeline.resolve(pipeline.expectations_dir))

class Run:
    """The state of one run while its streams go through the stages."""

    def __init__(self, pipeline: Pipeline, report: RunReport, progress: Progress, now: datetime,
                 validate_only: bool, retry: readers.RetrySet | None = None,
                 stop: StopToken | None = None, resume: ResumeSet | None = None) -> None:  # fmt: skip
        self.pipeline = pipeline
        self.stop = stop or StopToken()
        self.report = report
        self.progress = progress
        self.now = now
        self.validate_only = validate_only
        self.retry = retry
        self.resume = resume
        self.journal: Journal | None = None
        self.delta: DeltaState | None = None
        self.incremental: Incremental | None = None
        self.env: Mapping[str, str] = os.environ
        self.writer: Writer | None = None
        self.sync_asked = False  # sync was asked for: an inconclusive probe keeps it
        self.probe_sync = False  # mode auto chose sync, pending the probe of the key (run_pipeline sets it)
        self.cut_short = False  # a stop came before the work was done
        self.shared: SharedTarget | None = None
        self.limiter: SharedRateLimiter | None = None
        self.partition: Partition | None = None
        self.dates: dict[str, DateReadings] = {}  # per stream: how slash dates were read (mapping/dates.py)
        self.mirror: Mirror | None = None
        self._writer_closed = False
        self.streams_done = False  # every stream went through without an exception
        self.exit_code = 0

    def execute(self, plans: list[Plan], dest: Destination, mode: str, dry_run: bool) -> None:
        """Deliver every stream, then finish and write the report whatever happened."""
        report = self.report
        errors: list[ConnectorError] = []
        server: EmulatorServer | None = None
        client: BrazeClient | None = None
        try:
            with self.progress:
                self.progress.follow(report.progress_counts)
                self.progress.set_total(sum(p.rows for p in plans) or None, exact=all(p.exact for p in plans))
                try:
                    if self.validate_only:
                        report.set_destination("none", "")
                    elif dry_run:
                        report.set_destination("dry_run", dest.url or "local")
                        self.writer = self._writer(None, mode, dry_run=True)
                    else:
                        if dest.kind == "local":
                            from connector.emulator.embedded import start_embedded

                            server = start_embedded(dest.api_key, self.pipeline, report.add_warning)
                        url = server.url if server is not None else dest.url
                        assert url is not None and dest.api_key is not None
                        report.set_destination(dest.kind, url)
                        from connector.delivery.client import client_for

                        if self.probe_sync:  # mode auto chose sync: keep it only if the key may use it
                            from connector.delivery.sync_access import probe_mode

                            mode = probe_mode(self.pipeline, url, dest.api_key, report, asked=self.sync_asked,
                                              embedded=server is not None)
                        client = client_for(self.pipeline, url, dest.api_key, mode, self.stop,
                                            on_retry=report.record_retry,
                                            limiter=self._shared_limiter())
                        self.writer = self._writer(client, mode, dry_run=False)
                    for plan in plans:
                        with stream_context(plan.stream.name):
                            if self.resume is not None and self.resume.carry_whole(plan.stream, report):
                                continue  # every row had its outcome: not read again (its file changed)
                            if self.halted():
                                self._list_unsent(plan, self._chunks(plan))
                            else:
                                self.stream(plan)
                    self.streams_done = True
                except ConnectorError as e:
                    errors.append(e)
                except KeyboardInterrupt:  # no signal handlers (an embedder's main thread): a stop too
                    self.stop.request("stopped by KeyboardInterrupt")
                    raise
                finally:
                    # Also on a bug or Ctrl-C: wait for the requests in flight so their rows are counted.
                    self._close_writer(errors)
                    self._mirror(client, errors)
                    self._finish_state()
                    self.cut_short = self.stop.stopping  # a stop after this point cut nothing short
                    self.progress.set_total(report.rows["read"] or None)  # the estimate was approximate
                    self._show()
        finally:
            if client is not None:
                report.http_engine = client.http_engine
                self._note_engine(client.http_engine)
                client.close(self._close_wait())
            self._close_shared_limiter()
            if server is not None:
                self._stop_emulator(server)
            self._note_stop()
            for err in errors:
                self.exit_code = max(self.exit_code, err.exit_code)
                report.add_warning(f"run stopped (exit code {err.exit_code}): {err}{self._resend_advice(err)}")
            try:
                report.finish(self.exit_code)
            except ReportInvariantError as bug:
                logger.error("%s", bug)
                report.add_warning(str(bug))
            from connector.report.publish import publish_run  # (alerts, metrics: not before a first request)

            publish_run(self.pipeline, report, self.env)  # report.json/html, alerts, metrics file

    def _writer(self, client: BrazeClient | None, mode: str, *, dry_run: bool) -> Writer:
        from connector.delivery.writer import Writer

        return Writer(self.pipeline, client, self.report, mode="sync" if mode == "sync" else "bulk",
                      dry_run=dry_run, delta=self.delta,
                      settled=self.incremental.marks if self.incremental is not None else None,
                      stop=self.stop, journal=None if dry_run else self.journal)  # fmt: skip

    def _close_writer(self, errors: list[ConnectorError]) -> None:
        if self.writer is None or self._writer_closed:
            return
        self._writer_closed = True
        try:
            self.writer.close()
        except ConnectorError as e:
            errors.append(e)

    def _mirror(self, client: BrazeClient | None, errors: list[ConnectorError]) -> None:
        """Mirror streams: once every row is settled, report or delete the users gone from the source."""
        if self.mirror is None:
            return
        ended = errors or self.halted() or not self.streams_done
        why = "the run was stopped or aborted, or a source failed" if ended else None
        try:
            self.exit_code = max(self.exit_code, self.mirror.apply(client, why))
        except ConnectorError as e:
            errors.append(e)
        finally:
            self.mirror.close()

    def _finish_state(self) -> None:
        """Delta sync: commit what waits, and put in the report what the state could not record (its store
        failed: a full disk, say); the rows' outcomes stand whatever it says (delta/unrecorded.py). Likewise
        for incremental watermarks (delta/watermark.py Watermarks.write)."""
        if self.incremental is not None and (text := self.incremental.marks.warning()) is not None:
            self.report.add_warning(text)
        if self.delta is None:
            return
        lost = self.delta.finish()
        if lost is not None:
            self.report.add_warning(lost.warning())
            if self.report.delta is not None:
                self.report.delta["not_recorded"] = lost.counts()

    def _shared_limiter(self) -> SharedRateLimiter | None:
        """The limiter shared through Redis (write.shared_limits); losing Redis is a warning in the report."""
        if self.shared is None:
            return None
        from connector.delivery.shared_limits import SharedRateLimiter

        self.limiter = SharedRateLimiter(self.pipeline.write, self.shared, on_warning=self.report.add_warning)
        return self.limiter

    def _close_shared_limiter(self) -> None:
        if self.limiter is not None:
            self.report.shared_limits = self.limiter.summary()
            self.limiter.close()

    def _stop_emulator(self, server: EmulatorServer) -> None:
        try:
            self.report.set_emulator_stats(server.stats())
        except Exception as e:  # the stats are a bonus; never lose the report over them
            logger.warning("could not read the embedded emulator's stats: %s", e)
        finally:
            server.stop()

    def aborted(self) -> bool:
        """The writer stopped sending (bad key, destination unreachable): read nothing more."""
        return self.writer is not None and self.writer.aborted

    def halted(self) -> bool:
        """Aborted, or a stop was requested: nothing more is checked or sent."""
        return self.stop.stopping or self.aborted()

    def _halt_reason(self) -> str:
        if self.writer is not None and self.writer.abort_reason:
            return self.writer.abort_reason
        return f"run {self.stop.reason}"

    def _close_wait(self) -> float | None:
        """After a stop, the HTTP connections are not waited for past the grace period (1 s at least)."""
        left = self.stop.remaining(self.pipeline.write.stop_grace_s)
        return None if left is None else max(1.0, left)

    def _note_engine(self, engine: str) -> None:
        """A BRAZE_CONNECTOR_HTTP_ENGINE that names no engine goes into the report's warnings, not only the log."""
        from connector.delivery.transport.frames import engine_name_unknown

        unknown = engine_name_unknown()
        if unknown is not None and "HTTP process" in engine:
            self.report.add_warning(f"{unknown}: the requests were sent with {engine}")

    def _resend_advice(self, err: ConnectorError) -> str:
        """After the destination failed (exit 3): how to send the rows listed as not sent, once it is fixed."""
        r = self.report
        if err.exit_code != 3 or r.failed.file is None:
            return ""
        how = SQL_RUN_AGAIN if r.reads_sql else (f"send the rows listed in {r.failed.file} with "
                                                  f"{retry_command(self.pipeline, r.report_dir)}")
        return f"; once the cause is fixed, {how}"

    def _note_stop(self) -> None:
        """A stopped run: its exit code (4, or 128 + the signal after a stop at once) and a warning."""
        if not self.cut_short:
            return
        code = self.stop.exit_code
        self.exit_code = max(self.exit_code, code)
        r = self.report
        r.set_stopped(self.stop.reason, immediate=self.stop.immediate, exit_code=code)
        how = "at once" if self.stop.immediate else "gracefully"
        unknown = " (and --include-unknown for the unknown ones)" if r.unknown else ""
        if r.reads_sql:
            self.report.add_warning(f"stopped: the run was {self.stop.reason}, {how} (exit code {code}). " + SQL_NO_RESUME)
            return
        if self.stop.immediate:  # the rows never read are listed nowhere but in the journal
            self.report.add_warning(
                f"stopped: the run was {self.stop.reason}, {how} (exit code {code}); the rows it had not read are "
                f"not in failed.csv: finish the run with {resume_command(self.pipeline, r.report_dir)} (it sends every row not "
                "confirmed, read or not); not with --retry-failed, which sends only the rows listed"
            )
            return
        listed = (f"{r.not_sent:,} row(s) not sent (counted as skipped) and {r.unknown:,} with an unknown outcome "
                  f"(counted as failed) are listed in {r.failed.path}: " if r.failed.file is not None else "")  # fmt: skip
        self.report.add_warning(
            f"stopped: the run was {self.stop.reason}, {how} (exit code {code}); {listed}finish the run with "
            f"{resume_command(self.pipeline, r.report_dir)}" + (f" (or send the listed rows with {retry_command(self.pipeline, r.report_dir)}{unknown})"
                                          if listed else "")
        )

    # ---- one stream -------------------------------------------------------------------------------
    def stream(self, plan: Plan) -> None:
        """Run one stream through the stages (with the table-check first pass when it needs one)."""
        stream = plan.stream
        suite = plan.suite
        deliver = self.writer is not None
        if plan.table_first and suite is not None:
            logger.info("stream %s: first pass for the table-level expectations", stream.name)
            for chunk in self._chunks(plan):
                if self.halted():
                    break
                suite.table_pass(chunk)  # (its row rejects are the second pass's)
            if self.halted():  # nothing of this stream was counted yet: list it all
                self._list_unsent(plan, self._chunks(plan))
                return
            if not self._table_checks(stream, suite, delivered=False):
                deliver = False
            suite = suite_for(self.pipeline, stream)  # a fresh runner for the row-level pass
        skip_reason = SKIP_VALIDATE_ONLY if self.writer is None else SKIP_TABLE_CHECK
        fast = None  # delta sync's fast path (delta/fastpath.py): not on a resumed run
        if deliver and self.delta is not None and self.writer is not None and self.resume is None:
            from connector.delta.fastpath import fast_path

            fast = fast_path(self.delta, stream, suite, self.incremental)
        chunks = self._chunks(plan)
        complete = True
        try:
            for chunk in chunks:
                self._chunk(stream, suite, chunk, deliver=deliver, skip_reason=skip_reason, fast=fast)
                self._show()
                if self.halted():
                    complete = False
                    self._list_unsent(plan, chunks)
                    break
        except BaseException:
            complete = False
            raise
        finally:
            if fast is not None:
                fast.close(complete)
        if complete and not self.halted() and self.journal is not None:  # a resumed run may not need to read it
            self.journal.read(stream.name, self.report.streams[stream.name]["read"])
        if self.incremental is not None:
            self.incremental.finish(stream, complete)
        for w in self.dates[stream.name].warnings() if stream.name in self.dates else []:
            self.report.add_warning(w)
        if self.mirror is not None:
            self.mirror.finish(stream, complete and not self.halted())
        if suite is not None and not plan.table_first and not self.halted() and self.retry is None:
            self._table_checks(stream, suite, delivered=deliver)  # partial data proves nothing: not on abort

    def _chunk(self, stream: Stream, suite: SuiteRunner | None, chunk: Chunk, *, deliver: bool,
               skip_reason: str, fast: FastPath | None = None) -> None:  # fmt: skip
        """One chunk through validate -> map -> deliver; every row read ends up counted exactly once (rows
        delta sync's fast path takes are skipped as unchanged before they are validated)."""
        report = self.report
        inc = self.incremental
        if inc is not None:
            chunk = inc.take(stream, chunk)  # rows already confirmed at the watermark are not read again
        n_read = len(chunk) + len(chunk.rejects)
        report.add_read(n_read, stream.name)
        done = 0
        users: ChunkUsers | None = None
        try:
            if fast is not None and len(chunk) and (self.resume is None):
                users = fast.users(chunk)  # the rows' users (remembered, where this chunk was read before)
            if self.mirror is not None:
                users = self.mirror.see(stream, chunk, users)  # every row read names its user, whatever becomes of it
            self._rejected(stream, chunk, chunk.rejects)
            done += len(chunk.rejects)
            carried = self._carry(stream, chunk, sending=deliver and self.writer is not None)
            done += sum(carried) if carried else 0
            prints = None
            if fast is not None and len(chunk) and not carried:
                chunk, prints, taken = fast.take(chunk, users)
                if taken:
                    from connector.delta.state import SKIP_UNCHANGED, Counts

                    report.add_skipped(taken, SKIP_UNCHANGED, stream.name)
                    report.add_delta(stream.name, Counts(unchanged=taken))
                done += taken
            if suite is not None and len(chunk):
                keep, rejects = _reconcile(chunk, suite.validate(chunk))  # every row: table checks see the table
                if carried:
                    keep, rejects = uncarried(chunk, carried, keep, rejects)
                self._rejected(stream, chunk, rejects)
                if inc is not None:
                    inc.rejected(stream, rejects)
                done += len(rejects)
                if not all(keep):
                    chunk = chunk.filter(keep)
                    if prints is not None:
                        prints = prints[np.asarray(keep, dtype=bool)]
            elif carried:
                chunk = chunk.filter([not c for c in carried])
            if len(chunk):
                from connector.mapping import map_chunk  # (not imported by a re-run that maps no row)

                dates = self.dates.setdefault(stream.name, DateReadings(stream.name))
                mapped = map_chunk(stream, chunk, self.now, dates=dates)
                self._rejected(stream, chunk, mapped.rejects)
                if inc is not None:
                    inc.rejected(stream, mapped.rejects)
                done += len(mapped.rejects)
                _check_mapped(stream, chunk, mapped)
                if self.delta is not None and stream.delta and deliver:
                    from connector.delta.state import SKIP_UNCHANGED

                    id_key = stream.identifier.kind if stream.identifier is not None else None
                    before = mapped
                    at = None if prints is None else prints[np.asarray(mapped.indices, dtype=np.int64)]
                    mapped, unchanged = self.delta.changed(stream.name, stream.kind, mapped, id_key, at)
                    if inc is not None:
                        inc.unchanged(stream, before, mapped)
                    report.add_skipped(unchanged, SKIP_UNCHANGED, stream.name)
                    report.add_delta(stream.name, self.delta.last)
                    done += unchanged
                if deliver and self.writer is not None:
                    self.writer.submit(stream, mapped)
                elif len(mapped):
                    report.add_skipped(len(mapped), skip_reason, stream.name)
                    if inc is not None:
                        inc.settle(stream, mapped, "failed")  # not delivered: the watermark stays before it
                done += len(mapped)
        except ConnectorError as e:
            # A suite that cannot run on this file (SuiteError) and the like: keep the accounting whole.
            if n_read > done:
                report.add_skipped(
                    n_read - done, f"not processed: the run stopped ({_error_kind(e)})", stream.name
                )
            raise

    def _list_unsent(self, plan: Plan, chunks: Iterator[Chunk]) -> None:
        """After an abort or a stop: read the rest of the stream without checking or sending it, so every
        row is counted, and list its rows in the failed file as not sent (a --retry-failed run resumes
        there). Unparseable rows are rejects as usual (that needs no network). A stop at once ends this
        too: the rows not read are then counted nowhere (a warning says so)."""
        reason = self._halt_reason()
        n = 0
        for chunk in chunks:
            if self.stop.immediate:
                self.report.add_warning(
                    f"stopped: stream {plan.stream.name}: stopped at once; {n:,} row(s) read after the stop listed "
                    "as not_sent, the rest of the stream was not read and is not listed ("
                    + (SQL_RUN_AGAIN if plan.stream.source.is_sql else "--resume sends it") + ")"
                )
                return
            self.report.add_read(len(chunk) + len(chunk.rejects), plan.stream.name)
            self._rejected(plan.stream, chunk, chunk.rejects)
            carried = self._carry(plan.stream, chunk, sending=False)
            rows = [(chunk.ref(i), v) for i, v in enumerate(chunk.table.to_pylist()) if not carried or not carried[i]]
            self.report.add_not_sent(rows, reason, plan.stream.name, checked=False)
            n += len(rows)
            self._show()
        if not n:
            return
        what = "stopped" if self.stop.stopping and not self.aborted() else "aborted"
        then = SQL_RUN_AGAIN if plan.stream.source.is_sql else "send them with --retry-failed"
        self.report.add_warning(
            f"stream {plan.stream.name}: the run was {what}; {n:,} row(s) read after it were counted as skipped and "
            "listed in failed.csv as not_sent" + (f" (once the cause is fixed, {then})" if what == "aborted" else "")
        )

    def _rejected(self, stream: Stream, chunk: Chunk, rejects: list[Rejected]) -> None:
        """Count the rows the run's own checks rejected, and journal them: a resumed run keeps them rejected."""
        self.report.add_rejects(rejects, stream.name)
        if self.journal is not None:
            self.journal.rejected(stream.name, chunk.file, rejects)

    def _carry(self, stream: Stream, chunk: Chunk, *, sending: bool) -> list[bool] | None:
        """A resumed run: count the outcomes the journal already holds for the chunk's rows (True = carried)."""
        if self.resume is None:
            return None
        return self.resume.carry(stream, chunk, self.report, sending=sending,
                                 on_ambiguous=self.pipeline.write.on_ambiguous)  # fmt: skip

    def _chunks(self, plan: Plan) -> Iterator[Chunk]:
        chunks = readers.read_source(plan.stream.source, Path(self.pipeline.base_dir), plan.files,
                                     env=self.env, since=plan.since)  # fmt: skip
        if plan.split_root is not None and self.partition is not None:
            from connector.readers.partition import partition_rows

            chunks = partition_rows(chunks, plan.stream, plan.split_root, self.partition)
        if self.retry is None:
            return chunks
        return self._retried(plan, chunks)

    def _retried(self, plan: Plan, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """Only the rows of the failed file; warn about failed rows the source no longer has."""
        assert self.retry is not None
        by_file = self.retry.for_stream(plan.stream.name)
        found: dict[str, int] = {}
        for chunk in chunks:
            wanted = by_file.get(chunk.file, set())
            keep = [n in wanted for n in chunk.row_numbers]
            rejects = [r for r in chunk.rejects if r.ref.row in wanted]
            found[chunk.file] = found.get(chunk.file, 0) + sum(keep) + len(rejects)
            if not any(keep) and not rejects:
                continue
            kept = chunk.filter(keep) if not all(keep) else chunk
            kept.rejects = rejects
            yield kept
        for f in plan.files:
            missing = len(by_file.get(str(f), ())) - found.get(str(f), 0)
            if missing > 0:
                self.exit_code = max(self.exit_code, 1)
                self.report.add_warning(
                    f"retry: {missing:,} failed row(s) of {f} are not in the file any more (was it replaced or "
                    "shortened?); they were not sent"
                )

    def _table_checks(self, stream: Stream, suite: SuiteRunner, *, delivered: bool) -> bool:
        """Record the suite's table-level results; False when one failed and the stream's action is fail."""
        action = stream.on_table_expectation_failure
        ok = True
        for c in suite.finish():
            self.report.add_table_check(stream.name, c.expectation, c.column, c.success, c.observed, c.detail,
                                        action)  # fmt: skip
            if c.success:
                continue
            where = f"stream {stream.name}: table check {c.expectation}" + (
                f" on '{c.column}'" if c.column else ""
            )
            text = f"{where} failed ({c.detail})"
            if action == "warn":
                self.report.add_warning(text)
                continue
            ok = False
            self.exit_code = max(self.exit_code, 1)
            if delivered:
                text += "; it was found after the rows were sent"
            elif self.writer is not None:
                text += "; the stream's valid rows were not delivered"
            self.report.add_warning(text)
        return ok

    def _show(self) -> None:
        """Refresh the progress display now (it also polls the report's counts on its own)."""
        self.progress.refresh()


def _reconcile(chunk: Chunk, validation: Any) -> tuple[list[bool], list[Rejected]]:
    """One reject per failing row (the first rule it broke), and keep=False exactly for those rows."""
    if not validation.rejects and all(validation.keep):  # the common chunk: no Python work per row
        return list(validation.keep), []
    keep = list(map(bool, validation.keep))
    wanted = {r.ref.row for r in validation.rejects}
    index = {row: i for i, row in enumerate(chunk.row_numbers) if row in wanted}
    out: list[Rejected] = []
    seen: set[int] = set()
    for r in validation.rejects:
        i = index.get(r.ref.row)
        if i is None or i in seen:
            continue
        seen.add(i)
        keep[i] = False
        out.append(r)
    for i, k in enumerate(keep):
        if not k and i not in seen:
            out.append(Rejected(chunk.ref(i), "expectation", "expectation", "the row failed an expectation",
                                values=chunk.values(i)))  # fmt: skip
    return keep, out


def _check_mapped(stream: Stream, chunk: Chunk, mapped: Any) -> None:
    if len(mapped) + len(mapped.rejects) != len(chunk):
        logger.error(
            "stream %s: mapper returned %d objects + %d rejects for %d rows; the report's accounting will not add up",
            stream.name, len(mapped), len(mapped.rejects), len(chunk),
        )  # fmt: skip
