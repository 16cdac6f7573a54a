"""Noticing, as a run begins, that the pipeline's last run did not finish (killed with kill -9, a crash, a
lost machine) or was stopped short by a signal, so that a plain re-run does not apply rows twice unknowingly.

A run killed that way left requests in flight: Braze may have applied them, and their answers reached no
one. `--resume` finishes that run and counts those rows as possibly duplicated; a new run sends them again
without knowing (delta sync too: their confirmations were never recorded). The new run cannot tell which
of them Braze applied either, so it warns, naming the unfinished run's folder and the `--resume` command.

A stream with neither delta nor incremental state remembers nothing, so a plain re-run sends all of its
rows again, those the killed or stopped run delivered included. When its objects add up in Braze (events,
purchases, `inc`, a Canvas trigger: not idempotent) and the source files are the same, unchanged, that
applies them twice: such a re-run is refused (exit 2) unless `--ignore-unfinished` says it is meant,
and the message names the `--resume` command that finishes the run instead. A stream with delta or
incremental state sends again only what its state never recorded: the rows that run sent without seeing an
answer, which Braze may have applied; of such a stream whose objects add up, those rows make the same
refusal (a scheduler's retry after a kill would otherwise count events twice, uncounted). New files (tonight's export)
are a new run's business and are not refused.

A run that finished, whatever its exit code (a stop by SIGTERM or Ctrl-C included), ends its journal with
an end record, so the check reads only the journal's last bytes; only an unfinished or stopped one is read
whole, to count its rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.config import Pipeline
from connector.delivery.journal import JOURNAL_FILE, decode
from connector.delivery.writer import is_idempotent
from connector.errors import ConfigError, JournalError
from connector.report.paths import resume_command, run_command

_TAIL = 64 * 1024  # the last bytes read: the end record is the journal's last line


def _end_record(journal: Path) -> dict[str, Any] | bool | None:
    """The journal's end record when its last whole line is one, False when it is not (cut off: a killed
    run), None when unreadable."""
    try:
        with journal.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        rec = decode(line + b"\n")
        if rec is not None:
            return rec if isinstance(rec, dict) and rec.get("k") == "end" else False
    return False  # nothing whole at the end: cut off while writing


def was_killed(run_dir: Path) -> bool:
    """Whether the run of `run_dir` was killed (kill -9, a crash): its journal has no end record."""
    journal = run_dir / JOURNAL_FILE
    return journal.is_file() and _end_record(journal) is False


STOPPED = (4, 130, 143)  # exit codes of a run stopped by SIGTERM / SIGINT: its rows were not all sent


@dataclass(frozen=True)
class Unfinished:
    """The pipeline's last run, killed or stopped short, as a new run sees it."""

    run_id: str
    run_dir: Path
    killed: bool  # no end record (kill -9, a crash); else stopped by a signal (exit 4, 130, 143)
    warning: str  # for report.json's warnings and the log
    twice: dict[str, int]  # stream -> its rows that run delivered or sent that a plain re-run would apply again

    def refusal(self, pipeline: Pipeline) -> str:
        """Why a plain re-run is refused, and the two ways on."""
        streams = ", ".join(f"{name} ({n:,} row(s))" for name, n in self.twice.items())
        how = "did not finish (killed, or its machine stopped)" if self.killed else "was stopped before it finished"
        kept = [s.name for s in pipeline.streams if s.name in self.twice and (s.delta or s.incremental is not None)]
        why = []
        if len(kept) < len(self.twice):
            why.append("stream(s) with no delta or incremental state send every row again")
        if kept:
            why.append(f"the state of {', '.join(kept)} never recorded the rows that run sent without seeing "
                       "Braze's answer, so they are sent again")  # fmt: skip
        return (
            f"{pipeline.origin}: the last run of this pipeline, {self.run_id} ({self.run_dir}), {how}, and a plain "
            f"re-run would send the same rows of {streams} again ({'; '.join(why)}), and their objects add up in "
            "Braze (events and purchases count twice, inc adds twice). "
            f"Finish that run instead, sending only what it did not deliver: {resume_command(pipeline, self.run_dir)}. "
            f"To send those rows again anyway: {run_command(pipeline, self.run_dir, '--ignore-unfinished')}."
        )


