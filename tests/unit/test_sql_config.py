"""SQL source forms in pipeline files (clear errors naming file and key), URL masking, the queries built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import Connection, Source, load_pipeline
from connector.errors import ConfigError, SourceError
from connector.readers.sql.connection import mask_url, resolve_target
from connector.readers.sql.query import Since, count_query, rows_query
from connector.records import Rejected, RowRef


def write(tmp_path: Path, source: dict[str, Any], **stream: Any) -> Path:
    doc = {"name": "p", "streams": [{"name": "s", "source": source, "kind": "attributes",
                                     "identifier": {"external_id": "id"}, "attributes": [{"column": "a"}], **stream}]}  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": "a.csv", "sql": "SELECT 1"}, "exactly one of path (files), sql (a query) or table"),
        ({"sql": "SELECT 1"}, "a sql source needs a 'connection'"),
        ({"table": "users", "connection": {"duckdb": "w.duckdb"}, "csv": {"delimiter": ";"}},
         "'csv' applies to file sources (path), not to table sources"),
        ({"table": "users", "connection": {"duckdb": "w.duckdb"}, "format": "csv"}, "'format' applies to file"),
        ({"path": "a.csv", "connection": {"duckdb": "w.duckdb"}}, "'connection' applies to sql and table"),
        ({"table": "users; DROP TABLE x", "connection": {"duckdb": "w"}}, "use sql: for anything else"),
        ({"table": "users", "connection": {}}, "give exactly one of url_env"),
        ({"table": "users", "connection": {"url_env": "PG_URL", "duckdb": "w"}}, "(got url_env, duckdb)"),
        ({"table": "users", "connection": {"url": "postgresql://u:hunter2@db/x"}}, "put the URL in an environment"),
        ({"table": "users", "connection": {"url_env": "pg url"}}, "url_env names an environment variable"),
        ({"sql": " ; ", "connection": {"duckdb": "w"}}, "sql is empty"),
        ({"table": "users", "connection": {"duckdb": "w"}, "key": []}, "streams.0.source.key"),
    ],
)
def test_bad_source_combinations_name_the_file_and_the_key(tmp_path: Path, source: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_pipeline(write(tmp_path, source))
    text = str(err.value)
    assert str(tmp_path / "p.yaml") in text and "streams.0.source" in text and message in text
    assert "hunter2" not in text


def test_good_sql_sources_load(tmp_path: Path) -> None:
    p = load_pipeline(write(tmp_path, {"sql": "SELECT * FROM t", "connection": {"url_env": "PG_URL"}, "key": "id"},
                            incremental={"cursor": "updated_at"}))  # fmt: skip
    s = p.streams[0]
    assert s.source.is_sql and s.source.key == ["id"] and s.incremental is not None
    assert s.source.describe() == "$PG_URL:query"
    with pytest.raises(ConfigError, match="streams.0.incremental.cursor"):
        load_pipeline(write(tmp_path, {"path": "a.csv"}, incremental={"cursor": " "}))


def test_urls_are_masked_and_resolved_from_the_environment(tmp_path: Path) -> None:
    assert mask_url("postgresql://bob:s3cret@db:5432/app?sslmode=require&password=x") == (
        "postgresql://bob:***@db:5432/app?sslmode=require&password=***"
    )
    t = resolve_target(Connection(url_env="PG_URL"), tmp_path, {"PG_URL": "postgres://bob:p%40ss@db/app"})
    assert t.dialect == "postgresql" and t.label == "$PG_URL" and "p%40ss" not in t.shown
    assert t.scrub("could not connect to postgres://bob:p%40ss@db/app (p@ss)") == "could not connect to *** (***)"
    d = resolve_target(Connection(url="sqlite:///data/app.db"), tmp_path, {})
    assert d.dialect == "sqlite" and d.url == str(tmp_path / "data" / "app.db")
    assert d.label == "sqlite:///data/app.db"  # as written: relative to the project, not /data/app.db
    assert resolve_target(Connection(url="sqlite:////srv/app.db?mode=ro"), tmp_path, {}).label == "sqlite:////srv/app.db"
    with pytest.raises(SourceError, match="PG_URL is not set"):
        resolve_target(Connection(url_env="PG_URL"), tmp_path, {})
    with pytest.raises(SourceError, match="unsupported scheme mysql://"):
        resolve_target(Connection(url_env="DB"), tmp_path, {"DB": "mysql://u:pw@h/db"})


def test_the_watermark_is_a_bound_parameter_and_rows_come_ordered() -> None:
    src = Source(sql="SELECT * FROM t;", connection={"url_env": "PG_URL"})
    assert rows_query(src, "postgresql", None) == ("SELECT * FROM t", [])
    q, params = rows_query(src, "postgresql", Since("updatedAt", 5))
    assert q == 'SELECT * FROM (SELECT * FROM t) braze_src WHERE "updatedAt" >= $1 ORDER BY "updatedAt" NULLS FIRST'
    assert params == [5]
    q, params = rows_query(Source(table="s.t", connection={"duckdb": "w"}), "duckdb", Since("u", None))
    assert q == 'SELECT * FROM (SELECT * FROM s.t) braze_src ORDER BY "u" NULLS FIRST' and params == []
    assert count_query(src, "sqlite", Since("u", 1)) == ('SELECT COUNT(*) FROM (SELECT * FROM t) braze_src WHERE "u" >= ?', [1])


def test_rows_of_sql_sources_are_named_by_their_key() -> None:
    ref = RowRef("$PG_URL:public.users", 7, "id=42")
    assert str(ref) == "$PG_URL:public.users:id=42" and ref.where == "id=42"
    r = Rejected(ref, "contract", "email.invalid", "bad", "email")
    assert r.message() == "$PG_URL:public.users, key id=42, column 'email': [email.invalid] bad"
    assert RowRef("a.csv", 3).where == 3


def test_every_pipeline_example_in_the_readme_validates() -> None:
    import re

    from connector.config import Pipeline

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "streams:" in b]
    assert len(blocks) >= 2
    for block in blocks:
        Pipeline.model_validate(yaml.safe_load(block))


def test_key_texts_name_each_row_and_place_a_null_key_by_its_row() -> None:
    """Rejects and failed files name SQL rows by key; a NULL key is not a key, so its row's place is added."""
    import pyarrow as pa

    from connector.readers.sql.keys import key_texts

    one = pa.table({"id": [7, None, None]})
    assert key_texts(one, ["id"], range(41, 44)) == ["id=7", "id=NULL (row 42)", "id=NULL (row 43)"]
    two = pa.table({"a": [1, None], "b": ["x", "y"]})
    assert key_texts(two, ["a", "b"], [1, 2]) == ["a=1, b=x", "a=NULL, b=y (row 2)"]


