"""Mirror mode for a run: report, or delete, the users that left a stream's source (Stream.mirror).

The pipeline calls `see(stream, chunk)` for every chunk read (before any check: a rejected row's user is
present), `finish(stream, complete)` when a stream's read ends, and `apply(client)` once every stream has
been read and delivered without a stop, an abort or a source error. Only then are removals decided
(delta/removed.py), per stream whose read completed and whose every line named its user (a stream whose
state held no user when the run began has none removed: its users are not noted, the state only counted;
nor has one whose delta lookups found, before the run wrote anything of it, as many distinct users as the
state held when the run began: the state is counted, not listed):

- `report`: the removed users are counted (report.json `removed`, the summary) and listed in removed.csv
  (`_stream`, `_identifier`, `_outcome`, `_error`) beside the rejects. They stay in the state, so the next
  run reports them again until they come back or are deleted.
- `delete`: refused as a whole when more than `max_delete_fraction` of the known users would go, unless
  `--allow-deletes N` covers the number (exit 1, nothing deleted, outcome `refused`); else sent to
  /users/delete (delivery/deletes.py). A 2xx removes the users from the state (`deleted`); a failure keeps
  them (`delete_failed`, exit 1) and the next run tries again. A dry run lists them as `would_delete` (or
  `refused`) and sends nothing.

Never decided: validate, --retry-failed (reads only failed rows), --resume, --partition (reads a part of the
source), and a stream whose read stopped early, held lines that did not parse (their users are unknown) or
failed a table-level expectation (with `fail` or `warn`: an extract that lost rows looks like that).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.delivery.deletes import ENDPOINT, delete_users
from connector.delta.removed import Presence, Removed, delete_limit, guard
from connector.delta.users import ChunkUsers
from connector.report.sinks import CsvSink

if TYPE_CHECKING:
    from connector.config import Pipeline, Stream
    from connector.delivery.client import BrazeClient
    from connector.delta import DeltaState
    from connector.records import Chunk
    from connector.report import RunReport

logger = logging.getLogger(__name__)

REMOVED_FILE = "removed.csv"
REMOVED_META = ["_stream", "_identifier", "_outcome", "_error"]


class Mirror:
    """The mirror streams of one run: who was read, then what became of those who were not."""

    def __init__(self, pipeline: Pipeline, delta: DeltaState, report: RunReport, *, dry_run: bool,
                 allow_deletes: int | None, undecided: str | None) -> None:  # fmt: skip
        """`undecided`: why this run may not decide removals at all (a retry, resume or partition run)."""
        self.streams = {s.name: s for s in pipeline.streams if s.mirror is not None}
        self.delta, self.report = delta, report
        self.dry_run, self.allow_deletes, self.undecided = dry_run, allow_deletes, undecided
        self.escape = pipeline.report.csv_formula_escape
        self.presence = {} if undecided else {name: Presence() for name in self.streams}
        # A stream whose state holds no user as the run begins can have none removed: every user the run
        # confirms, it read. Its users are not noted, and at the end the state is counted, not listed. Not
        # on a read-only run: it holds no run lock, so another run may confirm users meanwhile.
        self.fresh = set() if delta.read_only else {name for name in self.presence if delta.holds_nothing(name)}
        # The others: how many users the state knows as the run begins. When delta's lookups found that many
        # distinct users (before the run wrote any), every one was read again: none removed, nothing listed.
        self.start: dict[str, int] = {}
        for name in self.presence.keys() - self.fresh if not delta.read_only else ():
            self.start[name] = delta.known_count(name)
            delta.track_found(name)
        self.complete: set[str] = set()
        self.sink: CsvSink | None = None

    def see(self, stream: Stream, chunk: Chunk, users: ChunkUsers | None = None) -> ChunkUsers | None:
        """Record the users of a chunk as read (rows that did not parse name nobody: counted apart); returns
        the users of its rows when it read them (delta sync's fast path needs them too), else `users` (the
        chunk's, when the fast path has them: delta/fastpath.py)."""
        presence = self.presence.get(stream.name)
        if presence is None:
            return users
        presence.unreadable += len(chunk.rejects)
        if len(chunk) and stream.name not in self.fresh:
            users = users if users is not None else ChunkUsers(stream, chunk)
            presence.see_hashes(users.hashed()[1])
        return users

    def finish(self, stream: Stream, complete: bool) -> None:
        """The stream's read ended; `complete`: every row of its source was read (no stop, no abort)."""
        if complete and stream.name in self.presence:
            self.complete.add(stream.name)

    def apply(self, client: BrazeClient | None, undecided: str | None = None) -> int:
        """Decide the removals of every mirror stream (delete them with a client); the exit code it implies.

        `undecided`: why this run may not decide after all (it was stopped, aborted or a source failed).
        """
        self.undecided = self.undecided or undecided
        code = 0
        summary: dict[str, Any] = {}
        try:
            for name, stream in self.streams.items():
                entry, c = self._stream(stream, client)
                summary[name] = entry
                code = max(code, c)
        finally:
            self.close()
        self.report.removed = summary or None
        return code

    def close(self) -> None:
        for presence in self.presence.values():
            presence.close()
        self.presence = {}
        if self.sink is not None:
            self.sink.close()

    # ---- one stream ---------------------------------------------------------------------------------
    def _stream(self, stream: Stream, client: BrazeClient | None) -> tuple[dict[str, Any], int]:
        mode = stream.mirror
        entry: dict[str, Any] = {"on_removed": mode, "decided": False, "known": None, "removed": None,
                                 "deleted": 0, "delete_failed": 0, "refused": False, "file": None}  # fmt: skip
        why = self._undecided(stream)
        if why is not None:
            entry["reason"] = why
            # Warned where the pipeline asked for removals, or where this stream's own read kept them undecided;
            # the default report mode is not repeated on every stopped, aborted or partial run (its report says).
            if stream.on_removed is not None or (stream.name in self.presence and not self.undecided):
                self.report.add_warning(f"removed users: stream {stream.name}: not decided: {why}")
            return entry, 0
        if stream.name in self.fresh or self.delta.found_count(stream.name) == self.start.get(stream.name, -1):
            # nothing known as the run began, or all of it read again: nothing removed (__init__)
            entry.update(decided=True, known=self.delta.known_count(stream.name), removed=0)
            return entry, 0
        aliases = stream.identifier is not None and stream.identifier.kind == "user_alias"
        removed = self.presence[stream.name].removed(lambda: self.delta.known_keys(stream.name), aliases=aliases)
        entry.update(decided=True, known=removed.known, removed=removed.count)
        if removed.stale and not self.dry_run:  # old-form alias keys of users known under today's key
            self.delta.forget(stream.name, removed.stale)
            logger.info("stream %s: %d alias key(s) of the old form left the state", stream.name, len(removed.stale))
        if not removed.count:
            return entry, 0
        entry["file"] = str(self._sink().path)
        if mode == "report":
            self._list(stream, removed, "reported")
            self.report.add_warning(
                f"removed users: stream {stream.name}: {removed.count:,} of {removed.known:,} known user(s) are "
                f"gone from the source (on_removed: report; listed in {REMOVED_FILE}, nothing deleted)"
            )
            return entry, 0
        refusal = guard(stream.name, removed.count, removed.known, stream.max_delete_fraction, self.allow_deletes)
        if refusal is not None:
            entry["refused"] = True
            entry["limit"] = delete_limit(removed.known, stream.max_delete_fraction)
            self._list(stream, removed, "refused")
            self.report.add_warning(f"removed users: {refusal}")
            return entry, 1
        if self.dry_run or client is None:
            self._list(stream, removed, "would_delete")
            self.report.add_warning(f"removed users: stream {stream.name}: a run would delete {removed.count:,} of "
                                    f"{removed.known:,} known user(s) (dry run: nothing sent)")  # fmt: skip
            return entry, 0
        return self._delete(stream, removed, client, entry)

    def _undecided(self, stream: Stream) -> str | None:
        if self.undecided:
            return self.undecided
        if stream.name not in self.complete or stream.name not in self.presence:
            return "the read of the stream did not complete"
        self.delta.commit()  # what waits is written, or found unwritable, before the state is read (never raises)
        if self.delta.unrecorded is not None:  # its store failed: it may not even be readable
            return "the delta state failed this run (its warning says why), so the users it knows are not those Braze holds"
        failed = [c for c in self.report.table_checks if c["stream"] == stream.name and not c["success"]]
        if failed:
            return (f"the table check {failed[0]['expectation']} failed ({failed[0]['detail']}): the source may be "
                    "incomplete")  # fmt: skip
        unreadable = self.presence[stream.name].unreadable
        if unreadable:
            return (f"{unreadable:,} line(s) of the source could not be parsed, so the users they hold are unknown "
                    "(see the rejects file)")  # fmt: skip
        return None

    def _delete(self, stream: Stream, removed: Removed, client: BrazeClient,
                entry: dict[str, Any]) -> tuple[dict[str, Any], int]:  # fmt: skip
        def on_request(status: int, ms: float, n: int, retries: int, limited: int) -> None:
            self.report.record_request(ENDPOINT, status, ms, n, retried=retries, rate_limited=limited)

        def on_deleted(keys: list[str]) -> None:
            self.delta.forget(stream.name, keys)  # Braze confirmed: the state no longer knows them
            self._write(stream, [(k, "deleted", "") for k in keys])

        result = delete_users(client, removed.keys(), on_request, on_deleted)
        self._write(stream, [(k, "delete_failed", why) for k, why in result.failed])
        entry.update(deleted=len(result.deleted), delete_failed=len(result.failed))
        logger.info("stream %s: %d user(s) deleted, %d not", stream.name, len(result.deleted), len(result.failed))
        if not result.failed:
            self.report.add_warning(f"removed users: stream {stream.name}: {len(result.deleted):,} user(s) gone from "
                                    f"the source were deleted (on_removed: delete; listed in {REMOVED_FILE})")  # fmt: skip
            return entry, 0
        self.report.add_warning(
            f"removed users: stream {stream.name}: {len(result.failed):,} of {removed.count:,} user(s) to delete "
            f"were not deleted ({result.failed[0][1]}); they stay in the state and the next run tries again "
            f"({len(result.deleted):,} deleted)"
        )
        return entry, max(1, result.fatal.exit_code if result.fatal is not None else 1)

    def _list(self, stream: Stream, removed: Removed, outcome: str) -> None:
        page: list[tuple[str, str, str]] = []
        for key in removed.keys():
            page.append((key, outcome, ""))
            if len(page) >= 5000:
                self._write(stream, page)
                page = []
        self._write(stream, page)

    def _write(self, stream: Stream, rows: list[tuple[str, str, str]]) -> None:
        if rows:
            self._sink().write([({}, [stream.name, key, outcome, why]) for key, outcome, why in rows])

    def _sink(self) -> CsvSink:
        if self.sink is None:
            self.sink = CsvSink(Path(self.report.report_dir) / REMOVED_FILE, REMOVED_META, escape=self.escape)
        return self.sink


def open_mirror(pipeline: Pipeline, delta: DeltaState | None, report: RunReport, *, dry_run: bool,
                allow_deletes: int | None, retrying: bool, resuming: bool, partitioned: bool) -> Mirror | None:  # fmt: skip
    """The run's mirror streams (None when none has one, or without a delta state)."""
    if delta is None or not any(s.mirror is not None for s in pipeline.streams):
        return None
    undecided = None
    if retrying:
        undecided = "a --retry-failed run reads only the failed rows"
    elif resuming:
        undecided = "a resumed run finishes an interrupted one; the next full run decides"
    elif partitioned:
        undecided = "a --partition run reads only its part of the source"
    return Mirror(pipeline, delta, report, dry_run=dry_run, allow_deletes=allow_deletes, undecided=undecided)
