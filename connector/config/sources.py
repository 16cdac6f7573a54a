"""Where a stream's rows come from: files (path) or an SQL database (sql / table + connection).

A source is one of:

- `path`: a CSV or Parquet file, a directory (every file of the format inside it, sorted) or a glob;
- `sql`: a query, run on `connection`;
- `table`: a table or view (`name`, `schema.name` or `catalog.schema.name`), read whole, on `connection`.

A connection names its database by `url_env` (the environment variable holding the URL: the only place
credentials may come from), `url` (a URL without a password, e.g. `sqlite:///data/app.db`) or `duckdb` (a
DuckDB database file, or `:memory:` for SQL over local Parquet/CSV files). `key` names the column(s) that
identify a row of an SQL source: rejects and failed files show it instead of a row number, and incremental
reads use it to tell rows with the same cursor value apart.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_NAME = r"[A-Za-z_][A-Za-z0-9_$]*"
TABLE_NAME = re.compile(rf"^{_NAME}(\.{_NAME}){{0,2}}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FILE_ONLY = ("format", "csv")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_of(model: BaseModel, names: tuple[str, ...], what: str) -> str:
    """The one field of `names` that is set; ValueError naming them all when it is not exactly one."""
    given = [k for k in names if getattr(model, k) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {what} (got {', '.join(given) or 'none'})")
    return given[0]


MAX_FIELD_BYTES = 16 << 20
MAX_COLUMNS = 10_000


class CsvOptions(_Model):
    delimiter: str = ","
    quote_char: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    column_names: list[str] | None = None
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL", "null", "NA", "N/A"])
    # A longer field rejects its row (csv.field_too_large); a line over 4x this is not kept in memory.
    max_field_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = MAX_FIELD_BYTES


class Connection(_Model):
    """An SQL source's database: exactly one of `url_env`, `url`, `duckdb`.

    URL schemes: postgresql:// (ADBC), sqlite:/// (ADBC), duckdb:/// (in-process), snowflake:// and
    bigquery:// (ADBC, optional extras `[snowflake]`, `[bigquery]`).
    """

    url_env: str | None = None
    url: str | None = None
    duckdb: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Connection:
        _one_of(self, ("url_env", "url", "duckdb"), "url_env (the environment variable holding the database "
                "URL), url (a URL without a password) or duckdb (a DuckDB file or ':memory:')")  # fmt: skip
        if self.url_env is not None and not ENV_NAME.match(self.url_env):
            raise ValueError(f"url_env names an environment variable such as PG_URL (got {self.url_env!r})")
        if self.url is not None:
            parts = urlsplit(self.url)
            if not parts.scheme:
                raise ValueError(
                    f"url needs a scheme such as postgresql://, sqlite:/// or duckdb:/// (got {self.url!r})"
                )
            if parts.password:
                raise ValueError(
                    "url holds a password; credentials must not be in a pipeline file: put the URL in an "
                    "environment variable and name it with url_env"
                )
        return self


def _key_list(v: Any) -> Any:
    """`key: id` is `key: [id]`."""
    return [v] if isinstance(v, str) else v


class Source(_Model):
    """A file, a directory or a glob (`path`), or an SQL query or table on a `connection`."""

    path: str | None = None
    sql: str | None = None
    table: str | None = None
    connection: Connection | None = None
    key: Annotated[list[str], BeforeValidator(_key_list), Field(min_length=1)] | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_rows: Annotated[int, Field(gt=0, le=5_000_000)] = 50_000
    # A file with more columns is refused before any row is read (a CSV header, a Parquet schema).
    max_columns: Annotated[int, Field(ge=1, le=1_000_000)] = MAX_COLUMNS

    @model_validator(mode="after")
    def _one_form(self) -> Source:
        form = _one_of(self, ("path", "sql", "table"), "path (files), sql (a query) or table (a table or view)")
        if self.path is not None:
            if self.connection is not None:
                raise ValueError("'connection' applies to sql and table sources, not to files (path)")
            return self
        if self.connection is None:
            raise ValueError(f"a {form} source needs a 'connection' (url_env, url or duckdb)")
        for name in FILE_ONLY:
            if name in self.model_fields_set:
                raise ValueError(f"'{name}' applies to file sources (path), not to {form} sources")
        if self.table is not None and not TABLE_NAME.match(self.table):
            raise ValueError(
                f"table must be name, schema.name or catalog.schema.name of plain identifiers (got {self.table!r}); "
                "use sql: for anything else"
            )
        if self.sql is not None and not self.sql.strip().rstrip(";").strip():
            raise ValueError("sql is empty")
        return self

    @property
    def is_sql(self) -> bool:
        """Whether rows come from a database (sql or table) rather than files."""
        return self.path is None

    def describe(self) -> str:
        """The source for the report: the path, or the connection (never a password) and the table or 'query'."""
        if self.path is not None:
            return self.path
        assert self.connection is not None
        c = self.connection
        if c.url_env is not None:
            where = f"${c.url_env}"
        elif c.duckdb is not None:
            where = f"duckdb:{c.duckdb}"
        else:
            parts = urlsplit(c.url or "")
            where = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        return f"{where}:{self.table if self.table is not None else 'query'}"


class Incremental(_Model):
    """Read only the rows whose `cursor` column is past the last confirmed watermark (connector/delta/)."""

    cursor: str

    @field_validator("cursor")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("cursor names a column such as updated_at")
        return v
