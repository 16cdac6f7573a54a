"""Resuming an interrupted run from its journal (`braze-connector run PIPELINE --resume [RUN_DIR]`).

The resumed run re-reads the same sources into the same report folder and appends to the same journal.
Every row whose outcome the journal holds keeps it (delivered, refused by Braze, failed, unknown) and is
not sent again; rows the run never sent, or sent to a request refused as a whole, go through the stages as
usual. Rows whose request left without an answer (the run stopped first) follow `write.on_ambiguous`:
`retry` sends them again and lists them as possibly duplicated, `fail` lists them in failed.csv with
outcome `unknown` (idempotent attribute sets are always sent again, those a stopped run listed as unknown
included: a graceful stop whose grace ran out must not leave more to do than a kill -9). A finished run
resumed sends nothing.

Row numbers name rows only while the files stay the same, so a source whose size or modification time
changed since the interrupted run is refused, unless its stream needs no reading: read to its end by an
earlier attempt, every row delivered or rejected (read_whole); such a stream is carried over from the
journal without reading it (carry_whole). A pipeline with an SQL source is refused: a query keeps no
positions (new rows, or an incremental watermark the interrupted run moved, shift them), so the journal's
row numbers would name other rows; such a pipeline is run again instead (SQL_NO_RESUME).
"""

from __future__ import annotations

import glob
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from connector.config import Pipeline, Stream
from connector.delivery.journal import JOURNAL_FILE, Journal, decode
from connector.delivery.journal_rows import (
    DELIVERED,
    FAILED,
    NOT_APPLIED,
    REFUSED,
    REJECTED,
    SENT,
    UNKNOWN,
    RunJournal,
    carried_reject,
    load_journal,
    read_whole,
)
from connector.delivery.outcomes import DUP_RESUMED
from connector.delivery.writer import is_idempotent
from connector.errors import ConfigError, SourceError
from connector.readers.failed import SQL_RUN_AGAIN, RetrySet, load_failed
from connector.records import Chunk, Failed, Rejected, RowRef

if TYPE_CHECKING:
    from connector.report import RunReport

SQL_NO_RESUME = (
    "A run reading SQL cannot be resumed or retried from its files (its journal names rows by their position in "
    "what was read, which a query does not keep): " + SQL_RUN_AGAIN
)
NO_ANSWER = "sent before the run was interrupted and no answer came: Braze may have applied it; not sent again"


def find_run_dir(pipeline: Pipeline, report_dir: str | Path | None) -> Path:
    """The latest run of this pipeline (by start time) under report.dir or --report-dir.

    The latest one, finished or not: resuming an older run after a newer one delivered would send stale
    rows after fresh ones.

    Raises:
        ConfigError: no run with a journal is there.
    """
    pattern, dirs = run_dirs(pipeline, report_dir)
    found = [(started_at(d / JOURNAL_FILE), str(d), d) for d in dirs]
    if not found:
        raise ConfigError(
            f"--resume: no run of pipeline {pipeline.name} with a {JOURNAL_FILE} under {pattern}; pass the "
            "run's report folder (braze-connector run PIPELINE --resume RUN_DIR)"
        )
    return max(found)[2]


def run_dirs(pipeline: Pipeline, report_dir: str | Path | None) -> tuple[str, list[Path]]:
    """(the glob pattern, the report folders under report.dir or --report-dir that hold a journal)."""
    template = str(report_dir) if report_dir is not None else pipeline.report.dir
    text = template.replace("{pipeline}", pipeline.name)
    base = Path(text) if report_dir is not None else pipeline.resolve(text)  # report.dir: beside the pipeline
    pattern = str(base).replace("{run_id}", "*")
    candidates = glob.glob(pattern)
    if "{run_id}" not in text:  # a fixed folder: a later run that found it taken wrote to <folder>-<run_id>
        candidates += glob.glob(glob.escape(str(base)) + "-*")
    return pattern, [Path(d) for d in candidates if (Path(d) / JOURNAL_FILE).is_file()]


