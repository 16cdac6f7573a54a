"""One open database per SQL source, streaming Arrow record batches in bounded memory.

- PostgreSQL (ADBC): a query without parameters (a whole table or `sql` source: every full and delta run)
  through the driver's streaming `COPY (query) TO STDOUT (FORMAT binary)`, in record batches of about
  `_PG_BATCH_BYTES`: the server encodes the next rows while this process decodes the last ones, where a
  cursor's `FETCH` round trips make them wait for each other. A query with parameters (an incremental
  cursor's bound) through a server-side cursor (`DECLARE ... NO SCROLL CURSOR`, then `FETCH FORWARD n`),
  because COPY cannot take bound parameters and the driver fetches a parameterised query's whole result
  at once. Both in a transaction that is rolled back at the end (nothing is written).
- SQLite (ADBC) and Snowflake / BigQuery (ADBC, optional extras): the driver's record-batch stream.
- DuckDB (in-process): the relation's Arrow reader.

Every driver error becomes a `SourceError` naming the source (never the URL or its password).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias, cast

import pyarrow as pa

from connector.errors import SourceError
from connector.readers import dbscope
from connector.readers.sql.connection import Target

log = logging.getLogger(__name__)

_EXTRA = {"snowflake": "snowflake", "bigquery": "bigquery", "postgresql": "postgresql", "sqlite": "sqlite"}
_CURSOR = "braze_connector_src"
Params: TypeAlias = "list[Any] | pa.Table"  # a statement's bound values, or the rows to append to a table (transaction)
# The COPY stream's record batches: about this many bytes each (the driver's default is 16 MiB); read_sql
# re-cuts them into chunks of chunk_rows, so this bounds the memory a batch in flight takes, not the chunks.
_PG_BATCH_BYTES = 4 << 20


def placeholder(dialect: str, n: int) -> str:
    """The n-th (1-based) bound parameter's marker in this dialect."""
    return f"${n}" if dialect == "postgresql" else "?"


