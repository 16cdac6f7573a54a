"""Where incremental watermarks live: the local state file (SQLite, default) or PostgreSQL (`state.url_env`).

watermark.py holds the semantics; a MarkStore only keeps, per stream, the watermark W (cursor column, value
as text) and D, the rows done at or above it as (row identity, value as text, sort key). The sort key is the
value as the database orders it (watermark.encode): rows below a new watermark are pruned by it.

In PostgreSQL the two tables are keyed by pipeline and partition as well (`all` for an unpartitioned run),
so the machines running one pipeline, or its `--partition K/N` runs, share one database and never touch
each other's watermarks. Each call is one statement in one transaction; sets of rows travel as one JSON
parameter. The URL comes only from the environment and never reaches a message (pg_store.py does the same).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from connector.delta.stores import no_table, open_state_file, rollback, state_error
from connector.errors import ConfigError, SourceError

_BATCH = 500


class MarkStore(Protocol):
    """The watermarks of one pipeline (callers serialise calls: Watermarks.lock)."""

    label: str

    def get(self, stream: str) -> tuple[str, str] | None: ...

    def put(self, stream: str, cursor: str, value: str, updated_at: str) -> None: ...

    def reset_done(self, stream: str, cursor: str | None) -> None:
        """Forget the stream's done rows unless its watermark is kept for `cursor` (None: forget them all)."""

    def add_done(self, stream: str, rows: list[tuple[str, str, Any]]) -> None: ...

    def done(self, stream: str, ids: list[str]) -> list[tuple[str, str]]: ...

    def prune(self, stream: str, sort: Any) -> None: ...

    def close(self) -> None: ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS watermark (
    stream TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS watermark_done (
    stream TEXT NOT NULL,
    id TEXT NOT NULL,
    value TEXT NOT NULL,
    sort,
    PRIMARY KEY (stream, id, value)
) WITHOUT ROWID;
"""


class SqliteMarks:
    """The watermarks in the pipeline's state file (`state.path`)."""

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.label, self.path = str(path), path
        self.db = open_state_file(path, _SQLITE_SCHEMA, read_only=read_only)  # None: filter against nothing

    def _failed(self, exc: sqlite3.Error) -> ConfigError | None:
        """None for a read-only run on a state file without watermarks yet (nothing to filter against), else
        the error the run stops with (a damaged file says so, and what to do)."""
        return None if no_table(exc) else state_error(self.path, exc)

    def get(self, stream: str) -> tuple[str, str] | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT cursor, value FROM watermark WHERE stream = ?", (stream,)).fetchone()
        except sqlite3.Error as exc:
            if (err := self._failed(exc)) is not None:
                raise err from None
            return None
        return None if row is None else (row[0], row[1])

    def put(self, stream: str, cursor: str, value: str, updated_at: str) -> None:
        if self.db is None:
            return
        self.db.execute(
            "INSERT INTO watermark (stream, cursor, value, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (stream) "
            "DO UPDATE SET cursor = excluded.cursor, value = excluded.value, updated_at = excluded.updated_at",
            (stream, cursor, value, updated_at),
        )

    def reset_done(self, stream: str, cursor: str | None) -> None:
        if self.db is None:
            return
        if cursor is None:
            self.db.execute("DELETE FROM watermark_done WHERE stream = ?", (stream,))
            return
        self.db.execute("DELETE FROM watermark_done WHERE stream = ? AND NOT EXISTS (SELECT 1 FROM watermark "
                        "WHERE stream = ? AND cursor = ?)", (stream, stream, cursor))  # fmt: skip

    def add_done(self, stream: str, rows: list[tuple[str, str, Any]]) -> None:
        if self.db is None:
            return
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO watermark_done (stream, id, value, sort) VALUES (?, ?, ?, ?)",
                                [(stream, *r) for r in rows])  # fmt: skip
            self.db.execute("COMMIT")
        except BaseException:
            rollback(self.db)  # the connection is used again (a read of a later chunk)
            raise

    def done(self, stream: str, ids: list[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.db is None:
            return out
        for i in range(0, len(ids), _BATCH):
            part = ids[i : i + _BATCH]
            sql = f"SELECT id, value FROM watermark_done WHERE stream = ? AND id IN ({','.join('?' * len(part))})"
            try:
                out.extend(self.db.execute(sql, [stream, *part]).fetchall())
            except sqlite3.Error as exc:
                if (err := self._failed(exc)) is not None:
                    raise err from None
                return out
        return out

    def prune(self, stream: str, sort: Any) -> None:
        if self.db is not None:
            self.db.execute("DELETE FROM watermark_done WHERE stream = ? AND sort < ?", (stream, sort))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


MARKS = "braze_connector_watermark"
DONE = "braze_connector_watermark_done"
_LOCK_ID = 0x62726177_6D61726B  # pg_advisory_xact_lock: creating the tables
_PG_SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS {MARKS} (
    pipeline TEXT NOT NULL, part TEXT NOT NULL, stream TEXT NOT NULL,
    cursor TEXT NOT NULL, value TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, part, stream))""",
    # sort_n holds numeric sort keys (times as microseconds, dates as ordinals, numbers), sort_s text ones.
    f"""CREATE TABLE IF NOT EXISTS {DONE} (
    pipeline TEXT NOT NULL, part TEXT NOT NULL, stream TEXT NOT NULL,
    id TEXT NOT NULL, value TEXT NOT NULL, sort_n NUMERIC, sort_s TEXT COLLATE "C",
    PRIMARY KEY (pipeline, part, stream, id, value))""",
]
_WHERE = "pipeline = $1 AND part = $2 AND stream = $3"


class PgMarks:
    """The watermarks of one pipeline (and partition) in the PostgreSQL state database."""

    def __init__(self, url_env: str, pipeline: str, part: str, env: Mapping[str, str], *, read_only: bool) -> None:
        from connector.delta.pg import connect

        self.pipeline, self.part, self.read_only = pipeline, part, read_only
        self.label = f"postgresql (${url_env})"
        self._db = connect(url_env, env, () if read_only else _PG_SCHEMA, _LOCK_ID)

    def _run(self, sql: str, stream: str, *more: Any) -> list[tuple[Any, ...]]:
        try:
            return self._db.transaction([(sql, [self.pipeline, self.part, stream, *more])])
        except SourceError as e:
            if self.read_only and "does not exist" in str(e):  # a read-only run before any run created the tables
                return []
            raise

    def get(self, stream: str) -> tuple[str, str] | None:
        rows = self._run(f"SELECT cursor, value FROM {MARKS} WHERE {_WHERE}", stream)
        return (rows[0][0], rows[0][1]) if rows else None

    def put(self, stream: str, cursor: str, value: str, updated_at: str) -> None:
        self._run(f"INSERT INTO {MARKS} (pipeline, part, stream, cursor, value, updated_at) VALUES ($1, $2, $3, $4, "
                  "$5, $6) ON CONFLICT (pipeline, part, stream) DO UPDATE SET cursor = excluded.cursor, "
                  "value = excluded.value, updated_at = excluded.updated_at", stream, cursor, value, updated_at)  # fmt: skip

    def reset_done(self, stream: str, cursor: str | None) -> None:
        if cursor is None:
            self._run(f"DELETE FROM {DONE} WHERE {_WHERE}", stream)
            return
        self._run(f"DELETE FROM {DONE} WHERE {_WHERE} AND NOT EXISTS (SELECT 1 FROM {MARKS} m WHERE "
                  "m.pipeline = $1 AND m.part = $2 AND m.stream = $3 AND m.cursor = $4)", stream, cursor)  # fmt: skip

    def add_done(self, stream: str, rows: list[tuple[str, str, Any]]) -> None:
        payload = [{"i": rid, "v": text, "n": _num(sort), "s": sort if isinstance(sort, str) else None}
                   for rid, text, sort in rows]  # fmt: skip
        self._run(f"INSERT INTO {DONE} (pipeline, part, stream, id, value, sort_n, sort_s) SELECT $1, $2, $3, x.i, "
                  "x.v, x.n::numeric, x.s FROM jsonb_to_recordset($4::text::jsonb) AS x(i text, v text, n text, s text) "
                  "ON CONFLICT DO NOTHING", stream, orjson.dumps(payload).decode())  # fmt: skip

    def done(self, stream: str, ids: list[str]) -> list[tuple[str, str]]:
        # One primary-key probe per identity (LATERAL), whatever the table's statistics say (pg_store.py).
        rows = self._run(f"SELECT d.id, d.value FROM jsonb_array_elements_text($4::text::jsonb) AS j(id) "
                         f"CROSS JOIN LATERAL (SELECT id, value FROM {DONE} WHERE {_WHERE} AND id = j.id) AS d",
                         stream, orjson.dumps(ids).decode())  # fmt: skip
        return [(r[0], r[1]) for r in rows]

    def prune(self, stream: str, sort: Any) -> None:
        if isinstance(sort, str):
            self._run(f"DELETE FROM {DONE} WHERE {_WHERE} AND sort_s < $4", stream, sort)
        elif _num(sort) is not None:
            self._run(f"DELETE FROM {DONE} WHERE {_WHERE} AND sort_n < $4::text::numeric", stream, _num(sort))

    def close(self) -> None:
        self._db.close()


def _num(sort: Any) -> str | None:
    """A numeric sort key as exact text for NUMERIC (None: text, or a float NUMERIC cannot hold)."""
    if isinstance(sort, bool) or not isinstance(sort, int | float):
        return None
    if isinstance(sort, float) and (sort != sort or sort in (float("inf"), float("-inf"))):
        return None
    return repr(sort)
