"""Process checks for the tests that follow a child process (the bulk run's HTTP child)."""

from __future__ import annotations

from pathlib import Path


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie (an orphan's new parent may not reap it).

    Reads /proc/<pid>/stat (Linux); its state is the first field after the command name in parentheses.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
