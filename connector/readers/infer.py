"""A file's columns and the Value type each one most likely holds (for `braze-connector upload`).

Parquet columns keep their schema's type (timestamp -> time, date -> date, integers, floats, booleans,
structs -> object, lists -> array). CSV columns are strings, and so are Parquet string columns: their type
is inferred from the first `sample_rows` rows: a column whose non-empty cells are at least `share` booleans
(true/false/yes/no), integers (no leading zero or +, so phone numbers and zip codes stay strings), numbers,
date-times or dates (ISO 8601, or slash dates such as 07/09/2023), or JSON objects takes that type; the few
cells that do not fit are then rejected by the cast, naming their row. Anything else stays a string
("auto").
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from connector import config
from connector.readers.csv_reader import read_csv
from connector.readers.files import format_of, list_files
from connector.readers.parquet_reader import read_parquet
from connector.readers.preflight import columns_of

SAMPLE_ROWS = 10_000
SHARE = 0.95
_STRING_TYPES = (
    ("boolean", r"(?i)^(true|false|yes|no)$"),
    ("integer", r"^-?(0|[1-9]\d{0,17})$"),
    ("float", r"^-?(0|[1-9]\d*)?(\.\d+)?([eE][+-]?\d+)?$"),
    ("date", r"^\d{4}-\d{2}-\d{2}$"),
    ("time", r"^(\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?|\d{1,2}/\d{1,2}/\d{4})$"),
    ("object", r"^\{.*\}$"),
)


def infer_types(source: config.Source, base_dir: Path, *, sample_rows: int = SAMPLE_ROWS,
                share: float = SHARE, date_formats: tuple[str, ...] = ()) -> dict[str, str]:  # fmt: skip
    """Column -> Value type ("auto" for plain strings) of the source's first file, in the file's order.

    `date_formats` (upload's --date-format): a string column whose cells these strptime formats read is a
    time column too.

    Raises:
        SourceError: the file is missing, unreadable or not CSV/Parquet.
    """
    path = list_files(source, base_dir)[0]
    names = columns_of(source, path) or []
    types = dict.fromkeys(names, "auto")
    if format_of(path, source.format) == "parquet":
        chunks = read_parquet(path, sample_rows, source.max_columns)
    else:
        chunks = read_csv(path, source.csv, sample_rows, source.max_columns)
    for chunk in chunks:
        for name in names:
            column = chunk.table.column(name)
            kind = _arrow_type(column.type)
            types[name] = (
                string_type(column, share, date_formats) if kind == "auto" and _is_str(column.type) else kind
            )
        break
    return types


def _is_str(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _arrow_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "time"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return "object"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "array"
    return "auto"


def string_type(
    column: pa.ChunkedArray | pa.Array, share: float = SHARE, date_formats: tuple[str, ...] = ()
) -> str:
    """The Value type most non-empty cells of a string column fit (at least `share` of them), else "auto"."""
    cells = pc.utf8_trim_whitespace(column)
    cells = pc.filter(cells, pc.and_(pc.is_valid(cells), pc.not_equal(cells, "")))
    n = len(cells)
    if n == 0:
        return "auto"
    fits = {
        kind: pc.sum(pc.match_substring_regex(cells, pattern)).as_py() or 0 for kind, pattern in _STRING_TYPES
    }
    fits["float"] = max(fits["float"], fits["integer"])  # integers mixed with decimals are numbers
    for kind in ("boolean", "integer", "float", "date", "time", "object"):
        if fits[kind] >= share * n:
            return kind
    if date_formats and _read_by(cells, date_formats) >= share * n:
        return "time"
    return "auto"


def _read_by(cells: pa.Array, formats: tuple[str, ...]) -> int:
    """How many cells one of the strptime formats reads (Arrow's strptime, vectorised)."""
    read = pa.nulls(len(cells), pa.timestamp("s"))
    for f in formats:
        try:
            parsed = pc.strptime(cells, format=f, unit="s", error_is_null=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # a directive Arrow does not know: the cast (pandas) still tries it at run time
        read = pc.coalesce(read, parsed)
    return int(pc.sum(pc.is_valid(read)).as_py() or 0)


__all__ = ["infer_types", "string_type"]
