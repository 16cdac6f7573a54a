"""Delta sync's state in PostgreSQL (`state: {url_env: STATE_PG_URL}`), shared by machines and processes.

One table, `braze_connector_delta (pipeline, stream, key, record)`, keyed by all three, so pipelines and
their streams never touch each other's rows. Every call is one statement in one transaction over a JSON
array bound as a single parameter (`jsonb_to_recordset` / `jsonb_array_elements_text`), so a chunk costs
one round trip; confirms are `INSERT ... ON CONFLICT DO UPDATE`, so two processes writing the same table
(two pipelines, or the partitions of one) never fail or lose each other's rows. Creating the table takes a
transaction-level advisory lock, so two first runs starting at once do not race.

The URL comes from the environment only; it never reaches a message, a log line or the report (the
variable's name stands for it). The connection goes through the SQL readers' ADBC module.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.delta.pg import connect
from connector.errors import SourceError
from connector.readers.sql.drivers import Database

TABLE = "braze_connector_delta"
_LOCK_ID = 0x62726164656C7461  # pg_advisory_xact_lock: creating the table
_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (pipeline, stream, key)
)"""
# One primary-key probe per key (a subquery per element, so the key is bound in the index condition): a table
# filled during the run still has an empty table's statistics, and a join let the planner scan every row of
# the pipeline once per key (measured: 36 s for 20,000 keys).
_LOOKUP = (f"SELECT (SELECT d.record FROM {TABLE} AS d WHERE d.pipeline = $1 AND d.stream = $2 AND d.key = j.key) "
           "FROM jsonb_array_elements_text($3::text::jsonb) WITH ORDINALITY AS j(key, n) ORDER BY j.n")  # fmt: skip
# Deletes by the row addresses the same per-key probe finds (a TID scan), for the same reason.
_FORGET = (f"DELETE FROM {TABLE} WHERE ctid = ANY (ARRAY(SELECT (SELECT d.ctid FROM {TABLE} AS d WHERE d.pipeline = $1 "
           "AND d.stream = $2 AND d.key = j.key) FROM jsonb_array_elements_text($3::text::jsonb) AS j(key)))")  # fmt: skip
_CONFIRM = (f"INSERT INTO {TABLE} (pipeline, stream, key, record) SELECT $1, $2, x.k, x.r "
            "FROM jsonb_to_recordset($3::text::jsonb) AS x(k text, r text) "
            "ON CONFLICT (pipeline, stream, key) DO UPDATE SET record = excluded.record")  # fmt: skip


class PgStore:
    """The confirmed records of one pipeline in a PostgreSQL database; thread-safe (one connection)."""

    def __init__(self, url_env: str, pipeline: str, env: Mapping[str, str], *, read_only: bool) -> None:
        self.pipeline = pipeline
        self.label = f"postgresql (${url_env})"
        self._lock = threading.Lock()
        self._db: Database | None = connect(url_env, env, () if read_only else [_CREATE], _LOCK_ID)

    def _run(self, sql: str, stream: str, payload: Any) -> pa.Table:
        assert self._db is not None
        with self._lock:
            return self._db.transaction_table([(sql, [self.pipeline, stream, orjson.dumps(payload).decode()])])

    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]:
        """The confirmed record of each key (None: none), in the order of `keys` (`rows` is not used here)."""
        if self._db is None or not keys:
            return [None] * len(keys)
        try:
            found = self._run(_LOOKUP, stream, keys)
        except SourceError as e:
            if "does not exist" in str(e):  # a read-only run before the first run created the table
                return [None] * len(keys)
            raise
        return cast(list[bytes | None], pc.cast(found.column(0), pa.binary()).to_pylist())  # the text's UTF-8, no copy

    def empty(self, stream: str) -> bool:
        """Whether the stream has no confirmed record."""
        return not self._select("SELECT 1", "LIMIT 1", stream)

    def _select(self, what: str, tail: str, stream: str) -> list[tuple[Any, ...]]:
        """`what` over the stream's rows ([] without a database, or before the first run created the table)."""
        if self._db is None:
            return []
        with self._lock:
            try:
                return self._db.transaction([(f"{what} FROM {TABLE} WHERE pipeline = $1 AND stream = $2 {tail}",
                                              [self.pipeline, stream])])  # fmt: skip
            except SourceError as e:
                if "does not exist" in str(e):
                    return []
                raise

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None:
        if self._db is None or not (confirm or forget):
            return
        statements: list[tuple[str, list[Any]]] = []
        if forget:
            statements.append((_FORGET, [self.pipeline, stream, orjson.dumps(forget).decode()]))
        if confirm:
            last = {k: r.decode() for k, r in confirm}  # one row per key (ON CONFLICT may touch a row once)
            rows = [{"k": k, "r": r} for k, r in last.items()]
            statements.append((_CONFIRM, [self.pipeline, stream, orjson.dumps(rows).decode()]))
        with self._lock:
            self._db.transaction(statements)

    def keys(self, stream: str) -> list[str]:
        """Every confirmed key of the stream, sorted by code point (COLLATE "C", as Python sorts)."""
        if self._db is None:
            return []
        with self._lock:
            try:
                rows = self._db.transaction_table([(f'SELECT key FROM {TABLE} WHERE pipeline = $1 AND stream = $2 '
                                                    'ORDER BY key COLLATE "C"', [self.pipeline, stream])])  # fmt: skip
            except SourceError as e:
                if "does not exist" in str(e):
                    return []
                raise
        return cast(list[str], rows.column(0).to_pylist())

    def count(self, stream: str) -> int:
        """How many confirmed keys the stream has (counted by the server: no key is sent)."""
        rows = self._select("SELECT count(*)", "", stream)
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
