"""A run's scope for sharing database driver objects (readers/sql/drivers.py), importable without the SQL
readers: a run of files only enters and leaves it (the SQL package and its drivers stay unimported)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_scope = threading.local()  # .databases: URL -> the driver's shared database, while shared_databases() runs


@contextmanager
def shared_databases() -> Iterator[None]:
    """Within (in this thread): PostgreSQL connections to one URL share the driver's database object.

    Why: the driver's database object reads the server's type catalogue when it is made (a connection of
    its own and a query of pg_type), then each connection opens one more: a run opened two or three (the
    count, the read, a PostgreSQL state), about 0.1 s of wall and the server's CPU each. Scoped to a run
    (pipeline.run_pipeline), so each run reads the catalogue afresh (a type created since is known).
    """
    if getattr(_scope, "databases", None) is not None:  # nested: the outer scope shares and closes
        yield
        return
    _scope.databases = {}
    try:
        yield
    finally:
        held, _scope.databases = _scope.databases, None
        for shared in held.values():
            shared.close()  # the database itself closes with its last connection


def held() -> dict[str, Any] | None:
    """The scope's shared databases by URL (drivers.py adds to it); None outside a scope."""
    return getattr(_scope, "databases", None)