def check_unfinished(pipeline: Pipeline, report_dir: str | Path | None, partition: str | None,
                     files: Mapping[str, list[Path]]) -> Unfinished | None:  # fmt: skip
    """The latest run of this pipeline and partition when it was killed (no end record) with rows in flight,
    or killed or stopped by a signal with rows of a stateless, non-idempotent stream sent from the same,
    unchanged source files (`files`: this run's, by stream); else None.

    Called by a new sending run (not --resume, not --retry-failed) once it holds the pipeline's lock, so no
    other run of the same pipeline and partition is alive: a journal without an end belongs to a run that
    was killed. A journal killed before its header names no run, and counts as the run's own (nothing was
    sent)."""
    from connector.delivery.journal_rows import DELIVERED, SENT, load_journal, read_whole
    from connector.delivery.resume import fingerprints, runs_of

    runs = runs_of(pipeline, report_dir, partition)
    if not runs:
        return None
    run_dir = max(runs)[1]
    end = _end_record(run_dir / JOURNAL_FILE)
    if end is None or (isinstance(end, dict) and end.get("exit_code") not in STOPPED):
        return None  # unreadable, or it ended by itself (a failed run's rows are in its failed.csv)
    try:
        last = load_journal(run_dir)
    except (ConfigError, JournalError):
        return None
    run_id = str(last.header.get("run_id", run_dir.name))
    unanswered = sum(fr.states.count(SENT) for fr in last.rows.values())
    delivered = sum(fr.states.count(DELIVERED) for fr in last.rows.values())
    now = fingerprints(dict(files))  # stream -> file -> [size, mtime] of this run's sources
    twice = _sent_again(pipeline, last, now, {DELIVERED, SENT})  # same files: refused
    maybe = _sent_again(pipeline, last, None, {DELIVERED, SENT})  # files changed or SQL: cannot tell
    killed = end is False
    touched = {name for (name, _), fr in last.rows.items() if fr.states.count(DELIVERED) or fr.states.count(SENT)}
    if not maybe and not (killed and unanswered):
        return None  # nothing in flight and nothing a re-run may apply twice: the new run loses nothing
    what = "did not finish (killed, or its machine stopped)" if killed else "was stopped before it finished"
    text = (
        f"the last run of this pipeline, {run_id} ({run_dir}), {what}, with {unanswered:,} row(s) it had sent "
        f"without seeing Braze's answer ({delivered:,} confirmed). " + _what_this_run_sends(pipeline, touched)
    )
    whole = read_whole(last, pipeline, now)  # every row had its outcome: --resume does not read them again
    changed = sorted(f for stream, fps in (last.header.get("sources") or {}).items() for f, fp in fps.items()
                     if now.get(stream, {}).get(f) != list(fp) and stream not in whole)  # fmt: skip
    if any(s.source.is_sql for s in pipeline.streams):
        text += " (a pipeline reading SQL cannot be resumed)"
    elif changed:
        text += f" (it cannot be resumed: {', '.join(changed)} changed since, size or modification time)"
    else:
        text += (
            f". To finish that run instead, sending only what it did not deliver and counting the rows in flight in "
            f"possibly_duplicated, stop this one and run: {resume_command(pipeline, run_dir)}"
        )
    return Unfinished(run_id, run_dir, killed, text, twice)


def _sent_again(pipeline: Pipeline, last: Any, now: dict[str, dict[str, list[int]]] | None, states: set[int]
                ) -> dict[str, int]:  # fmt: skip
    """Per stream whose objects add up in Braze: the rows of `last` (a RunJournal) in `states` that a plain
    re-run sends again (a stream with delta or incremental state: only those sent without an answer, which
    its state never recorded), counted only in files this run reads again unchanged (same size and
    modification time), or, with `now` None, in any file or query (a changed file may hold the same rows)."""
    from connector.delivery.journal_rows import SENT

    before: dict[str, dict[str, list[int]]] = last.header.get("sources") or {}
    out: dict[str, int] = {}
    for s in pipeline.streams:
        if is_idempotent(s) or (now is not None and s.source.is_sql):
            continue
        again = states & {SENT} if s.delta or s.incremental is not None else states
        same = None if now is None else {f for f, fp in before.get(s.name, {}).items()
                                         if now.get(s.name, {}).get(f) == list(fp)}  # fmt: skip
        n = sum(sum(fr.states.count(st) for st in again) for (name, f), fr in last.rows.items()
                if name == s.name and (same is None or f in same))  # fmt: skip
        if n:
            out[s.name] = n
    return out


def _what_this_run_sends(pipeline: Pipeline, touched: set[str]) -> str:
    """Only delta and incremental state remember what Braze confirmed: a stream without either sends every
    row again, those the killed run delivered included. Named: such streams of which that run delivered or
    sent rows (`touched`); one it sent nothing of loses nothing."""
    forgetful = [s.name for s in pipeline.streams if not s.delta and s.incremental is None and s.name in touched]
    stateful = [s for s in pipeline.streams if (s.delta or s.incremental is not None) and s.name in touched]
    twice = ("(events, purchases and inc may count twice)" if not all(is_idempotent(s) for s in stateful) else
             "(attribute sets only: applying one again changes nothing)")  # fmt: skip
    remembered = ("This run sends again whatever that run did not confirm and does not count those rows, which "
                  f"Braze may already have applied {twice}")  # fmt: skip
    if not forgetful:
        return remembered
    names = ", ".join(forgetful)
    adds_up = not all(is_idempotent(s) for s in pipeline.streams if s.name in forgetful)
    text = (
        f"Stream(s) {names} keep no state (no delta, no incremental): this run sends every row of them again, "
        "those that run delivered included, " + ("so Braze applies them twice (events and purchases count twice, "
                                                 "inc adds twice)" if adds_up else
                                                 "which only sets the same attributes again")  # fmt: skip
    )
    if len(forgetful) < len(pipeline.streams):
        text += "; for the other streams, " + remembered[0].lower() + remembered[1:]
    return text
