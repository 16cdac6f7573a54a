"""Noticing, as a run begins, that the pipeline's last run did not finish (killed with kill -9, a crash, a
lost machine), so that a plain re-run says what it is about to do differently from `--resume`.

A run killed that way left requests in flight: Braze may have applied them, and their answers reached no
one. `--resume` finishes that run and counts those rows as possibly duplicated; a new run sends them again
without knowing (delta sync too: their confirmations were never recorded). The new run cannot tell which
of them Braze applied either, so it warns, naming the unfinished run's folder and the `--resume` command.

A run that finished, whatever its exit code (a stop by SIGTERM or Ctrl-C included), ends its journal with
an end record, so the check reads only the journal's last bytes; only an unfinished one is read whole,
to count its unanswered rows.
"""

from __future__ import annotations

import re
from pathlib import Path

from connector.config import Pipeline
from connector.delivery.journal import JOURNAL_FILE, decode
from connector.errors import ConfigError, JournalError

_TAIL = 64 * 1024  # the last bytes read: the end record is the journal's last line
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")  # a run id without a partition label


def _finished(journal: Path) -> bool | None:
    """Whether the journal's last whole line is an end record (None: unreadable)."""
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
            return isinstance(rec, dict) and rec.get("k") == "end"
    return False  # nothing whole at the end: cut off while writing


def _ours(run_id: str, partition: str | None) -> bool:
    """Whether a run of that id belongs to this partition (None: an unpartitioned run)."""
    return run_id.endswith(f"-{partition}") if partition is not None else bool(_RUN_ID.match(run_id))


def unfinished_warning(pipeline: Pipeline, report_dir: str | Path | None, partition: str | None) -> str | None:
    """A warning when the latest run of this pipeline and partition has no end record, else None.

    Called by a new sending run (not --resume) once it holds the pipeline's lock, so no other run of the
    same pipeline and partition is alive: a journal without an end belongs to a run that was killed. A
    journal killed before its header names no run, and counts as the run's own (nothing was sent)."""
    from connector.delivery.resume import DELIVERED, SENT, journal_header, load_journal, run_dirs, started_at

    runs = []
    for d in run_dirs(pipeline, report_dir)[1]:
        header = journal_header(d / JOURNAL_FILE)
        if not header or _ours(str(header.get("run_id", "")), partition):
            runs.append((started_at(d / JOURNAL_FILE), d))
    if not runs:
        return None
    run_dir = max(runs)[1]
    if _finished(run_dir / JOURNAL_FILE) is not False:
        return None
    try:
        last = load_journal(run_dir)
    except (ConfigError, JournalError):
        return None
    run_id = str(last.header.get("run_id", run_dir.name))
    unanswered = sum(fr.states.count(SENT) for fr in last.rows.values())
    if not unanswered:
        return None  # killed before anything left, or with nothing in flight: the new run loses nothing
    delivered = sum(fr.states.count(DELIVERED) for fr in last.rows.values())
    text = (
        f"the last run of this pipeline, {run_id} ({run_dir}), did not finish (killed, or its machine stopped), "
        f"with {unanswered:,} row(s) it had sent without seeing Braze's answer ({delivered:,} confirmed). "
        + _what_this_run_sends(pipeline)
    )
    if any(s.source.is_sql for s in pipeline.streams):
        return text + " (a pipeline reading SQL cannot be resumed)"
    return text + (
        f". To finish that run instead, sending only what it did not deliver and counting the rows in flight in "
        f"possibly_duplicated, stop this one and run: braze-connector run {pipeline.origin} --resume {run_dir}"
    )


def _what_this_run_sends(pipeline: Pipeline) -> str:
    """Only delta and incremental state remember what Braze confirmed: a stream without either sends every
    row again, those the killed run delivered included."""
    forgetful = [s.name for s in pipeline.streams if not s.delta and s.incremental is None]
    remembered = ("This run sends again whatever that run did not confirm and does not count those rows, which "
                  "Braze may already have applied (events, purchases and inc may count twice)")  # fmt: skip
    if not forgetful:
        return remembered
    names = ", ".join(forgetful)
    text = (
        f"Stream(s) {names} keep no state (no delta, no incremental): this run sends every row of them again, "
        "those that run delivered included, so Braze applies them twice (events and purchases count twice, inc "
        "adds twice)"
    )
    if len(forgetful) < len(pipeline.streams):
        text += "; for the other streams, " + remembered[0].lower() + remembered[1:]
    return text
