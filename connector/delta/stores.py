"""Where delta sync's confirmed records live: a local SQLite file (default) or PostgreSQL (pg_store.py).

A store holds only what Braze confirmed, as (stream, key) -> record bytes. Each call is one bulk statement
over the whole list of keys (a JSON array bound as one parameter and joined against the table), so a chunk
of 50,000 rows costs one statement, not one per row. `write` confirms and forgets in one transaction;
`empty(stream)` says whether a stream has no record at all (a run that starts so looks nothing up),
`keys(stream)` lists a stream's keys in code-point order and `count(stream)` counts them.

The table's layout is the one earlier versions wrote; a record may now be the JSON of the values in the
row's key order rather than sorted (fingerprints.py), and both are read alike, so an existing state file
needs no migration (tests/unit/test_delta.py opens one as the previous version left it).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import orjson

from connector.errors import ConfigError


class Store(Protocol):
    """The confirmed records of one pipeline's delta streams."""

    label: str

    def lookup(self, stream: str, keys: list[str]) -> list[bytes | None]: ...

    def empty(self, stream: str) -> bool: ...

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None: ...

    def keys(self, stream: str) -> list[str]: ...

    def count(self, stream: str) -> int: ...

    def close(self) -> None: ...


def open_db(path: Path) -> sqlite3.Connection:
    """The state file, opened for several threads (autocommit; WAL, so a killed run keeps what it committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def open_state_file(path: Path, schema: str, *, read_only: bool) -> sqlite3.Connection | None:
    """The state file with `schema`'s tables (None: a read-only run and no file yet: create nothing).

    Raises:
        ConfigError: the file cannot be opened or its tables created.
    """
    if read_only and not path.exists():
        return None
    try:
        db = open_db(path)
        if not read_only:
            db.executescript(schema)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(f"state file {path}: cannot be opened ({exc}); check state.path") from None
    return db


_SCHEMA = """
CREATE TABLE IF NOT EXISTS delta (
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (stream, key)
) WITHOUT ROWID;
DROP TABLE IF EXISTS state;
"""
# `state` held the per-attribute fingerprints of earlier versions (pending/confirmed per key): a state file
# written by them loses it once, and the first delta run after the upgrade sends everything again.
# The JSON array drives the join, probing the primary key once per element, in the array's order.
_LOOKUP = "SELECT d.record FROM json_each(?) AS j LEFT JOIN delta AS d ON d.stream = ? AND d.key = j.value"
_FORGET = "DELETE FROM delta WHERE stream = ? AND key IN (SELECT value FROM json_each(?))"
_CONFIRM = "INSERT OR REPLACE INTO delta (stream, key, record) VALUES (?, ?, ?)"


def _json(keys: list[str]) -> str:
    return orjson.dumps(keys).decode()


class SqliteStore:
    """The state file (`state.path`); thread-safe."""

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path, self.label = path, str(path)
        self._lock = threading.Lock()
        self._db = open_state_file(path, _SCHEMA, read_only=read_only)  # None: compare against nothing

    def lookup(self, stream: str, keys: list[str]) -> list[bytes | None]:
        """The confirmed record of each key (None: none), in the order of `keys`."""
        if self._db is None or not keys:
            return [None] * len(keys)
        with self._lock:
            try:
                return [r for (r,) in self._db.execute(_LOOKUP, (_json(keys), stream)).fetchall()]
            except sqlite3.OperationalError:  # a read-only run on a file without the table yet
                return [None] * len(keys)

    def empty(self, stream: str) -> bool:
        """Whether the stream has no confirmed record."""
        if self._db is None:
            return True
        with self._lock:
            try:
                return self._db.execute("SELECT 1 FROM delta WHERE stream = ? LIMIT 1", (stream,)).fetchone() is None
            except sqlite3.OperationalError:
                return True

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None:
        """Forget then confirm, in one transaction."""
        if self._db is None or not (confirm or forget):
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if forget:
                    self._db.execute(_FORGET, (stream, _json(forget)))
                if confirm:
                    self._db.executemany(_CONFIRM, [(stream, k, r) for k, r in confirm])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def keys(self, stream: str) -> list[str]:
        """Every confirmed key of the stream, sorted (by code point: the primary key's order, no sort)."""
        if self._db is None:
            return []
        with self._lock:
            try:
                return [k for (k,) in self._db.execute("SELECT key FROM delta WHERE stream = ? ORDER BY key", (stream,))]
            except sqlite3.OperationalError:
                return []

    def count(self, stream: str) -> int:
        """How many confirmed keys the stream has (counted inside SQLite: no key reaches Python)."""
        if self._db is None:
            return 0
        with self._lock:
            try:
                return int(self._db.execute("SELECT count(*) FROM delta WHERE stream = ?", (stream,)).fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