_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")  # a run id without a partition label


def _ours(run_id: str, partition: str | None) -> bool:
    """Whether a run of that id belongs to this partition (None: an unpartitioned run)."""
    return run_id.endswith(f"-{partition}") if partition is not None else bool(_RUN_ID.match(run_id))


def runs_of(pipeline: Pipeline, report_dir: str | Path | None, partition: str | None) -> list[tuple[str, Path]]:
    """(start time, report folder) of every run of this pipeline and partition that has a journal (a journal
    killed before its header names no run, and counts as any partition's)."""
    runs = []
    for d in run_dirs(pipeline, report_dir)[1]:
        header = journal_header(d / JOURNAL_FILE)
        if not header or _ours(str(header.get("run_id", "")), partition):
            at = str(header["started"]) if header.get("started") else started_at(d / JOURNAL_FILE)
            runs.append((at, d))
    return runs


def journal_header(journal: Path) -> dict[str, Any]:
    """The journal's header (its first record), {} when unreadable or not written yet."""
    try:
        with journal.open("rb") as fh:
            first = decode(fh.readline())
    except OSError:
        return {}
    return first if isinstance(first, dict) else {}


def started_at(journal: Path) -> str:
    """When the run of this journal started (its first record), "" when unreadable."""
    started = journal_header(journal).get("started")
    if started:
        return str(started)
    try:
        mtime = journal.stat().st_mtime
    except OSError:
        return ""
    return datetime.fromtimestamp(mtime, UTC).isoformat()  # killed before its first record: when it began


def open_journal(pipeline: Pipeline, out: Path, files: dict[str, list[Path]], resume: ResumeSet | None,
                 **facts: Any) -> Journal:  # fmt: skip
    """The run's journal: a new one in the report folder, or the resumed run's, appended to. `facts` (run_id,
    started, mode, full, retry) go into its header, so a resumed run can begin as the run did."""
    header = {"pipeline": pipeline.name, "attempt": 1, **facts, "on_ambiguous": pipeline.write.on_ambiguous,
              "sources": fingerprints(files)}  # fmt: skip
    if resume is not None:
        return resume.open_journal(header)
    out.mkdir(parents=True, exist_ok=True)
    return Journal(out / JOURNAL_FILE, header)


def uncarried(chunk: Chunk, carried: list[bool], keep: list[bool], rejects: list[Rejected]
              ) -> tuple[list[bool], list[Rejected]]:  # fmt: skip
    """Rows whose outcome was carried over are neither kept nor rejected again (the suite saw every row)."""
    gone = {n for n, c in zip(chunk.row_numbers, carried, strict=True) if c}
    return [k and not c for k, c in zip(keep, carried, strict=True)], [r for r in rejects if r.ref.row not in gone]