class Database:
    """An open connection to one source's database."""

    def __init__(self, target: Target, label: str | None = None) -> None:
        """`label` names the source in error messages (default: the connection's label)."""
        self.target = target
        self.label = label or target.label
        self.dialect = target.dialect
        self._con: Any = None
        with self.errors("cannot connect"):
            self._con = _connect(target)

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except Exception as e:  # closing never hides the run's own outcome
                log.debug("closing %s: %s", self.target.label, self.target.scrub(str(e)))
            self._con = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def errors(self, what: str) -> _Errors:
        """A context that turns driver errors into a SourceError: `<label>: <what>: <driver text>`."""
        return _Errors(self.target, self.label, what)

    # ---- queries ------------------------------------------------------------------------------------
    def batches(self, query: str, params: list[Any], rows: int) -> Iterator[pa.RecordBatch]:
        """The query's rows as record batches of about `rows` rows (never the whole result at once)."""
        if self.dialect == "postgresql":
            yield from self._pg_batches(query, params, rows)
        elif self.dialect == "duckdb":
            with self.errors("the query failed"):
                reader = self._con.sql(query, params=params or None).to_arrow_reader(rows)
            yield from self._drain(lambda: reader.read_next_batch())
        else:
            cur = self._con.cursor()
            try:
                with self.errors("the query failed"):
                    if self.dialect == "sqlite":
                        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(min(rows, 65536))})
                    cur.execute(query, params or None)
                    reader = cur.fetch_record_batch()
                yield from self._drain(lambda: reader.read_next_batch())
            finally:
                cur.close()

    def scalar(self, query: str, params: list[Any]) -> Any:
        """The first column of the first row."""
        rows = self.column(query, params)
        return rows[0] if rows else None

    def column(self, query: str, params: list[Any]) -> list[Any]:
        """The first column of every row (small queries only: counts, key columns)."""
        rows: list[Any] = []
        with self.errors("the query failed"):
            if self.dialect == "duckdb":
                rows = self._con.execute(query, params or None).fetchall()
            else:
                cur = self._con.cursor()
                try:
                    cur.execute(query, params or None)
                    rows = cur.fetchall()
                finally:
                    cur.close()
                    self._end()
        return [r[0] for r in rows]

    def columns(self, query: str, params: list[Any]) -> list[str]:
        """The names of the columns the query returns (run it with LIMIT 0)."""
        with self.errors("the query failed"):
            if self.dialect == "duckdb":
                return [str(c) for c in self._con.sql(query, params=params or None).columns]
            cur = self._con.cursor()
            try:
                cur.execute(query, params or None)
                names = [str(d[0]) for d in cur.description or []]
                cur.fetchall()
                return names
            finally:
                cur.close()
                self._end()

    def transaction(self, statements: list[tuple[str, Params]]) -> list[tuple[Any, ...]]:
        """Run the statements in one transaction, committed (rolled back on error); the last one's rows.
        A statement whose parameters are an Arrow table appends its rows to the table the text names
        (ADBC's ingest: COPY, binary), in the same transaction.

        For read-write use of an ADBC database (the PostgreSQL delta state); SQL sources only read."""
        out = self._transaction(statements, arrow=False)
        return cast(list[tuple[Any, ...]], out)

    def transaction_table(self, statements: list[tuple[str, Params]]) -> pa.Table:
        """`transaction`, the last statement's rows as an Arrow table (no Python object per row)."""
        return cast(pa.Table, self._transaction(statements, arrow=True))

    def _transaction(self, statements: list[tuple[str, Params]], *, arrow: bool) -> list[tuple[Any, ...]] | pa.Table:
        cur = self._con.cursor()
        try:
            with self.errors("the statement failed"):
                rows: list[tuple[Any, ...]] | pa.Table = []
                for sql, params in statements:
                    if isinstance(params, pa.Table):
                        cur.adbc_ingest(sql, params, mode="append")
                        rows = []
                        continue
                    cur.execute(sql, params or None)
                    if not cur.description:
                        rows = []
                    else:
                        rows = cur.fetch_arrow_table() if arrow else cur.fetchall()
                self._con.commit()
                return rows
        except BaseException:
            self._end()
            raise
        finally:
            cur.close()

    def _drain(self, read: Callable[[], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        while True:
            with self.errors("reading the rows failed"):
                try:
                    batch = read()
                except StopIteration:
                    return
            yield batch

    def _pg_batches(self, query: str, params: list[Any], rows: int) -> Iterator[pa.RecordBatch]:
        if not params:
            yield from self._pg_copy(query)
            return
        # The connection is not in autocommit mode: binding a timestamptz parameter in autocommit mode makes
        # the driver wrap the statement in its own BEGIN/COMMIT, which would close the cursor at once.
        cur = self._con.cursor()
        fetch = self._con.cursor()
        try:
            with self.errors("the query failed"):
                cur.execute(f"DECLARE {_CURSOR} NO SCROLL CURSOR FOR {query}", params or None)
                # FETCH cannot run inside COPY, the driver's default way of reading results.
                fetch.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
            while True:
                with self.errors("reading the rows failed"):
                    fetch.execute(f"FETCH FORWARD {int(rows)} FROM {_CURSOR}")
                    table = fetch.fetch_arrow_table()
                if table.num_rows == 0:
                    break
                yield from table.to_batches()
        finally:
            fetch.close()
            cur.close()
            self._end()

    def _pg_copy(self, query: str) -> Iterator[pa.RecordBatch]:
        """A query without parameters, streamed by the driver's COPY (module doc). Closing the stream early
        (a halted run) ends the COPY where it is: the connection is rolled back and closed after it."""
        cur = self._con.cursor()
        try:
            with self.errors("the query failed"):
                cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(_PG_BATCH_BYTES)})
                # The driver wraps the query as `COPY (<query>) TO STDOUT`: a line break ends a trailing comment.
                cur.execute(query + "\n")
                reader = cur.fetch_record_batch()
            yield from self._drain(lambda: reader.read_next_batch())
        finally:
            cur.close()
            self._end()

    def _end(self) -> None:
        """End the read-only transaction a PostgreSQL read ran in (nothing was written)."""
        if self.dialect != "postgresql" or self._con is None:
            return
        try:
            self._con.rollback()
        except Exception as e:  # the connection may be gone already; the first error is the one to show
            log.debug("ending the read transaction: %s", self.target.scrub(str(e)))


