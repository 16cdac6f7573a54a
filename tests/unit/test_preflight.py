"""Pre-flight checks (readers/preflight.py): columns present, files parseable, zero-byte CSVs are empty tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector.config import CsvOptions, Source, Stream
from connector.errors import SourceError
from connector.mapping import columns_read
from connector.readers import check_files, read_source
from connector.readers.csv_reader import csv_columns


def events_stream() -> Stream:
    return Stream.model_validate({
        "name": "events", "source": {"path": "e.csv"}, "kind": "events",
        "identifier": {"external_id": "user_id"},
        "event": {"name": "event", "time": {"column": "ts", "type": "time"},
                  "properties": {"columns": {"score": "score"}, "json_column": "props"}},
    })  # fmt: skip


def test_columns_read_names_every_column_and_where_it_is_read() -> None:
    assert columns_read(events_stream()) == {
        "user_id": "identifier.external_id",
        "event": "event.name",
        "ts": "event.time",
        "score": "event.properties.columns.score",
        "props": "event.properties.json_column",
    }
    users = Stream.model_validate({
        "name": "u", "source": {"path": "u.csv"}, "kind": "attributes", "identifier": {"external_id": "id"},
        "attributes": [{"column": "first"}, {"to": "source", "value": "warehouse"}, {"column": "n", "to": "visits"}],
    })  # fmt: skip
    assert columns_read(users) == {"id": "identifier.external_id", "first": "attributes.first", "n": "attributes.visits"}


def test_a_missing_column_names_the_file_the_column_and_what_reads_it(tmp_path: Path) -> None:
    f = tmp_path / "e.csv"
    f.write_text("user_id,event,score\nu1,x,1\n", encoding="utf-8")
    stream = events_stream()
    with pytest.raises(SourceError) as info:
        check_files("events", stream.source, [f], columns_read(stream))
    text = str(info.value)
    assert str(f) in text and "'ts' (event.time)" in text and "also missing: 'props'" in text
    assert "columns: user_id, event, score" in text


def test_parquet_schema_is_checked_without_reading_rows(tmp_path: Path) -> None:
    f = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": ["u"], "event": ["x"], "ts": ["t"], "score": [1], "props": ["{}"]}), f)
    assert check_files("events", Source(path="e.parquet"), [f], columns_read(events_stream())) == []
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        check_files("events", Source(path="bad.parquet"), [bad], {})


def test_a_zero_byte_csv_is_an_empty_table(tmp_path: Path) -> None:
    f = tmp_path / "e.csv"
    f.write_bytes(b"")
    assert csv_columns(f, CsvOptions()) is None
    assert check_files("events", Source(path="e.csv"), [f], {"user_id": "identifier.external_id"}) == [f]
    assert list(read_source(Source(path="e.csv"), tmp_path)) == []
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf")
    assert csv_columns(bom, CsvOptions()) is None


def test_a_header_only_csv_has_columns_and_no_rows(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text("user_id,event\n", encoding="utf-8")
    assert csv_columns(f, CsvOptions()) == ["user_id", "event"]
    assert sum(len(c) for c in read_source(Source(path="h.csv"), tmp_path)) == 0


def test_header_errors_are_found_before_any_row(tmp_path: Path) -> None:
    f = tmp_path / "u.csv"
    f.write_bytes(b"a,\xff\n1,2\n")
    with pytest.raises(SourceError, match="line 1: the header line cannot be read"):
        check_files("s", Source(path="u.csv"), [f], {})