def fingerprints(files: dict[str, list[Path]]) -> dict[str, dict[str, list[int]]]:
    """stream -> file -> [size, modification time in ns]: what a resumed run checks the sources against."""
    out: dict[str, dict[str, list[int]]] = {}
    for stream, paths in files.items():
        entry = out.setdefault(stream, {})
        for p in paths:
            st = p.stat()
            entry[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


# Written into a run's folder when a --retry-failed run resends its failed.csv: that run is then not resumed.
RETRIED_MARK = "retried_by.txt"


def mark_retried(failed_file: Path, by: str) -> None:
    """Note in the folder of `failed_file` that a --retry-failed run (`by`) resends its rows (best effort)."""
    try:
        (Path(failed_file).parent / RETRIED_MARK).write_text(by + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only folder: the retry still runs; a later --resume of it would resend


class ResumeSet:
    """The journal of the run being resumed, applied chunk by chunk to the rows read again."""

    def __init__(self, run_dir: Path, journal: RunJournal | None = None) -> None:
        self.run_dir = Path(run_dir)
        retried = self.run_dir / RETRIED_MARK
        if retried.is_file():
            by = retried.read_text(encoding="utf-8", errors="replace").strip()
            raise ConfigError(
                f"--resume {self.run_dir}: a --retry-failed run ({by}) already sent this run's failed rows again; "
                "resuming would send them a second time. Resume that retry run if it was interrupted; rows this "
                "run never read are in no failed file: run the pipeline again for them (with delta: true only "
                "what Braze does not have is sent)"
            )
        self.journal = journal if journal is not None else load_journal(self.run_dir)
        h = self.journal.header
        self.run_id: str = str(h.get("run_id", self.run_dir.name))
        self.pipeline: str = str(h.get("pipeline", ""))
        self.mode: str | None = h.get("mode")
        self.full = bool(h.get("full"))
        self.summary: dict[str, Any] = {
            "journal": str(self.journal.path),
            "attempt": self.journal.attempts + 1,
            "previous_exit_code": (self.journal.ended or {}).get("exit_code"),
            "carried": {"delivered": 0, "rejected": 0, "failed": 0, "unknown": 0},
            "resent_unanswered": 0,
        }
        self._log: Journal | None = None
        self.whole: set[str] = set()  # streams carried over without reading them again (check() decides)

    # ---- before the run ---------------------------------------------------------------------------
    def retry_set(self) -> RetrySet | None:
        """The failed rows the interrupted run was sending again (--retry-failed), read from the same file."""
        retry = self.journal.header.get("retry")
        if not retry:
            return None
        return load_failed(retry["failed_file"], include_unknown=bool(retry.get("include_unknown")))

    def check(self, pipeline: Pipeline, files: dict[str, list[Path]], partition: str | None = None,
              report_dir: str | Path | None = None) -> list[str]:  # fmt: skip
        """Refuse a different pipeline, another partition (`p2of4`, None: not partitioned), a run that is not
        the pipeline's latest, or changed sources; return warnings (streams or files gone, a torn tail).

        Raises:
            ConfigError: the journal belongs to another pipeline, to another partition, or a newer run of the
                pipeline (under report.dir or `report_dir`) started after it.
            SourceError: a source file changed since the interrupted run.
        """
        if self.pipeline and self.pipeline != pipeline.name:
            raise ConfigError(
                f"--resume {self.run_dir}: that run is of pipeline {self.pipeline!r}, not {pipeline.name!r}"
            )
        sql = [s.name for s in pipeline.streams if s.source.is_sql]
        if sql:
            raise ConfigError(f"--resume {self.run_dir}: stream(s) {', '.join(sql)} read an SQL source. " + SQL_NO_RESUME)
        was = re.search(r"-p(\d+)of(\d+)$", self.run_id)
        if (f"p{was[1]}of{was[2]}" if was else None) != partition:
            # Another partition's rows (or every row) would be read again and sent, beside their own partition's.
            how = f"with --partition {was[1]}/{was[2]}" if was else "without --partition"
            raise ConfigError(f"--resume {self.run_dir}: run {self.run_id} was "
                              + (f"partition {was[1]}/{was[2]}" if was else "not partitioned")
                              + f"; resume it {how}, as it ran")  # fmt: skip
        self._refuse_if_superseded(pipeline, report_dir, partition)
        before: dict[str, dict[str, list[int]]] = self.journal.header.get("sources") or {}
        now = fingerprints(files)
        whole = read_whole(self.journal, pipeline, now)
        warnings: list[str] = []
        for stream, old in before.items():
            for f, (size, mtime) in old.items():
                cur = now.get(stream, {}).get(f)
                if cur is None:
                    warnings.append(f"resume: {f} (stream {stream}) is no longer a source of this pipeline; the "
                                    "outcomes of its rows are not in this report")  # fmt: skip
                elif cur != [size, mtime] and stream in whole:
                    self.whole.add(stream)
                    warnings.append(self._not_read_again(stream, f))
                elif cur != [size, mtime]:
                    raise SourceError(
                        f"--resume: {f} (stream {stream}) changed since run {self.run_id} was interrupted (size "
                        f"{size:,} -> {cur[0]:,} bytes, or its modification time), and {_why_read(pipeline, stream)}, "
                        "so the journal's row numbers may name other rows now. Restore the file "
                        "(with its modification time: cp -p), or start a new run with --ignore-unfinished (rows "
                        "already delivered would be sent again)"
                    )
        if self.journal.torn_bytes:
            warnings.append(f"resume: the last {self.journal.torn_bytes:,} byte(s) of {self.journal.path} were an "
                            "unfinished write (the run was stopped mid-record); they were cut off")  # fmt: skip
        return warnings

    def _not_read_again(self, stream: str, file: str) -> str:
        """The warning for a changed file whose stream had every row's outcome: carried over, not read."""
        final, _ = self.journal.final_rows(stream)
        rejected = sum(fr.states.count(REFUSED) + fr.states.count(REJECTED)
                       for (name, _), fr in self.journal.rows.items() if name == stream)  # fmt: skip
        unlisted = (f"; its {rejected:,} rejected row(s) are listed in the rejects file without their values (the "
                    "file changed, so its values are not read from it again)" if rejected else "")  # fmt: skip
        return (f"resume: {file} (stream {stream}) changed since run {self.run_id} was interrupted, but every row "
                f"of stream {stream} already had its outcome ({final - rejected:,} delivered, {rejected:,} rejected): "
                f"the stream is not read again and its outcomes are carried over{unlisted}")

    def _refuse_if_superseded(self, pipeline: Pipeline, report_dir: str | Path | None, partition: str | None) -> None:
        """A run of this pipeline and partition that started after this one sent its rows after it: resuming
        this one would send its rows again over that run's (older values last; events twice, uncounted)."""
        mine = started_at(self.journal.path)
        newer = sorted((at, d) for at, d in runs_of(pipeline, report_dir, partition)
                       if at > mine and d.resolve() != self.run_dir.resolve())  # fmt: skip
        if newer:
            at, d = newer[-1]
            raise ConfigError(
                f"--resume {self.run_dir}: run {self.run_id} is not this pipeline's latest run; {d.name} ({d}) "
                f"started after it ({at}) and sent its rows since, so resuming the older one would send rows "
                "again after it (older values over newer ones, events and purchases twice, not counted as "
                f"duplicates). Resume the latest run instead (braze-connector run {pipeline.origin} --resume), "
                "or start a new run"
            )

    def header(self, base: dict[str, Any]) -> dict[str, Any]:
        """The next attempt's journal header. A stream carried over without reading keeps the fingerprints of
        the files its row numbers name: a later resume must not take the changed file for the same one."""
        before = self.journal.header.get("sources") or {}
        sources = {**(base.get("sources") or {}), **{s: before.get(s, {}) for s in self.whole}}
        return {**base, "sources": sources, "run_id": self.run_id, "attempt": self.journal.attempts + 1}

    def open_journal(self, header: dict[str, Any]) -> Journal:
        """Append the next attempt to the same journal (a torn tail is cut off first)."""
        self._log = Journal(self.journal.path, self.header(header), keep_bytes=self.journal.valid_bytes)
        return self._log

    # ---- while reading ------------------------------------------------------------------------------
    def carry(self, stream: Stream, chunk: Chunk, report: RunReport, *, sending: bool = True,
              on_ambiguous: str = "retry") -> list[bool] | None:  # fmt: skip
        """Record in `report` the outcomes this chunk's rows already have; True for each row carried over.

        None when no row of the chunk is in the journal. Rows sent without an answer are sent again (and
        listed as possibly duplicated) when `sending` and on_ambiguous is retry or the stream's objects are
        idempotent; otherwise they are carried as unknown. `sending` is False for rows a stopped run only lists.
        """
        fr = self.journal.rows.get((stream.name, chunk.file))
        if fr is None:
            return None
        # Unparseable rows are rejected again as they are read (the caller counts them): carried all the same.
        self.summary["carried"]["rejected"] += sum(fr.state(r.ref.row) == REJECTED for r in chunk.rejects)
        if not len(chunk):
            return None
        idempotent = is_idempotent(stream)
        resend = sending and (on_ambiguous == "retry" or idempotent)
        carried = [False] * len(chunk)
        delivered = 0
        rejects: list[Rejected] = []
        failed: list[Failed] = []
        dups: dict[str, list[int]] = {}
        again: list[int] = []
        for i, row in enumerate(chunk.row_numbers):
            state = fr.state(row)
            if state == 0 or state == NOT_APPLIED:
                if row in fr.dup:  # an earlier attempt may have applied it
                    dups.setdefault(fr.dup[row], []).append(i)
                continue
            if resend and (state == SENT or (state == UNKNOWN and idempotent)):  # attribute sets: harmless twice
                again.append(i)
                dups.setdefault(DUP_RESUMED, []).append(i)
                continue
            carried[i] = True
            if row in fr.dup:
                dups.setdefault(fr.dup[row], []).append(i)
            if state == DELIVERED:
                delivered += 1
            elif state in (REFUSED, REJECTED):
                rejects.append(carried_reject(fr, row, chunk.ref(i), chunk.values(i)))
            else:  # failed, unknown, or sent without an answer and not sent again
                status, error = (None, NO_ANSWER) if state == SENT else fr.detail.get(row, (None, NO_ANSWER))
                outcome: Literal["failed", "unknown"] = "failed" if state == FAILED else "unknown"
                failed.append(Failed(chunk.ref(i), str(error), status, outcome, chunk.values(i)))
        self._record(stream.name, chunk, report, delivered, rejects, failed, dups, again)
        return carried if any(carried) else None

    def carry_whole(self, stream: Stream, report: RunReport) -> bool:
        """Record in `report` the outcomes of a stream carried over without reading it (check() chose it: every
        row delivered or rejected, a file changed since); False for a stream to read as usual."""
        if stream.name not in self.whole:
            return False
        report.add_read(self.journal.read[stream.name], stream.name)
        for (name, file), fr in self.journal.rows.items():
            if name != stream.name:
                continue
            delivered = fr.states.count(DELIVERED)
            rows = [r for r, state in enumerate(fr.states) if state in (REFUSED, REJECTED)]
            rejects = [carried_reject(fr, r, RowRef(file, r), {}) for r in rows]
            dups: dict[str, list[RowRef]] = {}
            for r, why in fr.dup.items():
                dups.setdefault(why, []).append(RowRef(file, r))
            report.add_delivered(delivered, stream.name)
            report.add_rejects(rejects, stream.name)
            for why, refs in dups.items():
                report.add_possibly_duplicated(refs, why, stream.name)
            self.summary["carried"]["delivered"] += delivered
            self.summary["carried"]["rejected"] += len(rejects)
        return True

    def _record(self, stream: str, chunk: Chunk, report: RunReport, delivered: int, rejects: list[Rejected],
                failed: list[Failed], dups: dict[str, list[int]], again: list[int]) -> None:  # fmt: skip
        carried = self.summary["carried"]
        if delivered:
            report.add_delivered(delivered, stream)
            carried["delivered"] += delivered
        report.add_rejects(rejects, stream)
        carried["rejected"] += len(rejects)
        report.add_failed(failed, stream)
        for f in failed:
            carried[f.outcome] += 1
        for reason, idx in dups.items():
            report.add_possibly_duplicated([chunk.ref(i) for i in idx], reason, stream)
        if again:
            self.summary["resent_unanswered"] += len(again)
            if self._log is not None:
                self._log.resent(stream, chunk.file, [chunk.row_numbers[i] for i in again])



def _why_read(pipeline: Pipeline, name: str) -> str:
    """Why a resume must read stream `name` again (so its files must not have changed)."""
    stream = next((s for s in pipeline.streams if s.name == name), None)
    if stream is not None and (stream.delta or stream.incremental is not None or stream.mirror is not None):
        what = "delta" if stream.delta else "incremental" if stream.incremental is not None else "mirror"
        return f"stream {name} keeps {what} state that follows its rows, so a resume always reads it again"
    return f"stream {name} still has rows to read or send"
