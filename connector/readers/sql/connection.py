"""Which database an SQL source names, and how it is shown: the URL from the environment, masked.

The URL is read from the environment (`url_env`) or the pipeline file (`url`, refused there when it holds a
password; `duckdb` names a file). Only `Target.shown` (password and secret-looking query values masked)
and `Target.label` (the variable's name, or the URL without credentials) ever reach logs, messages and
reports; `scrub` removes the URL and its password from a driver's error text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from connector.config import Connection
from connector.errors import SourceError

Dialect = Literal["postgresql", "sqlite", "duckdb", "snowflake", "bigquery"]

_SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "duckdb": "duckdb",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
}
_SECRET = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)
MASK = "***"


@dataclass(frozen=True)
class Target:
    """A resolved connection. `url` may hold credentials: never log or show it."""

    dialect: Dialect
    url: str
    shown: str
    label: str
    secrets: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        """`text` without the URL or any secret of it (driver errors sometimes echo the connection string)."""
        for s in sorted({self.url, *self.secrets}, key=len, reverse=True):
            if s:
                text = text.replace(s, MASK)
        return text


def mask_url(url: str) -> str:
    """The URL with its password and secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = [(k, MASK if _SECRET.search(k) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> tuple[str, ...]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    found = [parts.password or "", unquote(parts.password or "")]
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _SECRET.search(k)]
    return tuple(s for s in found if s)


def resolve_target(conn: Connection, base_dir: Path, env: Mapping[str, str], where: str = "") -> Target:
    """The database a connection names. `where` begins each message (the pipeline file and the stream, e.g.
    "pipelines/p.yaml: stream users: "): the variable or the URL alone does not say which stream to fix.

    Raises:
        SourceError: the environment variable is unset or empty, or the URL's scheme is not supported.
    """
    if conn.duckdb is not None:
        return Target("duckdb", _local(conn.duckdb, base_dir), conn.duckdb, f"duckdb:{conn.duckdb}")
    if conn.url_env is not None:
        url = env.get(conn.url_env, "")
        if not url.strip():
            raise SourceError(
                f"{where}source.connection.url_env: the environment variable {conn.url_env} is not set; "
                "set it to the database URL (e.g. postgresql://user:password@host:5432/db)"
            )
        label = f"${conn.url_env}"
    else:
        assert conn.url is not None
        url, label = conn.url, mask_url(conn.url)
    scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
    dialect = _SCHEMES.get(scheme)
    if dialect is None:
        what = f"the URL in {conn.url_env} (source.connection.url_env)" if conn.url_env else "source.connection.url"
        raise SourceError(
            f"{where}{what}: unsupported scheme {scheme + '://' if scheme else '(none)'}; use postgresql://, "
            "sqlite:///, duckdb:///, snowflake:// or bigquery://"
        )
    if dialect in ("sqlite", "duckdb"):
        path = url.split(":", 1)[1].removeprefix("///") if url.split(":", 1)[1].startswith("///") else ""
        if not path:
            raise SourceError(f"{where}{label}: a {dialect} URL names a file as {dialect}:///relative/path or "
                              f"{dialect}:////absolute/path")  # fmt: skip
        if conn.url is not None:  # as written: mask_url would drop the "//" (sqlite:/data/app.db looks absolute)
            label = url.split("?", 1)[0]
        url = _local(path, base_dir)
    return Target(dialect, url, mask_url(url) if dialect not in ("sqlite", "duckdb") else url, label, _secrets(url))


def _local(path: str, base_dir: Path) -> str:
    """A database file relative to the project folder (`:memory:` stays as it is)."""
    if path == ":memory:":
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base_dir / p)
