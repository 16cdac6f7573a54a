"""Which files a source names, their format, and opening them with a clear SourceError."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import BinaryIO, Literal

from connector import config
from connector.errors import SourceError

FileFormat = Literal["csv", "parquet"]

_EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_GLOB_CHARS = re.compile(r"[*?\[]")


def list_files(source: config.Source, base_dir: Path) -> list[Path]:
    """The files a source names: the file itself, a directory's files of the format (sorted) or a glob's matches.

    Raises:
        SourceError: nothing matches, or a file cannot be read.
    """
    if source.path is None:
        return []  # an SQL source
    raw = Path(source.path).expanduser()
    path = raw if raw.is_absolute() else Path(base_dir) / raw
    if _GLOB_CHARS.search(source.path):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise SourceError(f"{path}: no file matches this pattern; check source.path")
    elif path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith((".", "_")) and _matches_format(p, source.format)
        )
        if not files:
            wanted = "CSV or Parquet" if source.format == "auto" else source.format
            raise SourceError(
                f"{path}: the directory holds no {wanted} files; check source.path and source.format"
            )
    elif path.is_file():
        files = [path]
    else:
        raise SourceError(f"{path}: file not found; check source.path (relative paths start at {base_dir})")
    for f in files:
        format_of(f, source.format)
        if not os.access(f, os.R_OK):
            raise SourceError(f"{f}: the file cannot be read (permission denied); fix its permissions")
    return files


def _matches_format(path: Path, fmt: str) -> bool:
    found = _EXTENSIONS.get(path.suffix.lower())
    return found is not None and (fmt == "auto" or found == fmt)


def format_of(path: Path, fmt: str) -> FileFormat:
    """The format of a file: the declared one, else from its extension."""
    if fmt in ("csv", "parquet"):
        return fmt  # type: ignore[return-value]
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise SourceError(
            f"{path}: cannot tell the format from the extension '{path.suffix}'; set source.format to csv or parquet"
        )
    return found


def open_file(path: Path) -> BinaryIO:
    """Open a source file for binary reading."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found; check source.path") from None
    except OSError as e:
        raise SourceError(
            f"{path}: the file cannot be read ({e.strerror}); fix its permissions or path"
        ) from None
