"""The SQL an SQL source runs: its rows (with an incremental cursor's bound and order), its count, its key.

A `table` source is read as `SELECT * FROM <table>` (the name as written, so the database applies its own
case rules); a `sql` source is wrapped as a subquery when a cursor bound or order is added. Column names
added here (the cursor) are quoted exactly as the result's column names are spelled. The watermark is
always a bound parameter, never text in the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.config import Source
from connector.readers.sql.drivers import placeholder

ALIAS = "braze_src"


@dataclass(frozen=True)
class Since:
    """Incremental read: rows ordered by `cursor`, only those with cursor >= `value` (all when None).

    `>=`, not `>`: rows equal to the watermark are read again and the caller drops those it already
    confirmed (connector/delta/watermark.py), so a tie split by a run's end is never lost.
    """

    cursor: str
    value: Any = None


def quote(dialect: str, name: str) -> str:
    """A column name quoted for the dialect, spelled exactly."""
    if dialect == "bigquery":
        return "`" + name.replace("`", "\\`") + "`"
    return '"' + name.replace('"', '""') + '"'


def base_query(source: Source) -> str:
    if source.table is not None:
        return f"SELECT * FROM {source.table}"
    assert source.sql is not None
    return source.sql.strip().rstrip(";").rstrip()


def rows_query(source: Source, dialect: str, since: Since | None) -> tuple[str, list[Any]]:
    """The query that reads the source's rows, and its parameters."""
    base = base_query(source)
    if since is None:
        return base, []
    col = quote(dialect, since.cursor)
    where, params = _where(dialect, col, since)
    # NULLS FIRST: rows without a cursor value never move the read frontier (they come before any value).
    return f"SELECT * FROM ({base}) {ALIAS}{where} ORDER BY {col} NULLS FIRST", params


def count_query(source: Source, dialect: str, since: Since | None) -> tuple[str, list[Any]]:
    """COUNT(*) of what rows_query reads."""
    base = base_query(source)
    if since is None:
        return f"SELECT COUNT(*) FROM ({base}) {ALIAS}", []
    where, params = _where(dialect, quote(dialect, since.cursor), since)
    return f"SELECT COUNT(*) FROM ({base}) {ALIAS}{where}", params


def _where(dialect: str, col: str, since: Since) -> tuple[str, list[Any]]:
    if since.value is None:
        return "", []
    return f" WHERE {col} >= {placeholder(dialect, 1)}", [since.value]


def primary_key_query(dialect: str, table: str) -> tuple[str, list[Any]] | None:
    """The query listing a table's primary-key columns in order, where the database can tell."""
    parts = table.split(".")
    name = parts[-1]
    if dialect == "postgresql":
        return (
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)",
            [table],
        )
    if dialect == "sqlite":
        return "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", [name]
    if dialect == "duckdb":
        sql = (
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY' AND lower(table_name) = lower(?)"
        )
        if len(parts) > 1:
            return sql + " AND lower(schema_name) = lower(?)", [name, parts[-2]]
        return sql, [name]
    return None  # Snowflake and BigQuery keys are not enforced: declare source.key
