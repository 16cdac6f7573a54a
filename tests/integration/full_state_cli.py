"""The command line with a state file whose disk is full after N transactions (FULL_AFTER_WRITES=N), for
test_delta_sync.py where a real full filesystem (a small tmpfs) cannot be mounted:

    python full_state_cli.py run pipelines/t.yaml ...

Every state write after the N-th raises SQLite's own error for a full disk, as a full filesystem makes it.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from connector.cli import main
from connector.delta.stores import SqliteStore

_write = SqliteStore.write
_done = [0]


def _full_after(self: SqliteStore, stream: str, confirm: list[tuple[str, bytes]], forget: list[str],
                sources: dict[str, int] | None = None, bulk: Any = None) -> None:  # fmt: skip
    if _done[0] >= int(os.environ["FULL_AFTER_WRITES"]):
        raise sqlite3.OperationalError("database or disk is full")
    _write(self, stream, confirm, forget, sources, bulk)
    _done[0] += 1


SqliteStore.write = _full_after  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
