"""One run of a pipeline at a time: an OS file lock beside its reports and beside its delta state.

Two runs of one pipeline at once would send rows twice and overwrite each other's state, so a run that
sends holds `fcntl.flock` on `<report root>/.<pipeline>.lock` (and on `<state file>.lock` for delta
streams). The lock file also holds the pid, host and start time of its holder, for the message that
refuses a second run. The kernel drops a flock when its process dies, however it dies: a lock file whose
lock is free but which still names a holder was left by a killed run, and is taken over with a warning.
On release the file is emptied, never deleted (deleting would let two runs lock two different files).

A pipeline that keeps its state in PostgreSQL (`state.url_env`) may run on several machines, which share no
file: its run also holds an advisory lock in that database (delta.pg.PgRunLock), dropped by the server when
the run's connection ends, however the process ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from connector.config import Pipeline
from connector.delta import keeping_state, state_path
from connector.errors import ConfigError, RunLocked
from connector.processes import alive
from connector.report.paths import report_root

if TYPE_CHECKING:
    from connector.delta.pg import PgRunLock

__all__ = ["RunLocks", "lock_file_for", "lock_files", "shared_lock_files"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def lock_file_for(folder: Path, pipeline: str) -> Path:
    """The lock file of a pipeline in a folder: `.<pipeline>.lock` (name made file-safe)."""
    return folder / f".{_safe(pipeline)}.lock"


def _roots(pipeline: Pipeline, report_dir: str | Path | None) -> list[Path]:
    """report.dir's root, and --report-dir's when given and different."""
    roots = [report_root(pipeline, None)]
    if report_dir is not None:
        chosen = report_root(pipeline, report_dir)
        if chosen.resolve() != roots[0].resolve():
            roots.append(chosen)
    return roots


def lock_files(pipeline: Pipeline, report_dir: str | Path | None, partition: str | None = None) -> list[Path]:
    """A run's exclusive locks: beside the pipeline's reports (report.dir's, and --report-dir's when given:
    another --report-dir must not let two runs of one pipeline send the same rows at once), and beside its
    state file when a stream uses delta or an incremental cursor. A partition of a `--partition K/N` run locks
    `.<pipeline>.pKofN.lock` instead, and holds the pipeline's lock shared (shared_lock_files); its state
    file is its own ({partition} in state.path: delta.check_partitioned_state)."""
    name = pipeline.name if partition is None else f"{pipeline.name}.{partition}"
    paths = [lock_file_for(root, name) for root in _roots(pipeline, report_dir)]
    if pipeline.state.url_env is None and keeping_state(pipeline):
        state = state_path(pipeline, partition)  # (state in PostgreSQL: RunLocks.acquire_database)
        paths.append(state.with_name(state.name + ".lock"))
    return paths


def shared_lock_files(pipeline: Pipeline, report_dir: str | Path | None, partition: str | None = None) -> list[Path]:
    """What a partition holds shared: the pipeline's own lock (so no unpartitioned run starts beside the
    partitions, nor they beside it) and `.<pipeline>.nN.lock` of its N (so partitions of another N are
    refused: they would split the rows differently and send some twice). None for an unpartitioned run."""
    if partition is None:
        return []
    n = partition.rsplit("of", 1)[-1]
    paths = [lock_file_for(root, pipeline.name) for root in _roots(pipeline, report_dir)]
    paths.append(lock_file_for(_roots(pipeline, None)[0], f"{pipeline.name}.n{n}"))
    return paths


class RunLocks:
    """The locks a run holds; `acquire` refuses a run while another holds one, `release` frees them all."""

    def __init__(self) -> None:
        self.held: list[tuple[Path, int]] = []
        self._taken: dict[str, list[Path]] = {}  # who left them -> lock files taken over
        self.database: PgRunLock | None = None

    @property
    def warnings(self) -> list[str]:
        """One warning per run whose lock files were taken over (a killed run leaves its report's and its
        state's): only that; a delivering run it interrupted is named, with what to do, by the unfinished-run
        check (unfinished.py), and a --resume is that run being finished."""
        return [f"lock file{'s' if len(paths) > 1 else ''} {', '.join(map(str, paths))} "
                f"{'were' if len(paths) > 1 else 'was'} left by {who}; taken over" for who, paths in self._taken.items()]

    def acquire_database(self, pipeline: Pipeline, env: Mapping[str, str], partition: str | None = None) -> None:
        """With state in PostgreSQL and a stream keeping state: the run's lock in that database.

        Raises:
            RunLocked: a run of this pipeline (or this partition) holds it, on this machine or another.
            ConfigError: the state database cannot be reached.
        """
        url_env = pipeline.state.url_env
        if url_env is None or not keeping_state(pipeline):
            return
        from connector.delta.pg import PgRunLock

        lock = PgRunLock(url_env, pipeline.name, partition, env)
        started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if lock.acquire(socket.gethostname(), os.getpid(), started):
            self.database = lock
            return
        holders = lock.holders()
        other = lock.other_count
        lock.release()
        if other is not None:
            raise RunLocked(
                f"pipeline {pipeline.name!r} is already running against its shared state (${url_env}) as partitions "
                f"of another count ({other}): partitions of two different counts split the rows differently and "
                "would send some twice; wait for them to end"
            )
        named = "; ".join(f"{'the whole pipeline' if part == 'all' else 'partition ' + part}: pid {pid} on {host}, "
                          f"since {since}" for part, host, pid, since in holders[:4])  # fmt: skip
        raise RunLocked(
            f"pipeline {pipeline.name!r} is already running against its shared state (${url_env})"
            + (f" (last runs to take it: {named})" if named else "")
            + ": the state database's run lock is held. Wait for that run to end or stop it; two runs at once "
            "would send rows twice and overwrite each other's state"
        )

    def acquire(self, pipeline: str, paths: list[Path], shared: list[Path] | None = None) -> None:
        """Lock every path (created with its folder when missing), or none.

        Raises:
            RunLocked: another live process holds one of them (the message names its pid and the file).
            ConfigError: a lock file cannot be created.
        """
        try:
            for path in shared or []:
                self.held.append((path, self._lock(pipeline, path, shared=True)))
                if path.name.startswith(f".{_safe(pipeline)}.n"):
                    self._refuse_other_partitionings(pipeline, path)
            for path in paths:
                self.held.append((path, self._lock(pipeline, path)))
        except BaseException:
            self.release()
            raise

    def _refuse_other_partitionings(self, pipeline: str, mine: Path) -> None:
        """Partitions of another N hold their `.nM.lock` shared: an exclusive try on it fails while they run."""
        for other in mine.parent.glob(f".{_safe(pipeline)}.n*.lock"):
            if other == mine:
                continue
            fd = os.open(other, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                raise RunLocked(
                    f"pipeline {pipeline!r} is already running as partitions of another count ({other}): "
                    "partitions of two different counts split the rows differently and would send some twice; "
                    "wait for them to end"
                ) from None
            finally:
                os.close(fd)

    def _lock(self, pipeline: str, path: Path, shared: bool = False) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot create the run lock {path} ({e.strerror}); check the folder's permissions") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunLocked(_refusal(pipeline, path, holder)) from None
        if shared:
            return fd  # held by several partitions at once: the file names none of them
        left = _read(fd)
        if left.get("pid") or left.get("unreadable"):
            self._taken.setdefault(_describe(left), []).append(path)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "pipeline": pipeline,
              "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        return fd

    def release(self) -> None:
        """Empty and unlock every lock file held, and the database's lock (safe to call twice)."""
        if self.database is not None:
            self.database.release()
            self.database = None
        held, self.held = self.held, []
        for _, fd in reversed(held):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours alone: an exclusive lock, or a shared one's last holder
                os.ftruncate(fd, 0)
            except BlockingIOError:
                pass  # other partitions still hold this shared lock: its last holder empties it
            finally:
                os.close(fd)  # closing the last descriptor drops the flock


def _read(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        doc = json.loads(data) if data.strip() else {}
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {"unreadable": True}  # unreadable content still says someone wrote it


def _refusal(pipeline: str, path: Path, holder: dict[str, object]) -> str:
    """Why a second run is refused. The holder's pid may be unknown: it locked the file but has not written
    it yet, the file cannot be read, or partitions hold it shared (they write nothing): never "pid ?"."""
    pid = holder.get("pid")
    since = f", since {holder['started_at']}" if holder.get("started_at") else ""
    host = f" on {holder['host']}" if holder.get("host") else ""
    tail = "two runs at once would send rows twice and overwrite each other's report and state"
    if pid is None:
        return (f"pipeline {pipeline!r} is already running: a process whose pid was not recorded (yet: it may "
                f"have just started; or partitions of a --partition run) holds the lock file {path}. Wait for it "
                f"to end, or find it with `fuser -v {path}` and stop it; {tail}")  # fmt: skip
    return (f"pipeline {pipeline!r} is already running (pid {pid}{host}{since}): it holds the lock file {path}. "
            f"Wait for that run to end, or stop it (kill -TERM {pid}); {tail}")  # fmt: skip


def _describe(holder: dict[str, object]) -> str:
    pid = holder.get("pid")
    since = f", started {holder['started_at']}" if holder.get("started_at") else ""
    if pid is None:
        return "a run whose pid the lock file does not say (it could not be read) that no longer holds it"
    text = f"a run (pid {pid}{since})"
    if holder.get("host") not in (None, socket.gethostname()):
        return f"{text} on {holder['host']} that no longer holds it"
    if isinstance(pid, int) and not alive(pid):
        return f"{text} that is no longer running (killed?)"
    return f"{text} that no longer holds it"
