"""PostgreSQL sources read through the driver's streaming COPY (a query without parameters) and through a
server-side cursor (an incremental cursor's bound): the same rows and types either way, chunks of exactly
chunk_rows, a trailing comment in a `sql` source, a read stopped half-way, and errors met mid-stream."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from sql_helpers import pg_exec, pg_rows
from test_sql_sources import PEOPLE

from connector.config import Source
from connector.errors import SourceError
from connector.readers import Since, read_source

pytestmark = pytest.mark.timeout(180)


def _read(url: str, tmp_path: Path, since: Since | None = None, **source: object) -> list[pa.Table]:
    src = Source(connection={"url_env": "PG_URL"}, **source)  # type: ignore[arg-type]
    return [c.table for c in read_source(src, tmp_path, env={"PG_URL": url}, since=since)]


def test_copy_and_cursor_reads_give_the_same_rows_and_types(postgres_url: str, tmp_path: Path) -> None:
    """Every type of the PostgreSQL type test (zoned and wall-clock timestamps, numeric, boolean, float,
    jsonb, date, NULLs) reads alike through COPY (no parameter) and the cursor (a bound below every row)."""
    pg_exec(postgres_url, *PEOPLE)
    sql = "SELECT * FROM people ORDER BY id"
    (copied,) = _read(postgres_url, tmp_path, sql=sql)
    (fetched,) = _read(postgres_url, tmp_path, Since("id", 0), sql=sql)
    assert copied.schema == fetched.schema
    assert copied.to_pylist() == fetched.to_pylist()
    first = copied.to_pylist()[0]
    assert first["joined"] == datetime(2024, 5, 1, 10, 0, tzinfo=UTC) and first["last_seen"] == datetime(2024, 5, 2, 8, 30)
    assert first["ltv"] == 12.5 and first["vip"] is True and first["prefs"] == '{"n": 2, "lang": "fr"}'
    assert copied.to_pylist()[1]["joined"] is None and copied.schema.field("ltv").type == pa.float64()


def test_a_copy_read_is_cut_into_chunks_of_chunk_rows_and_a_trailing_comment_is_harmless(
    postgres_url: str, tmp_path: Path
) -> None:
    pg_exec(postgres_url, "DROP TABLE IF EXISTS many",
            "CREATE TABLE many AS SELECT g AS id, repeat('x', 50) AS pad FROM generate_series(1, 25000) g")  # fmt: skip
    tables = _read(postgres_url, tmp_path, sql="SELECT id, pad FROM many ORDER BY id -- every row", chunk_rows=7000)
    assert [t.num_rows for t in tables] == [7000, 7000, 7000, 4000]
    assert [t.column("id")[0].as_py() for t in tables] == [1, 7001, 14001, 21001]


def test_a_copy_read_stopped_half_way_ends_at_once_and_leaves_nothing_running(postgres_url: str, tmp_path: Path) -> None:
    """A halted run closes the read after its first chunk: the COPY ends without streaming the rest, and the
    server holds no open query or transaction of it."""
    pg_exec(postgres_url, "DROP TABLE IF EXISTS big_copy",
            "CREATE TABLE big_copy AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g")  # fmt: skip
    src = Source(table="public.big_copy", connection={"url_env": "PG_URL"}, chunk_rows=1000)
    chunks = read_source(src, tmp_path, env={"PG_URL": postgres_url})
    assert len(next(chunks)) == 1000
    chunks.close()  # a hang is pytest-timeout's to catch; what is asserted is that nothing is left running
    left = pg_rows(postgres_url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%big_copy%' "
                                 "AND pid <> pg_backend_pid() AND state <> 'idle'")  # fmt: skip
    assert left == [(0,)]


def test_an_error_met_mid_stream_is_a_source_error(postgres_url: str, tmp_path: Path) -> None:
    """Rows of 1 kB: the COPY streams several record batches before row 19,000 fails; the chunks before it
    arrive, then the error is a SourceError naming the source (never the URL)."""
    pg_exec(postgres_url, "DROP TABLE IF EXISTS late_error",
            "CREATE TABLE late_error AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 20000) g")  # fmt: skip
    src = Source(sql="SELECT id, pad, 1 / (19000 - id) AS x FROM late_error", connection={"url_env": "PG_URL"},
                 chunk_rows=1000)  # fmt: skip
    got = 0
    with pytest.raises(SourceError, match="division by zero") as e:
        for chunk in read_source(src, tmp_path, env={"PG_URL": postgres_url}):
            got += len(chunk)
    assert 0 < got < 19000
    assert "$PG_URL" in str(e.value) and "postgres@" not in str(e.value)


def test_a_runs_connections_to_one_database_share_the_drivers_catalogue(postgres_url: str) -> None:
    """Within shared_databases() (a run), Databases on one URL share the driver's database object (its type
    catalogue is read once); outside, each has its own; every connection still works after the scope ends."""
    from connector.config import Connection
    from connector.readers.dbscope import shared_databases
    from connector.readers.sql.connection import resolve_target
    from connector.readers.sql.drivers import Database

    target = resolve_target(Connection(url_env="PG_URL"), Path("."), {"PG_URL": postgres_url})
    with shared_databases():
        one, two = Database(target), Database(target)
        assert one._con._db is two._con._db  # noqa: SLF001
        assert one.scalar("SELECT 1", []) == 1
    assert two.scalar("SELECT $1::int + 1", [1]) == 2  # outlives the scope
    one.close()
    two.close()
    three, four = Database(target), Database(target)
    assert three._con._db is not four._con._db  # noqa: SLF001
    three.close()
    four.close()
