"""SQL sources against a real PostgreSQL server on loopback and against DuckDB: bounded chunked reads, type
mapping into Braze objects (through the emulator), keys in the rejects file, credentials never shown."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sql_helpers import duck_exec, pg_exec
from test_pipeline_run import project

from connector.config import Source
from connector.errors import SourceError
from connector.pipeline import run_pipeline
from connector.readers import Since, read_source

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]

_MEASURE = """
import json, os, resource, sys
from pathlib import Path
from connector.config import Source
from connector.readers import Since, read_source
src = Source(**json.loads(sys.argv[1]))
from datetime import datetime
since = json.loads(sys.argv[2])
since = Since(since[0], datetime.fromisoformat(since[1])) if since else None
chunks = read_source(src, Path(sys.argv[3]), env=os.environ, since=since)
sizes = [len(next(chunks))]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sizes += [len(c) for c in chunks]
print(json.dumps({"sizes": sizes, "growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def _measure(source: dict[str, Any], since: list[Any] | None, base: Path, env: dict[str, str]) -> dict[str, Any]:
    """Read a source in a fresh process: chunk sizes, and peak RSS growth after the first chunk (MB)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(source), json.dumps(since), str(base)],
        capture_output=True, text=True, timeout=180, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# 200k rows of ~600 bytes: about 120 MB as Arrow if fetched at once; a 10k-row chunk is about 6 MB.
BIG_PG = (
    "CREATE TABLE IF NOT EXISTS big AS SELECT g AS id, timestamptz '2024-01-01' + g * interval '1 second' AS updated_at, "
    "md5(g::text) || repeat('x', 560) AS pad FROM generate_series(1, 200000) g"
)


@pytest.mark.parametrize("since", [None, ["updated_at", "2024-01-01T00:00:01+00:00"]], ids=["plain", "incremental"])
def test_postgres_reads_a_large_table_in_bounded_chunks(postgres_url: str, tmp_path: Path, since: Any) -> None:
    pg_exec(postgres_url, BIG_PG)
    src = {"table": "public.big", "connection": {"url_env": "PG_URL"}, "chunk_rows": 10_000}
    got = _measure(src, since, tmp_path, {"PG_URL": postgres_url})
    assert sum(got["sizes"]) == 200_000
    assert got["sizes"] == [10_000] * 20  # exactly chunk_rows (the driver's batches are re-cut)
    assert got["growth_mb"] < 60, got  # a fetch-all would add about 120 MB


def test_duckdb_reads_a_large_table_in_bounded_chunks(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    duck_exec(db, "CREATE TABLE big AS SELECT i AS id, TIMESTAMP '2024-01-01' + to_seconds(i) AS updated_at, "
                  "md5(i::VARCHAR) || repeat(md5((i * 7)::VARCHAR), 17) AS pad FROM range(200000) t(i)")  # fmt: skip
    src = {"table": "big", "connection": {"duckdb": str(db)}, "chunk_rows": 10_000}
    got = _measure(src, ["updated_at", "2024-01-01T00:00:00"], tmp_path, {})
    assert got["sizes"] == [10_000] * 20
    assert got["growth_mb"] < 60, got


PEOPLE = [
    "DROP TABLE IF EXISTS people",
    "CREATE TABLE people (id int PRIMARY KEY, email text, joined timestamptz, last_seen timestamp, "
    "ltv numeric(10,2), vip boolean, score float8, nick text, prefs jsonb, born date)",
    "INSERT INTO people VALUES "
    "(1, 'a@example.com', '2024-05-01 12:00:00+02', '2024-05-02 08:30:00', 12.50, true, 1.5, 'Al', "
    "'{\"lang\": \"fr\", \"n\": 2}', '1990-03-04'), "
    "(2, 'b@example.com', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
    "(3, 'not-an-email', '2024-05-01 00:00:00+00', NULL, 1, false, 0, 'Cy', NULL, NULL)",
    "DROP TABLE IF EXISTS clicks",
    "CREATE TABLE clicks (id bigint PRIMARY KEY, user_id text, at timestamptz, props jsonb)",
    "INSERT INTO clicks VALUES (10, 'u1', '2024-06-01 09:00:00+00', '{\"page\": \"home\", \"ms\": 120, \"ok\": true}'), "
    "(11, 'u2', '2024-06-01 10:00:00-05', NULL)",
]


def test_postgres_types_reach_braze_as_braze_expects(postgres_url: str, emulator: Any, tmp_path: Path) -> None:
    pg_exec(postgres_url, *PEOPLE)
    users = {
        "name": "people",
        "source": {"sql": "SELECT 'u' || id AS user_id, * FROM people;", "connection": {"url_env": "PG_URL"},
                   "key": "id", "chunk_rows": 2},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [
            {"column": "email"}, {"column": "joined", "type": "time"}, {"column": "last_seen", "type": "time"},
            {"column": "ltv"}, {"column": "vip"}, {"column": "score"}, {"column": "nick", "on_empty": "null"},
            {"column": "prefs", "type": "object"}, {"column": "born", "to": "dob", "type": "date"},
        ],
    }  # fmt: skip
    clicks = {
        "name": "clicks",
        "source": {"table": "public.clicks", "connection": {"url_env": "PG_URL"}},
        "kind": "events",
        "identifier": {"external_id": "user_id"},
        "event": {"name": {"value": "click"}, "time": "at", "properties": {"json_column": "props"}},
    }
    pipeline = project(tmp_path, [users, clicks])
    env = {"PG_URL": postgres_url, "BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r", env=env)
    doc = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert doc["rows"] == {**doc["rows"], "read": 5, "delivered": 4, "rejected": 1}, doc["rows"]
    assert report.exit_code == 0  # 1 reject of 5 is under max_reject_fraction (0.6)
    u1 = emulator.user("external_id", "u1")["attributes"]
    assert u1["joined"] == "2024-05-01T10:00:00.000Z"  # with zone: the instant
    assert u1["last_seen"] == "2024-05-02T08:30:00.000Z"  # without zone: wall clock, read as UTC
    assert u1["ltv"] == 12.5 and u1["vip"] is True and u1["score"] == 1.5 and u1["nick"] == "Al"
    assert u1["prefs"] == {"lang": "fr", "n": 2} and u1["dob"] == "1990-03-04"
    u2 = emulator.user("external_id", "u2")["attributes"]
    assert u2["email"] == "b@example.com" and "joined" not in u2 and "nick" not in u2  # NULLs are skipped
    events = [a["object"] for e in emulator.ledger() for a in e["applied"] if a["array"] == "events"]
    by_user = {e["external_id"]: e for e in events}
    assert by_user["u1"]["properties"] == {"page": "home", "ms": 120, "ok": True}  # JSONB -> properties
    assert by_user["u2"]["time"].startswith("2024-06-01T15:00:00")
    with open(tmp_path / "r" / "rejects.csv", newline="", encoding="utf-8") as f:
        (bad,) = list(csv.DictReader(f))
    assert bad["_source_file"] == "$PG_URL:query" and bad["_row_number"] == "id=3"
    assert bad["_rule"] == "email.invalid" and bad["email"] == "not-an-email"
    streams = {s["name"]: s for s in doc["streams"]}
    assert streams["clicks"]["source"] == "$PG_URL:public.clicks"


def test_duckdb_types_and_sql_over_parquet_files(emulator: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    duck_exec(
        db,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR, seen TIMESTAMPTZ, local_seen TIMESTAMP, "
        "ltv DECIMAL(10,2), vip BOOLEAN, meta JSON, extra STRUCT(a INTEGER, b VARCHAR))",
        "INSERT INTO users VALUES (1, 'a@example.com', TIMESTAMPTZ '2024-05-01 12:00:00+02', "
        "TIMESTAMP '2024-05-02 08:30:00', 12.50, true, '{\"k\": [1, 2]}', {'a': 1, 'b': 'x'}), "
        "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        f"COPY (SELECT 'u' || id AS user_id, 'visit' AS name, TIMESTAMP '2024-01-01' AS at FROM users) "
        f"TO '{tmp_path / 'visits.parquet'}' (FORMAT parquet)",
    )
    users = {
        "name": "users",
        "source": {"sql": "SELECT 'u' || id AS user_id, * FROM users", "connection": {"duckdb": str(db)}},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "email"}, {"column": "seen", "type": "time"}, {"column": "local_seen", "type": "time"},
                       {"column": "ltv"}, {"column": "vip"}, {"column": "meta", "type": "object"}, {"column": "extra"}],
    }  # fmt: skip
    visits = {
        "name": "visits",
        "source": {"sql": f"SELECT * FROM '{tmp_path}/*.parquet'", "connection": {"duckdb": ":memory:"}},
        "kind": "events",
        "identifier": {"external_id": "user_id"},
        "event": {"name": "name", "time": "at"},
    }
    pipeline = project(tmp_path, [users, visits])
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r", env=env)
    assert report.exit_code == 0, report.warnings
    u1 = emulator.user("external_id", "u1")
    a = u1["attributes"]
    assert a["seen"] == "2024-05-01T10:00:00.000Z" and a["local_seen"] == "2024-05-02T08:30:00.000Z"
    assert a["ltv"] == 12.5 and a["vip"] is True and a["meta"] == {"k": [1, 2]} and a["extra"] == {"a": 1, "b": "x"}
    assert u1["custom_events"]["visit"]["count"] == 1
    assert emulator.user("external_id", "u2")["attributes"] == {}


def test_the_password_never_reaches_reports_logs_or_messages(
    postgres_url: str, emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pg_exec(postgres_url, *PEOPLE)
    secret = "s3cr3t-Pw"
    with_password = postgres_url.replace("postgres@", f"postgres:{secret}@")  # trust auth ignores it
    stream = {
        "name": "people",
        "source": {"sql": "SELECT 'u' || id AS user_id, email FROM people", "connection": {"url_env": "PG_URL"}},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "email"}],
    }
    pipeline = project(tmp_path, [stream])
    caplog.set_level(logging.DEBUG)
    env = {"PG_URL": with_password, "BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r", env=env)
    for f in (tmp_path / "r").iterdir():
        assert secret not in f.read_text(encoding="utf-8", errors="replace"), f.name
    assert secret not in caplog.text and "$PG_URL" in (tmp_path / "r" / "report.json").read_text(encoding="utf-8")

    unreachable = with_password.rsplit(":", 1)[0] + ":1/postgres"
    with pytest.raises(SourceError) as err:
        run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env={**env, "PG_URL": unreachable})
    assert "$PG_URL" in str(err.value) and secret not in str(err.value)
    assert secret not in caplog.text


def test_bad_sql_and_missing_columns_are_clear_source_errors(postgres_url: str, tmp_path: Path) -> None:
    pg_exec(postgres_url, *PEOPLE)
    src = Source(sql="SELECT nope FROM people", connection={"url_env": "PG_URL"})
    with pytest.raises(SourceError, match=r"\$PG_URL:query: the query failed: .*nope"):
        list(read_source(src, tmp_path, env={"PG_URL": postgres_url}))
    src = Source(table="people", connection={"url_env": "PG_URL"}, key="uid")
    with pytest.raises(SourceError, match="source.key names column 'uid'"):
        list(read_source(src, tmp_path, env={"PG_URL": postgres_url}))
    with pytest.raises(SourceError, match="PG_URL is not set"):
        list(read_source(src, tmp_path, env={}))
    with pytest.raises(SourceError, match="does not exist"):
        list(read_source(Source(table="t", connection={"duckdb": "missing.duckdb"}), tmp_path, env={}))


def test_a_table_is_keyed_by_its_primary_key_and_sqlite_reads_too(postgres_url: str, tmp_path: Path) -> None:
    pg_exec(postgres_url, *PEOPLE)
    (chunk,) = list(read_source(Source(table="public.people", connection={"url_env": "PG_URL"}), tmp_path,
                                env={"PG_URL": postgres_url}))  # fmt: skip
    assert chunk.keys == ["id=1", "id=2", "id=3"] and str(chunk.ref(2)) == "$PG_URL:public.people:id=3"
    import sqlite3

    con = sqlite3.connect(tmp_path / "app.db")
    con.executescript("CREATE TABLE t (a INTEGER, b TEXT, v REAL, PRIMARY KEY (a, b));"
                      "INSERT INTO t VALUES (1, 'x', 0.5), (2, 'y', NULL), (3, 'z', 2);")  # fmt: skip
    con.commit()
    con.close()
    src = Source(table="t", connection={"url": "sqlite:///app.db"}, chunk_rows=2)
    chunks = list(read_source(src, tmp_path, env={}, since=Since("a", 2)))
    assert [c.keys for c in chunks] == [["a=2, b=y", "a=3, b=z"]]
    assert chunks[0].table.column("v").to_pylist() == [None, 2.0]


@pytest.mark.parametrize(("env", "says"), [
    ({}, "source.connection.url_env: the environment variable APP_DB is not set"),
    ({"APP_DB": "mysql://u:pw@h/db"}, "the URL in APP_DB (source.connection.url_env): unsupported scheme mysql://"),
])  # fmt: skip
def test_a_connection_that_cannot_be_resolved_names_the_pipeline_file_and_the_stream(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    users = {"name": "users", "source": {"table": "people", "connection": {"url_env": "APP_DB"}}, "kind": "attributes",
             "identifier": {"external_id": "user_id"}, "attributes": [{"column": "email"}]}  # fmt: skip
    pipeline = project(tmp_path, [users])
    with pytest.raises(SourceError) as err:
        run_pipeline(pipeline, dry_run=True, report_dir=tmp_path / "r", env=env)
    assert str(err.value).startswith(f"{pipeline.origin}: stream users: {says}") and "pw" not in str(err.value)
    assert pipeline.origin.endswith("t.yaml")


@pytest.mark.skipif(not os.environ.get("SNOWFLAKE_URL"), reason="no Snowflake credentials (set SNOWFLAKE_URL)")
def test_snowflake_source_reads() -> None:  # pragma: no cover - needs an account
    src = Source(sql="SELECT 1 AS ID", connection={"url_env": "SNOWFLAKE_URL"}, key="ID")
    (chunk,) = list(read_source(src, Path("."), env=os.environ))
    assert chunk.keys == ["ID=1"]


@pytest.mark.skipif(not os.environ.get("BIGQUERY_URL"), reason="no BigQuery credentials (set BIGQUERY_URL)")
def test_bigquery_source_reads() -> None:  # pragma: no cover - needs an account
    src = Source(sql="SELECT 1 AS id", connection={"url_env": "BIGQUERY_URL"}, key="id")
    (chunk,) = list(read_source(src, Path("."), env=os.environ))
    assert chunk.keys == ["id=1"]


def test_a_partitioned_sql_run_is_refused_with_advice_that_covers_every_row(
    postgres_url: str, emulator: Any, tmp_path: Path
) -> None:
    """--partition cannot split a query: the refusal gives a WHERE clause per worker, and that clause, taken
    as written for K = 1..N, puts every row in exactly one worker (hashtext can be negative)."""
    import re

    from test_incremental import ticks_stream

    from connector.errors import ConfigError
    from connector.readers.partition import Partition

    stream = ticks_stream(50, "part_ticks")
    del stream["incremental"]  # keeping no state: the partition is what is refused
    pipeline = project(tmp_path, [stream])
    with pytest.raises(ConfigError) as err:
        run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r", partition=Partition.parse("1/3"),
                     env={"PG_URL": postgres_url, "BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "k"})  # fmt: skip
    where = re.search(r"WHERE (.+?) \(hashtext", str(err.value))
    assert where is not None, str(err.value)
    pg_exec(postgres_url, "DROP TABLE IF EXISTS part_rows", "CREATE TABLE part_rows (id int PRIMARY KEY)",
            "INSERT INTO part_rows SELECT g FROM generate_series(1, 3000) g")  # fmt: skip
    import adbc_driver_postgresql.dbapi as pg

    counts = []
    with pg.connect(postgres_url, autocommit=True) as con, con.cursor() as cur:
        for k in (1, 2, 3):
            cur.execute(f"SELECT count(*) FROM part_rows WHERE {where.group(1).replace('N', '3').replace('K', str(k))}")
            counts.append(cur.fetchone()[0])
    assert sum(counts) == 3000 and min(counts) > 800  # every row in one worker, and the workers balanced
