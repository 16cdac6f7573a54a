"""Readers: bounded chunks, physical row numbers, parse rejects, CSV options, file discovery, Parquet types."""

from __future__ import annotations

import csv
import io
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import CsvOptions, Source
from connector.errors import SourceError
from connector.readers import list_files, read_source
from connector.records import Chunk, Rejected


def _read(
    path: Path, chunk_rows: int = 50_000, **csv_opts: Any
) -> tuple[list[Chunk], list[dict[str, Any]], list[int], list[Rejected]]:
    src = Source(path=str(path), chunk_rows=chunk_rows, csv=CsvOptions(**csv_opts))
    chunks = list(read_source(src, path.parent))
    rows = [r for c in chunks for r in c.table.to_pylist()]
    numbers = [n for c in chunks for n in c.row_numbers]
    rejects = [r for c in chunks for r in c.rejects]
    return chunks, rows, numbers, rejects


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- chunking and row numbers


def test_chunks_are_bounded_and_row_numbers_are_line_numbers(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv", ["id", "v"], [[str(i), f"v{i}"] for i in range(1000)])
    chunks, rows, numbers, rejects = _read(path, chunk_rows=64)
    assert len(chunks) >= 1000 // 64
    assert max(len(c) for c in chunks) <= 64
    assert numbers == list(range(2, 1002))
    assert [r["id"] for r in rows] == [str(i) for i in range(1000)]
    assert not rejects
    for c in chunks:
        assert len(c.row_numbers) == len(c)
        assert all(t == pa.string() for t in c.table.schema.types)


def test_multiline_quoted_field_keeps_its_first_line_number(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('id,note\n1,"two\nlines"\n2,plain\n3,"a\nb\nc"\n4,end\n', encoding="utf-8")
    _, rows, numbers, rejects = _read(path)
    assert numbers == [2, 4, 5, 8]
    assert [r["note"] for r in rows] == ["two\nlines", "plain", "a\nb\nc", "end"]
    assert not rejects


def test_blank_lines_are_skipped_and_numbering_stays_physical(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("id,v\n1,a\n\n2,b\n\n\n3,c\n", encoding="utf-8")
    _, rows, numbers, rejects = _read(path)
    assert numbers == [2, 4, 7]
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert not rejects


def test_blank_lines_with_crlf_endings_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,v\r\n1,a\r\n\r\n2,b\r\n\n3,c\r\n")
    _, rows, numbers, rejects = _read(path)
    assert numbers == [2, 4, 6]
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert not rejects


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_bytes(b"id,v\r\n1,a\r\n2,b\r\n")
    _, rows, numbers, _ = _read(path)
    assert rows == [{"id": "1", "v": "a"}, {"id": "2", "v": "b"}]
    assert numbers == [2, 3]


# --------------------------------------------------------------------------- parse rejects


def test_every_parse_reject_kind_is_a_row_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"id,name,note\n"
        b"1,ok,x\n"  # 2
        b"2,too,many,fields\n"  # 3: csv.column_count
        b"3,few\n"  # 4: csv.column_count
        b'4,"closed"junk,x\n'  # 5: csv.quoting
        b"5,caf\xe9,x\n"  # 6: csv.encoding (latin-1 byte in a utf-8 file)
        b'6,"never closed,x\n'  # 7: csv.quoting, parsing resumes on line 8
        b"7,ok,y\n"  # 8
    )
    _, rows, numbers, rejects = _read(path)
    assert numbers == [2, 8]
    assert [r["id"] for r in rows] == ["1", "7"]
    got = [(r.ref.row, r.stage, r.rule) for r in rejects]
    assert got == [
        (3, "parse", "csv.column_count"),
        (4, "parse", "csv.column_count"),
        (5, "parse", "csv.quoting"),
        (6, "parse", "csv.encoding"),
        (7, "parse", "csv.quoting"),
    ]
    by_row = {r.ref.row: r for r in rejects}
    assert by_row[3].values == {"_raw": "2,too,many,fields"}
    assert "expected 3 fields, found 4" in by_row[3].reason
    assert by_row[6].values == {"_raw": "5,caf\\xe9,x"}
    assert "utf-8" in by_row[6].reason
    assert by_row[7].values == {"_raw": '6,"never closed,x'}
    assert all(r.ref.file == str(path) for r in rejects)
    assert "bad.csv, row 5" in by_row[5].message()


def test_rejects_in_a_large_file_keep_exact_numbers(tmp_path: Path) -> None:
    lines = [b"id,v\n"]
    bad_at: dict[int, str] = {}
    for i in range(20_000):
        line_no = i + 2
        if i % 997 == 5:
            lines.append(f"{i},x,extra\n".encode())
            bad_at[line_no] = "csv.column_count"
        elif i % 1009 == 7:
            lines.append(f"{i},\xff\n".encode("latin-1"))
            bad_at[line_no] = "csv.encoding"
        else:
            lines.append(f"{i},v{i}\n".encode())
    path = tmp_path / "big.csv"
    path.write_bytes(b"".join(lines))
    chunks, rows, numbers, rejects = _read(path, chunk_rows=1500)
    assert max(len(c) for c in chunks) <= 1500
    assert {r.ref.row: r.rule for r in rejects} == bad_at
    expected_rows = [n for n in range(2, 20_002) if n not in bad_at]
    assert numbers == expected_rows
    assert all(int(r["id"]) == n - 2 for r, n in zip(rows, numbers, strict=True))


def test_fast_and_careful_paths_agree_on_clean_rows(tmp_path: Path) -> None:
    rows = [["1", "", "NULL"], ["2", "a, b", 'say "hi"'], ["3", "N/A", "z"], ["4", "ü", "-"]]
    clean = _write_csv(tmp_path / "clean.csv", ["id", "a", "b"], rows)
    dirty = tmp_path / "dirty.csv"
    dirty.write_bytes(clean.read_bytes() + b"5,only-two\n")
    for opts in ({}, {"null_values": ["-"]}):
        _, fast, _, fast_rej = _read(clean, **opts)
        _, careful, _, careful_rej = _read(dirty, **opts)
        assert not fast_rej and len(careful_rej) == 1
        assert fast == careful
    _, default_rows, _, _ = _read(clean)
    assert default_rows[0] == {"id": "1", "a": None, "b": None}
    assert default_rows[2]["a"] is None
    assert default_rows[3]["b"] == "-"
    _, custom, _, _ = _read(clean, null_values=["-"])
    assert custom[0] == {"id": "1", "a": "", "b": "NULL"}
    assert custom[3]["b"] is None


# --------------------------------------------------------------------------- options


def test_delimiter_quote_and_encoding_options(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_bytes("id;name;city\n1;'Zoë; the first';Zürich\n2;Ana;São Paulo\n".encode("latin-1"))
    _, rows, numbers, rejects = _read(path, delimiter=";", quote_char="'", encoding="latin-1")
    assert rows == [
        {"id": "1", "name": "Zoë; the first", "city": "Zürich"},
        {"id": "2", "name": "Ana", "city": "São Paulo"},
    ]
    assert numbers == [2, 3] and not rejects
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\tx y\n", encoding="utf-8")
    assert _read(tsv, delimiter="\t")[1] == [{"a": "1", "b": "x y"}]


def test_header_options_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "nh.csv"
    path.write_text("1,a\n2,b\n", encoding="utf-8")
    _, rows, numbers, _ = _read(path, header=False, column_names=["id", "v"])
    assert rows == [{"id": "1", "v": "a"}, {"id": "2", "v": "b"}]
    assert numbers == [1, 2]
    renamed = tmp_path / "r.csv"
    renamed.write_bytes(b"\xef\xbb\xbfID,Value\n1,a\n")
    assert _read(renamed)[1] == [{"ID": "1", "Value": "a"}]
    assert _read(renamed, column_names=["id", "v"])[1] == [{"id": "1", "v": "a"}]
    with pytest.raises(SourceError, match="column_names"):
        _read(path, header=False)


def test_header_only_file_yields_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("id,v\n", encoding="utf-8")
    _, rows, _, rejects = _read(path)
    assert rows == [] and rejects == []


# --------------------------------------------------------------------------- files and errors


def test_directory_and_glob_sources_are_sorted(tmp_path: Path) -> None:
    d = tmp_path / "parts"
    d.mkdir()
    for name in ("b.csv", "a.csv", "c.csv"):
        (d / name).write_text(f"f\n{name}\n", encoding="utf-8")
    (d / ".hidden.csv").write_text("f\nx\n", encoding="utf-8")
    (d / "_SUCCESS").write_text("", encoding="utf-8")
    pq.write_table(pa.table({"f": ["p"]}), d / "z.parquet")
    files = list_files(Source(path="parts", format="csv"), tmp_path)
    assert [f.name for f in files] == ["a.csv", "b.csv", "c.csv"]
    assert [f.name for f in list_files(Source(path="parts"), tmp_path)] == [
        "a.csv",
        "b.csv",
        "c.csv",
        "z.parquet",
    ]
    chunks = list(read_source(Source(path="parts/*.csv"), tmp_path))
    assert [c.table.column("f")[0].as_py() for c in chunks] == ["a.csv", "b.csv", "c.csv"]
    assert [Path(c.file).name for c in chunks] == ["a.csv", "b.csv", "c.csv"]
    assert [f.name for f in list_files(Source(path=str(d / "[ab].csv")), Path("/nonexistent"))] == [
        "a.csv",
        "b.csv",
    ]


@pytest.mark.parametrize(
    ("setup", "source", "message"),
    [
        (lambda d: None, Source(path="missing.csv"), "missing.csv: file not found"),
        (lambda d: (d / "empty").mkdir(), Source(path="empty"), "holds no CSV or Parquet files"),
        (lambda d: None, Source(path="nothing/*.csv"), "no file matches"),
        (lambda d: (d / "x.dat").write_text("a\n1\n"), Source(path="x.dat"), "set source.format"),
        (
            lambda d: pq.write_table(pa.table({"a": [1]}), d / "p.csv"),
            Source(path="p.csv"),
            "this is a Parquet file",
        ),
        (
            lambda d: (d / "n.parquet").write_text("a,b\n1,2\n"),
            Source(path="n.parquet"),
            "not a readable Parquet file",
        ),
        (lambda d: (d / "e.csv").write_text("\na\n1\n"), Source(path="e.csv"), "a header line is expected"),
        (
            lambda d: (d / "dup.csv").write_text("a,a\n1,2\n"),
            Source(path="dup.csv"),
            "names column 'a' twice",
        ),
        (
            lambda d: (d / "u.csv").write_bytes(b"a,\xff\n"),
            Source(path="u.csv"),
            "line 1: the header line cannot be read",
        ),
        (
            lambda d: (d / "d.csv").write_text("a\n1\n"),
            Source(path="d.csv", csv=CsvOptions(delimiter="::")),
            "csv.delimiter must be one ASCII character",
        ),
        (
            lambda d: (d / "enc.csv").write_text("a\n1\n"),
            Source(path="enc.csv", csv=CsvOptions(encoding="klingon")),
            "unknown csv.encoding",
        ),
    ],
)
def test_source_errors_name_the_file_and_the_fix(
    tmp_path: Path, setup: Any, source: Source, message: str
) -> None:
    setup(tmp_path)
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        list(read_source(source, tmp_path))
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.csv"
    path.write_text("a\n1\n")
    path.chmod(0)
    with pytest.raises(SourceError, match="cannot be read"):
        list_files(Source(path="locked.csv"), tmp_path)


# --------------------------------------------------------------------------- parquet


def test_parquet_keeps_native_types_and_row_indices(tmp_path: Path) -> None:
    n = 2500
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    table = pa.table(
        {
            "id": pa.array([f"u{i}" for i in range(n)]),
            "when": pa.array([t0] * n, type=pa.timestamp("ms", tz="UTC")),
            "amount": pa.array([i / 2 for i in range(n)], type=pa.float64()),
            "count": pa.array(list(range(n)), type=pa.int32()),
            "flag": pa.array([i % 2 == 0 for i in range(n)]),
        }
    )
    pq.write_table(table, tmp_path / "e.parquet", row_group_size=700)
    chunks = list(read_source(Source(path="e.parquet", chunk_rows=1000), tmp_path))
    assert max(len(c) for c in chunks) <= 1000
    assert [n for c in chunks for n in c.row_numbers] == list(range(1, n + 1))
    assert chunks[0].table.schema.equals(table.schema)
    assert pa.concat_tables(c.table for c in chunks).equals(table)
    assert chunks[1].values(0)["id"] == f"u{chunks[1].row_numbers[0] - 1}"


def test_sample_events_parquet_types() -> None:
    root = Path(__file__).resolve().parents[2]
    chunks = list(read_source(Source(path="sample_data/events.parquet", chunk_rows=1000), root))
    schema = chunks[0].table.schema
    assert schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("amount").type == pa.float64()
    assert sum(len(c) for c in chunks) == 3000


# --------------------------------------------------------------------------- memory


def test_chunked_read_never_materialises_the_whole_table(tmp_path: Path) -> None:
    rng = random.Random(7)
    n = 200_000
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,email,score,note\n")
        for i in range(n):
            note = "bad,row" if i % 50_000 == 3 else f"note {rng.random():.6f}"
            f.write(
                f'u{i},user{i}@example.com,{i % 100},"{note}"\n' if i % 50_000 != 3 else f"u{i},x,1,{note}\n"
            )
    full = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(["id", "email", "score", "note"], pa.string())
        ),
    )
    full_bytes = full.nbytes
    del full
    base = pa.total_allocated_bytes()
    peak = 0
    rows = 0
    rejects = 0
    for chunk in read_source(Source(path="big.csv", chunk_rows=5000), tmp_path):
        assert len(chunk) <= 5000
        rows += len(chunk)
        rejects += len(chunk.rejects)
        peak = max(peak, pa.total_allocated_bytes() - base)
        del chunk
    assert rows + rejects == n and rejects == 4
    assert peak < full_bytes / 4, (peak, full_bytes)


def test_parquet_read_does_not_keep_the_row_groups_already_read(tmp_path: Path) -> None:
    """pyarrow's default pre_buffer=True caches every row group's bytes until the reader closes (memory grew with
    the file: +270 MB at 10M rows). The reader reads the file through a Python file object, so those bytes are
    Python objects and tracemalloc sees them."""
    import tracemalloc

    n = 200_000
    rng = random.Random(3)
    table = pa.table(
        {"id": [f"{rng.random():.12f}" for _ in range(n)], "x": [rng.random() for _ in range(n)]}
    )
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=10_000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        peak = 0
        rows = 0
        for chunk in read_source(Source(path="big.parquet", chunk_rows=10_000), tmp_path):
            rows += len(chunk)
            del chunk
            peak = max(peak, tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert rows == n
    assert peak < size / 4, (peak, size)


# --------------------------------------------------------------------------- property: any table round-trips


_cell = st.text(alphabet=st.sampled_from(list('ab ,"\n\r;éü\t')), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_cell, min_size=3, max_size=3), max_size=30), st.integers(min_value=1, max_value=7))
def test_any_csv_written_by_the_csv_module_round_trips(
    tmp_path: Path, table: list[list[str]], chunk_rows: int
) -> None:
    buf = io.StringIO()
    buf.write("a,b,c\r\n")
    starts = []
    line = 2
    for row in table:
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerow(row)  # quotes cells holding \r or \n
        starts.append(line)
        line += text.getvalue().count("\n")
        buf.write(text.getvalue())
    path = tmp_path / "h.csv"
    path.write_bytes(buf.getvalue().encode("utf-8"))
    chunks, rows, numbers, rejects = _read(path, chunk_rows=chunk_rows, null_values=[])
    assert not rejects
    assert max((len(c) for c in chunks), default=0) <= chunk_rows
    assert [[r["a"], r["b"], r["c"]] for r in rows] == table
    assert numbers == starts