def test_a_chunks_key_texts_are_made_when_read_and_follow_a_filter() -> None:
    """An SQL chunk's keys are made on the first read (an unchanged delta re-run reads none); a filtered
    chunk keeps each row's key and, for a NULL key, its row number in the result."""
    import pyarrow as pa

    from connector.readers.sql.keys import KeyTexts
    from connector.records import Chunk

    table = pa.table({"id": [1, None, 3, None], "v": ["a", "b", "c", "d"]})
    keys = KeyTexts(["id"], table.select(["id"]), range(11, 15))
    chunk = Chunk("src", table, range(11, 15), keys=keys)
    assert keys._texts is None  # nothing made yet
    kept = chunk.filter([False, True, True, False])
    assert keys._texts is None and kept.keys is not None and len(kept.keys) == 2
    assert kept.keys == ["id=NULL (row 12)", "id=3"] and list(kept.row_numbers) == [12, 13]
    assert str(kept.ref(1)) == "src:id=3"
    assert chunk.keys == ["id=1", "id=NULL (row 12)", "id=3", "id=NULL (row 14)"]  # made now
    again = chunk.filter([True, False, False, True])
    assert again.keys == ["id=1", "id=NULL (row 14)"] and again.keys[1] == "id=NULL (row 14)"
    assert chunk.filter([False] * 4).keys == []
