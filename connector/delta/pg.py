"""The PostgreSQL state database (`state.url_env`): one connection, for delta records, watermarks and the
run lock. The URL comes from the environment only and never reaches a message (the variable's name stands
for it); the connection goes through the SQL readers' ADBC module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from connector.config import Connection
from connector.errors import ConfigError, SourceError
from connector.readers.sql.connection import resolve_target
from connector.readers.sql.drivers import Database


def connect(url_env: str, env: Mapping[str, str], schema: Sequence[str] = (), lock_id: int = 0) -> Database:
    """A connection to the state database named by `url_env`; `schema`: statements creating its tables, run in
    one transaction under the advisory lock `lock_id` (two first runs starting at once do not race).

    Raises:
        ConfigError: the variable is unset, not a postgresql:// URL, the server refuses the connection, or the
            tables cannot be created.
    """
    if not env.get(url_env, "").strip():
        raise ConfigError(f"state.url_env: the environment variable {url_env} is not set; set it to the "
                          "PostgreSQL URL of the state database (postgresql://user:password@host:5432/db)")  # fmt: skip
    try:
        target = resolve_target(Connection(url_env=url_env), Path("."), env)
    except SourceError as e:
        raise ConfigError(f"state.url_env: {e}") from None
    if target.dialect != "postgresql":
        raise ConfigError(f"state.url_env: {url_env} must hold a postgresql:// URL (the state lives in "
                          "PostgreSQL or, without url_env, in the local file state.path)")  # fmt: skip
    try:
        db = Database(target, label=f"state database ${url_env}")
    except SourceError as e:
        raise ConfigError(f"{e}; check state.url_env") from None
    if schema:
        try:
            db.transaction([("SELECT pg_advisory_xact_lock($1)", [lock_id]), *[(q, []) for q in schema]])
        except SourceError as e:
            db.close()
            raise ConfigError(f"{e}; check state.url_env") from None
    return db


RUNS = "braze_connector_runs"
_RUNS_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {RUNS} (
    pipeline TEXT NOT NULL, part TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, started_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, part))"""
_CREATE_LOCK = 0x62726172_756E7331  # pg_advisory_xact_lock: creating the runs table


class PgRunLock:
    """A run's lock in the state database, so runs on different machines sharing it exclude each other.

    Session-level advisory locks, on a connection of their own held for the run: PostgreSQL drops them when
    the connection ends, however the process ends (kill -9 included). An unpartitioned run locks the
    pipeline exclusively; a partition locks the pipeline shared and its own partition exclusively, as the
    local lock files do (runlock.py). The holder's host, pid and start are written to `braze_connector_runs`
    for the message that refuses a second run.
    """

    def __init__(self, url_env: str, pipeline: str, partition: str | None, env: Mapping[str, str]) -> None:
        self.url_env, self.pipeline, self.part = url_env, pipeline, partition or "all"
        self.other_count: str | None = None  # set when acquire was refused for a partition of another count
        self._db: Database | None = connect(url_env, env)

    def acquire(self, host: str, pid: int, started_at: str) -> bool:
        """Take the locks (True), or take none and return False when another run holds one."""
        assert self._db is not None
        whole = orjson.dumps([self.pipeline]).decode()  # the lock keys: hashes of unambiguous texts
        mine = orjson.dumps([self.pipeline, self.part]).decode()
        if self.part == "all":
            got = self._db.scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", [whole])
        else:  # and its count N shared: partitions of another N try it exclusively (_other_count_running)
            got = self._db.scalar("SELECT pg_try_advisory_lock_shared(hashtextextended($1, 0)) AND "
                                  "pg_try_advisory_lock(hashtextextended($2, 0)) AND "
                                  "pg_try_advisory_lock_shared(hashtextextended($3, 0))",
                                  [whole, mine, self._count_key(self.part)])  # fmt: skip
        if got:
            self._db.transaction([
                ("SELECT pg_advisory_xact_lock($1)", [_CREATE_LOCK]), (_RUNS_SCHEMA, []),
                (f"INSERT INTO {RUNS} (pipeline, part, host, pid, started_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT "
                 "(pipeline, part) DO UPDATE SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at",
                 [self.pipeline, self.part, host, pid, started_at]),
            ])  # fmt: skip
            # Recorded before looking: of two partitions of different counts starting at once, each sees the
            # other's row, so at least one of them refuses (both may: neither runs twice).
            self.other_count = self._other_count_running() if self.part != "all" else None
            got = self.other_count is None
            if not got:  # refused after all: not named as a holder by later refusals
                self._db.transaction([(f"DELETE FROM {RUNS} WHERE pipeline = $1 AND part = $2 AND host = $3 AND "
                                       "pid = $4 AND started_at = $5",
                                       [self.pipeline, self.part, host, pid, started_at])])  # fmt: skip
        if not got:
            self._db.scalar("SELECT pg_advisory_unlock_all()", [])
        return bool(got)

    def _count_key(self, part: str) -> str:
        """The lock key of a partition count: `p2of4` -> [pipeline, "count", "4"]."""
        return orjson.dumps([self.pipeline, "count", part.rpartition("of")[2]]).decode()

    def _other_count_running(self) -> str | None:
        """A partition label of another count N whose runs hold its count lock now (None: none)."""
        assert self._db is not None
        mine = self._count_key(self.part)
        rows = self._db.transaction([(f"SELECT part FROM {RUNS} WHERE pipeline = $1 AND part <> 'all'",
                                      [self.pipeline])])  # fmt: skip
        for (part,) in rows:
            key = self._count_key(part)
            if key == mine:
                continue
            if not self._db.scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", [key]):
                return str(part)
            self._db.scalar("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [key])
        return None

    def holders(self) -> list[tuple[str, str, int, str]]:
        """The runs of this pipeline the table names (part, host, pid, started_at): the last holders."""
        assert self._db is not None
        try:
            rows = self._db.transaction([(f"SELECT part, host, pid, started_at FROM {RUNS} WHERE pipeline = $1 "
                                          "ORDER BY started_at DESC", [self.pipeline])])  # fmt: skip
        except SourceError:
            return []
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def release(self) -> None:
        """Drop the locks, then close. Unlocked explicitly: the server drops a closed connection's locks only
        once it notices the close, and the next run (here or on another machine) must find them free."""
        if self._db is not None:
            try:
                self._db.scalar("SELECT pg_advisory_unlock_all()", [])
            except SourceError:
                pass  # a dead connection: the server drops its locks with it
            self._db.close()
            self._db = None