class _Errors:
    def __init__(self, target: Target, label: str, what: str) -> None:
        self.target, self.label, self.what = target, label, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, SourceError | StopIteration) or not isinstance(exc, Exception):
            return
        text = " ".join(self.target.scrub(str(exc)).split())
        if len(text) > 500:
            text = text[:497] + "..."
        raise SourceError(f"{self.label}: {self.what}: {text}") from None


def _pg_connect(url: str) -> Any:
    """A DB-API connection to PostgreSQL, on the scope's shared database where one is open."""
    dbapi = _driver("adbc_driver_postgresql.dbapi", "postgresql")
    held = dbscope.held()
    if held is None:
        return dbapi.connect(url)
    import adbc_driver_manager
    import adbc_driver_manager.dbapi as manager

    # The sharing reaches into adbc_driver_manager's DB-API objects (`_db`), which the project does not pin: if
    # a release changes them, every connection opens on its own as before (only the catalogue read repeats).
    shared = held.get(url)
    if shared is None:
        con = dbapi.connect(url)
        try:
            held[url] = con._db.clone()  # noqa: SLF001 - the driver's own shared-database holder, one more reference
        except AttributeError:
            pass
        return con
    try:
        return manager.Connection(shared, adbc_driver_manager.AdbcConnection(shared._db))  # noqa: SLF001
    except (AttributeError, TypeError):
        return dbapi.connect(url)


def _driver(module: str, dialect: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRA.get(dialect)
        hint = f"pip install 'braze-connector[{extra}]'" if extra in ("snowflake", "bigquery") else "reinstall braze-connector"
        raise SourceError(f"{dialect} sources need the {module.split('.')[0]} package; {hint}") from None


def _connect(target: Target) -> Any:
    if target.dialect == "duckdb":
        duckdb = _driver("duckdb", "duckdb")
        if target.url == ":memory:":
            con = duckdb.connect(":memory:")
        else:
            import os

            if not os.path.isfile(target.url):
                raise SourceError(f"{target.label}: the DuckDB database {target.url} does not exist; check source.connection.duckdb")
            con = duckdb.connect(target.url, read_only=True)
        # DuckDB draws a progress bar on stdout for any query past 2 s: into the CLI's output (and its --quiet).
        con.execute("SET enable_progress_bar = false")
        return con
    if target.dialect == "sqlite":
        import os

        if not os.path.isfile(target.url):
            raise SourceError(f"{target.label}: the SQLite database {target.url} does not exist; check the URL")
        return _driver("adbc_driver_sqlite.dbapi", "sqlite").connect(target.url)
    if target.dialect == "postgresql":
        url = "postgresql" + target.url[target.url.index(":") :]
        return _pg_connect(url)
    if target.dialect == "snowflake":
        return _driver("adbc_driver_snowflake.dbapi", "snowflake").connect(target.url.split("://", 1)[1])
    from urllib.parse import urlsplit

    parts = urlsplit(target.url)
    kwargs = {"adbc.bigquery.sql.project_id": parts.netloc}
    if parts.path.strip("/"):
        kwargs["adbc.bigquery.sql.dataset_id"] = parts.path.strip("/")
    return _driver("adbc_driver_bigquery.dbapi", "bigquery").connect(db_kwargs=kwargs)
