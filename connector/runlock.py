"""One run of a pipeline at a time: an OS file lock beside its reports and beside its delta state.

Two runs of one pipeline at once would send rows twice and overwrite each other's state, so a run that
sends holds `fcntl.flock` on `<report root>/.<pipeline>.lock` (and on `<state file>.lock` for delta
streams). The lock file also holds the pid, host and start time of its holder, for the message that
refuses a second run. The kernel drops a flock when its process dies, however it dies: a lock file whose
lock is free but which still names a holder was left by a killed run, and is taken over with a warning.
On release the file is emptied, never deleted (deleting would let two runs lock two different files).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

from connector.config import Pipeline
from connector.delta import state_path
from connector.errors import ConfigError, RunLocked
from connector.report.paths import report_root

__all__ = ["RunLocks", "lock_file_for", "lock_files"]


def lock_file_for(folder: Path, pipeline: str) -> Path:
    """The lock file of a pipeline in a folder: `.<pipeline>.lock` (name made file-safe)."""
    return folder / f".{re.sub(r'[^A-Za-z0-9._-]', '_', pipeline)}.lock"


def lock_files(pipeline: Pipeline, report_dir: str | Path | None, partition: str | None = None) -> list[Path]:
    """A run's locks: beside the pipeline's reports (report.dir's, and --report-dir's when given: another
    --report-dir must not let two runs of one pipeline send the same rows at once), and beside its state
    when a stream uses delta or an incremental cursor. Each partition of a `--partition K/N` run has report
    locks of its own, so the N parts run side by side."""
    name = pipeline.name if partition is None else f"{pipeline.name}.{partition}"
    paths = [lock_file_for(report_root(pipeline, None), name)]
    if report_dir is not None:
        chosen = lock_file_for(report_root(pipeline, report_dir), name)
        if chosen.resolve() != paths[0].resolve():
            paths.append(chosen)
    if any(s.delta or s.incremental is not None for s in pipeline.streams):
        state = state_path(pipeline)
        paths.append(state.with_name(state.name + ".lock"))
    return paths


class RunLocks:
    """The locks a run holds; `acquire` refuses a run while another holds one, `release` frees them all."""

    def __init__(self) -> None:
        self.held: list[tuple[Path, int]] = []
        self.warnings: list[str] = []

    def acquire(self, pipeline: str, paths: list[Path]) -> None:
        """Lock every path (created with its folder when missing), or none.

        Raises:
            RunLocked: another live process holds one of them (the message names its pid and the file).
            ConfigError: a lock file cannot be created.
        """
        try:
            for path in paths:
                self.held.append((path, self._lock(pipeline, path)))
        except BaseException:
            self.release()
            raise

    def _lock(self, pipeline: str, path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot create the run lock {path} ({e.strerror}); check the folder's permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            pid = holder.get("pid", "?")
            since = f", since {holder['started_at']}" if holder.get("started_at") else ""
            host = f" on {holder['host']}" if holder.get("host") else ""
            raise RunLocked(
                f"pipeline {pipeline!r} is already running (pid {pid}{host}{since}): it holds the lock file "
                f"{path}. Wait for that run to end, or stop it (kill -TERM {pid}); two runs at once would send "
                "rows twice and overwrite each other's report and state"
            ) from None
        left = _read(fd)
        if left.get("pid"):
            self.warnings.append(f"lock file {path} was left by {_describe(left)}; taken over")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "pipeline": pipeline,
              "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        return fd

    def release(self) -> None:
        """Empty and unlock every lock file held (safe to call twice)."""
        held, self.held = self.held, []
        for _, fd in held:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the last descriptor drops the flock


def _read(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        doc = json.loads(data) if data.strip() else {}
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {"pid": "?"}  # unreadable content still says someone wrote it


def _describe(holder: dict[str, object]) -> str:
    pid = holder.get("pid")
    since = f", started {holder['started_at']}" if holder.get("started_at") else ""
    text = f"a run (pid {pid}{since})"
    if holder.get("host") not in (None, socket.gethostname()):
        return f"{text} on {holder['host']} that no longer holds it"
    if isinstance(pid, int) and not _alive(pid):
        return f"{text} that is no longer running (killed?)"
    return f"{text} that no longer holds it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
