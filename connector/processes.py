"""Whether the process that wrote a lock file or a history line is still running (on this host).

A pid alone can be reused by a later process, so where Linux's /proc tells when a process started, that
start (clock ticks since boot) is recorded beside the pid and compared: another process under the same pid
is not the one that wrote it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def started_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat; fields[0] is field 3 (the state)
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int, started: int | None = None) -> bool:
    """True while process `pid` exists (a zombie, dead but not yet reaped, does not count) and, when its
    start is given and known, is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: the pid exists, that is all one can tell
    if state == "Z":
        return False
    return started is None or started_ticks(pid) in (None, started)


def this_process() -> dict[str, object]:
    """This process as a lock file or a history line names it: pid, host and (where known) its start."""
    me: dict[str, object] = {"pid": os.getpid(), "host": socket.gethostname()}
    ticks = started_ticks(os.getpid())
    if ticks is not None:
        me["pid_started"] = ticks
    return me
