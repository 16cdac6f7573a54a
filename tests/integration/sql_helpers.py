"""Helpers for SQL-source tests: run statements on PostgreSQL or DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pg_exec(url: str, *statements: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of one query on PostgreSQL."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def duck_exec(path: Path, *statements: str) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()