# --------------------------------------------------------------------------- block boundaries


def _reference(text: str) -> tuple[list[list[str]], list[int]]:
    """Records and their first physical lines, as Python's csv module reads them."""
    lines = text.splitlines(keepends=True)
    feed = iter(lines)
    consumed = 0

    def counting() -> Any:
        nonlocal consumed
        for line in feed:
            consumed += 1
            yield line

    reader = csv.reader(counting())
    next(reader)
    records, starts = [], []
    while True:
        start = consumed + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        records.append(rec)
        starts.append(start)
    return records, starts


def test_multiline_fields_across_block_boundaries(tmp_path: Path) -> None:
    rng = random.Random(11)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "note", "tail"])
    for i in range(12_000):
        note = "x" * rng.randint(0, 60)
        if i % 2 == 0:  # half the records span three lines: many block cuts fall inside one
            note = f'line one\nline "two"\n{note}'
        w.writerow([str(i), note, "t"])
    text = buf.getvalue()
    assert len(text) > 5 * 64 * 1024  # several blocks even at the smallest block size
    path = tmp_path / "ml.csv"
    path.write_text(text, encoding="utf-8")
    records, starts = _reference(text)
    for chunk_rows in (1, 100, 5000):
        chunks, rows, numbers, rejects = _read(path, chunk_rows=chunk_rows)
        assert not rejects
        assert max(len(c) for c in chunks) <= chunk_rows
        assert numbers == starts
        assert [[r["id"], r["note"] or "", r["tail"]] for r in rows] == records


def test_stray_open_quote_in_a_large_file_costs_one_line(tmp_path: Path) -> None:
    lines = ["id,v\n"] + [f"{i},value{i}\n" for i in range(60_000)]
    lines[30_001] = '30000,"never closed\n'  # physical line 30,002
    path = tmp_path / "stray.csv"
    path.write_text("".join(lines), encoding="utf-8")
    _, rows, numbers, rejects = _read(path, chunk_rows=2000)
    assert [(r.ref.row, r.rule) for r in rejects] == [(30_002, "csv.quoting")]
    assert len(rows) == 59_999
    assert numbers == [n for n in range(2, 60_002) if n != 30_002]
