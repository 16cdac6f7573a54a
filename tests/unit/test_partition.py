"""Partitions: every row in exactly one partition, a user's rows in one partition and in source order."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import readers
from connector.config import Stream
from connector.errors import ConfigError
from connector.readers.partition import (
    Partition,
    file_key,
    partition_files,
    partition_rows,
    plan_partition,
    source_root,
    split_by,
)


def stream(path: str, identifier: dict[str, Any] | None = None, **kw: Any) -> Stream:
    return Stream.model_validate({"name": "s", "source": {"path": path, "chunk_rows": 7}, "kind": "attributes",
                                  "identifier": identifier or {"external_id": "user_id"},
                                  "attributes": [{"column": "v"}], **kw})  # fmt: skip


def rows_of(s: Stream, base: Path, part: Partition | None) -> list[tuple[str, int, Any]]:
    """(file name, row number, user) of every row and parse reject a partition reads."""
    files = readers.list_files(s.source, base)
    root = None
    if part is not None:
        files, root = plan_partition(s, files, base, part)
    chunks = readers.read_source(s.source, base, files)
    if root is not None and part is not None:
        chunks = partition_rows(chunks, s, root, part)
    out = []
    for c in chunks:
        users = c.table.column("user_id").to_pylist() if "user_id" in c.table.column_names else [None] * len(c)
        out += [(Path(c.file).name, n, u) for n, u in zip(c.row_numbers, users, strict=True)]
        out += [(Path(r.ref.file).name, r.ref.row, "<reject>") for r in c.rejects]
    return out


def test_parse_partition_spec() -> None:
    assert Partition.parse("2/4") == Partition(2, 4)
    assert Partition.parse(" 1 / 1 ").label == "p1of1"
    for bad in ("0/4", "5/4", "2", "a/b", "2/0", "-1/3"):
        with pytest.raises(ConfigError, match="K/N"):
            Partition.parse(bad)


def test_hash_is_stable_across_processes() -> None:
    # CRC-32 of the UTF-8 text, not Python's salted hash(): every worker computes the same partition.
    assert [Partition(k, 4).owns("u00001") for k in (1, 2, 3, 4)].count(True) == 1
    assert Partition(zlib.crc32(b"u00001") % 4 + 1, 4).owns("u00001")
    assert Partition(zlib.crc32("café".encode()) % 3 + 1, 3).owns("café")


def test_a_single_csv_splits_by_user_completely_disjointly_and_in_order(tmp_path: Path) -> None:
    lines = ["user_id,v"]
    for i in range(300):
        lines.append(f"u{i % 37},{i}")
    lines.insert(50, 'broken,"quote')  # a parse reject: it belongs to exactly one partition too
    lines.insert(120, ",no-user")  # no identifier: goes by its row number
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    s = stream("t.csv")
    whole = rows_of(s, tmp_path, None)
    parts = [rows_of(s, tmp_path, Partition(k, 3)) for k in (1, 2, 3)]
    assert sorted(r for p in parts for r in p) == sorted(whole)  # complete and disjoint
    assert sum(len(p) for p in parts) == len(whole) == 302
    assert all(0 < len(p) < len(whole) for p in parts)
    owner: dict[Any, int] = {}
    for k, p in enumerate(parts):
        for _f, _row, user in p:
            if user not in (None, "<reject>"):
                assert owner.setdefault(user, k) == k  # one user, one partition
        real = [(row, user) for _f, row, user in p if user not in (None, "<reject>")]
        assert real == sorted(real)  # source order kept
    assert split_by(s, [tmp_path / "t.csv"]) == "identifier"


def test_several_files_split_as_whole_files_by_relative_path(tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    for d in range(12):
        (folder / f"day{d:02d}.csv").write_text("user_id,v\n" + "".join(f"u{i},{d}\n" for i in range(5)))
    s = stream("daily")
    files = readers.list_files(s.source, tmp_path)
    root = source_root(s.source, tmp_path)
    assert root == folder and file_key(files[0], root) == "day00.csv"
    split = [partition_files(files, root, Partition(k, 4)) for k in (1, 2, 3, 4)]
    assert sorted(f for part in split for f in part) == files
    assert sum(len(p) for p in split) == 12
    assert split_by(s, files) == "file"
    # The same data mounted elsewhere: the same files in the same partitions.
    moved = tmp_path / "elsewhere" / "daily"
    moved.parent.mkdir()
    folder.rename(moved)
    files2 = readers.list_files(stream("elsewhere/daily").source, tmp_path)
    again = partition_files(files2, source_root(stream("elsewhere/daily").source, tmp_path), Partition(2, 4))
    assert [f.name for f in again] == [f.name for f in split[1]]
    # A glob's files are named from its fixed folder.
    assert source_root(stream("elsewhere/daily/*.csv").source, tmp_path) == moved


def test_partition_by_identifier_keeps_users_together_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    for d in range(3):
        (folder / f"day{d}.csv").write_text("user_id,v\n" + "".join(f"u{i},{d}\n" for i in range(40)))
    s = stream("daily", partition_by="identifier")
    parts = [rows_of(s, tmp_path, Partition(k, 2)) for k in (1, 2)]
    users = [{u for _f, _r, u in p} for p in parts]
    assert users[0].isdisjoint(users[1]) and len(users[0] | users[1]) == 40
    assert sum(len(p) for p in parts) == 120


def test_alias_and_parquet_keys(tmp_path: Path) -> None:
    table = pa.table({"user_id": list(range(200)), "name": [f"n{i % 20}" for i in range(200)],
                      "label": ["crm"] * 200, "v": ["x"] * 200})  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet")
    ints = stream("t.parquet")  # integer ids in Parquet hash as their text, like the same ids in a CSV
    parts = [rows_of(ints, tmp_path, Partition(k, 4)) for k in (1, 2, 3, 4)]
    assert sorted(r for p in parts for r in p) == sorted(rows_of(ints, tmp_path, None))
    assert {u for _f, _r, u in parts[0]} == {u for u in range(200) if Partition(1, 4).owns(str(u))}
    alias = stream("t.parquet", identifier={"user_alias": {"name": "name", "label": "label"}})
    parts = [rows_of(alias, tmp_path, Partition(k, 3)) for k in (1, 2, 3)]
    assert sum(len(p) for p in parts) == 200
    names = [{table.column("name")[r - 1].as_py() for _f, r, _u in p} for p in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(names) for b in names[i + 1:])


@settings(max_examples=40, deadline=None)
@given(users=st.lists(st.sampled_from(["a", "b", "c", "dd", "é", " e ", "", "42"]), min_size=1, max_size=60),
       n=st.integers(min_value=1, max_value=5))  # fmt: skip
def test_property_every_row_in_exactly_one_partition(tmp_path_factory: pytest.TempPathFactory, users: list[str],
                                                     n: int) -> None:  # fmt: skip
    tmp = tmp_path_factory.mktemp("p")
    pq.write_table(pa.table({"user_id": users, "v": list(range(len(users)))}), tmp / "t.parquet")
    s = stream("t.parquet")
    parts = [rows_of(s, tmp, Partition(k, n)) for k in range(1, n + 1)]
    assert sorted(r for p in parts for r in p) == sorted(rows_of(s, tmp, None))
    seen: dict[str, int] = {}
    for k, p in enumerate(parts):
        for _f, _r, u in p:
            if u and u.strip():
                assert seen.setdefault(u.strip(), k) == k
