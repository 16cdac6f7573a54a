"""A run's journal read back (`journal.log`, written by journal.py): every row's last state by (stream, file),
and what a resumed run may carry over without reading the sources again (resume.py uses it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.config import Pipeline
from connector.delivery.journal import JOURNAL_FILE, read_journal
from connector.delivery.outcomes import DUP_DROPPED, DUP_RESUMED
from connector.errors import ConfigError
from connector.records import Rejected, RowRef

# Row states as the journal leaves them (one byte per row number); REJECTED: by the run's own checks.
SENT, DELIVERED, REFUSED, FAILED, UNKNOWN, NOT_APPLIED, REJECTED = 1, 2, 3, 4, 5, 6, 7
FINAL = (DELIVERED, REFUSED, REJECTED)  # nothing of such a row is left to send, fail or check
_CODES = {"R": REFUSED, "F": FAILED, "U": UNKNOWN, "N": NOT_APPLIED}


@dataclass
class FileRows:
    """What the journal says about the rows of one (stream, source file)."""

    states: bytearray = field(default_factory=bytearray)
    # (rule, reason), (status, error), or for REJECTED (rule, reason, stage, column)
    detail: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    dup: dict[int, str] = field(default_factory=dict)  # rows possibly applied twice, and why

    def set(self, rows: list[int], state: int) -> None:
        states = self.states
        top = max(rows, default=-1)
        if top >= len(states):
            states.extend(bytes(top + 1 - len(states)))
        for r in rows:
            states[r] = state

    def state(self, row: int) -> int:
        return self.states[row] if row < len(self.states) else 0


@dataclass
class RunJournal:
    """A run's journal, read back: its header, every row's last state, and how the last attempt ended."""

    path: Path
    header: dict[str, Any]
    attempts: int
    rows: dict[tuple[str, str], FileRows]
    ended: dict[str, Any] | None
    valid_bytes: int
    torn_bytes: int
    read: dict[str, int] = field(default_factory=dict)  # stream -> rows, once an attempt read it to its end

    def final_rows(self, stream: str) -> tuple[int, int]:
        """(rows of the stream with a final outcome: delivered or rejected, rows with any other state)."""
        final = other = 0
        for (name, _), fr in self.rows.items():
            if name == stream:
                done = sum(fr.states.count(s) for s in FINAL)
                final += done
                other += len(fr.states) - fr.states.count(0) - done
        return final, other


def load_journal(run_dir: Path) -> RunJournal:
    """Read `run_dir/journal.log` (one without a whole first record reads as no attempt: nothing was sent).

    Raises:
        ConfigError: there is no journal.
    """
    path = run_dir / JOURNAL_FILE
    if not path.is_file():
        raise ConfigError(
            f"--resume {run_dir}: no {JOURNAL_FILE} there, so that run sent nothing (validate, --dry-run, or "
            "stopped before its first request): run the pipeline again, or pass another run's report folder"
        )
    lines = read_journal(path)
    header: dict[str, Any] | None = None
    attempts = 0
    rows: dict[tuple[str, str], FileRows] = {}
    files: dict[int, FileRows] = {}
    sent: dict[int, tuple[FileRows, list[int]]] = {}
    ended: dict[str, Any] | None = None
    read: dict[str, int] = {}
    for rec in lines.records:
        if isinstance(rec, dict):
            kind = rec.get("k")
            if kind == "run":
                header, attempts, ended = rec, attempts + 1, None
                files, sent = {}, {}
            elif kind == "file":
                files[rec["i"]] = rows.setdefault((rec["stream"], rec["file"]), FileRows())
            elif kind == "end":
                ended = rec
            elif kind == "read":
                read[rec["stream"]] = rec["rows"]
            continue
        tag = rec[0]
        if tag == "s":
            fr = files[rec[2]]
            fr.set(rec[3], SENT)
            sent[rec[1]] = (fr, rec[3])
        elif tag == "d":
            if rec[1] not in sent:
                continue
            fr, sent_rows = sent.pop(rec[1])
            refused = set(rec[3])
            done = [r for r in sent_rows if r not in refused]
            fr.set(done, DELIVERED)
            if rec[2]:
                fr.dup.update(dict.fromkeys(done, DUP_DROPPED))
        elif tag == "o":
            fr = files[rec[1]]
            state = _CODES[rec[2]]
            fr.set(rec[3], state)
            if state != NOT_APPLIED:
                fr.detail.update(dict.fromkeys(rec[3], (rec[4], rec[5])))
            if rec[6]:
                fr.dup.update(dict.fromkeys(rec[3], DUP_DROPPED))
        elif tag == "p":
            files[rec[1]].dup.update(dict.fromkeys(rec[2], DUP_RESUMED))
        elif tag == "r":
            fr = files[rec[1]]
            fr.set([r[0] for r in rec[2]], REJECTED)
            fr.detail.update((row, (rule, reason, stage, column)) for row, stage, rule, column, reason in rec[2])
    # No whole first record: the run was stopped before it could send anything; resuming starts it afresh.
    return RunJournal(path, header or {}, attempts, rows, ended, lines.valid_bytes, lines.torn_bytes, read)


def carried_reject(fr: FileRows, row: int, ref: RowRef, values: dict[str, Any]) -> Rejected:
    """A row refused by Braze or rejected by the run's own checks, as the journal holds it."""
    if fr.state(row) == REFUSED:
        rule, reason = fr.detail.get(row, ("braze.request", "refused by Braze"))
        return Rejected(ref, "destination", str(rule), str(reason), values=values)
    rule, reason, stage, column = fr.detail[row]
    return Rejected(ref, stage, str(rule), str(reason), column, values)

def read_whole(journal: RunJournal, pipeline: Pipeline, now: dict[str, dict[str, list[int]]]) -> set[str]:
    """The streams a resumed run carries over without reading them again, so their files may have changed
    since: read to their end by an earlier attempt, every row delivered or rejected (none left to send, fail
    or check), the same files (`now`: fingerprints()) and no state that follows each row (delta, incremental
    and mirror streams are read again). None for a resumed --retry-failed run (its rows come from a list)."""
    if journal.header.get("retry"):
        return set()
    before: dict[str, dict[str, list[int]]] = journal.header.get("sources") or {}
    out = set()
    for s in pipeline.streams:
        if s.delta or s.incremental is not None or s.mirror is not None or s.name not in journal.read:
            continue
        if set(before.get(s.name, {})) != set(now.get(s.name, {})):
            continue
        final, other = journal.final_rows(s.name)
        if not other and final == journal.read[s.name]:
            out.add(s.name)
    return out
