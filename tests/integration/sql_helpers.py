"""Helpers for SQL-source tests: run statements on PostgreSQL or DuckDB, and a pipeline over an SQL source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from connector.config import Pipeline, load_pipeline


def pg_exec(url: str, *statements: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def duck_exec(path: Path, *statements: str) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


def sql_pipeline(tmp_path: Path, streams: list[dict[str, Any]], **top: Any) -> Pipeline:
    """A pipeline file under tmp_path/pipelines (state under tmp_path/state); returns the loaded pipeline."""
    doc: dict[str, Any] = {"name": "w", "streams": streams, "report": {"max_reject_fraction": 0.6}}
    doc.update(top)
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    path = tmp_path / "pipelines" / "w.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_pipeline(path)
