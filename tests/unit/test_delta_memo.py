"""delta/memo.py: a chunk's digest follows its cells (and only them), and the file gives back exactly what was
put, never a damaged entry, and is not rewritten when a run found every chunk in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from connector.delta.memo import Memo, content


def table(ages: list[int | None], names: list[str | None] | None = None) -> pa.Table:
    n = len(ages)
    return pa.table({"user_id": [f"u{i}" for i in range(n)], "age": pa.array(ages, pa.int64()),
                     "name": pa.array(names if names is not None else ["Ann"] * n, pa.string())})  # fmt: skip


def test_the_digest_follows_the_cells_the_types_and_the_seed() -> None:
    base = content(table([1, 2, 3]), b"seed")
    assert base is not None and base == content(table([1, 2, 3]), b"seed")
    assert content(table([1, 2, 4]), b"seed") != base  # a number
    assert content(table([1, 2, 3], ["Ann", "Bob", "Ann"]), b"seed") != base  # a text
    assert content(table([1, None, 3]), b"seed") != base  # a null
    assert content(table([1, 2, 3]), b"other") != base  # the print's seed (configuration, versions)
    assert content(table([1, 2, 3]).cast(pa.schema([("user_id", pa.string()), ("age", pa.int32()), ("name", pa.string())])),
                   b"seed") != base  # fmt: skip
    # Where one text ends and the next begins counts, not only the bytes.
    assert content(table([1, 1], ["ab", "c"]), b"s") != content(table([1, 1], ["a", "bc"]), b"s")


def test_a_slice_has_the_digest_of_the_same_values_unsliced() -> None:
    """SQL sources cut their batches into chunks (arrays starting anywhere in their buffers, bitmaps too)."""
    ages = [1, None, 3, 4, None, 6, 7, 8, 9, None, 11]
    names = ["a", "bb", None, "dddd", "e", "ff", "g", None, "iii", "j", "k"]
    whole = table(ages, names)
    for start in (1, 3, 8, 9):
        part = whole.slice(start, 2)
        assert part.column("age").chunk(0).offset == start
        fresh = pa.table({"user_id": part.column("user_id").to_pylist(), "age": pa.array(part.column("age").to_pylist(), pa.int64()),
                          "name": pa.array(part.column("name").to_pylist(), pa.string())})  # fmt: skip
        assert content(part, b"s") == content(fresh, b"s") is not None
    assert content(whole.slice(1, 2), b"s") != content(whole.slice(2, 2), b"s")
    flags = pa.table({"b": pa.array([True, False, None, True, True, False, True, None, False, True])})
    assert content(flags.slice(3, 5), b"s") == content(pa.table({"b": pa.array([True, True, False, True, None])}), b"s")


def test_layouts_it_does_not_read_are_never_remembered() -> None:
    t = pa.table({"plan": pa.array(["a", "b"]).dictionary_encode()})
    assert content(t, b"s") is None
    assert content(pa.table({"tags": pa.array([[1], [2]])}), b"s") is None


def test_the_null_bits_past_the_end_do_not_count() -> None:
    a = pa.array([1, None, 3], pa.int64())
    bits = bytearray(a.buffers()[0].to_pybytes())
    bits[0] |= 0b1111_1000  # bits past the array's length, which Arrow leaves as they were
    b = pa.Array.from_buffers(pa.int64(), 3, [pa.py_buffer(bytes(bits)), a.buffers()[1]], null_count=1)
    assert content(pa.table({"x": a}), b"s") == content(pa.table({"x": b}), b"s")


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=np.int64), rng.integers(-(2**62), 2**62, n), rng.integers(1, 2**62, n)


def test_what_was_put_comes_back_and_a_run_finding_everything_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "memo" / "s"
    at, h, p = arrays(50, 1)
    first = Memo(path)
    assert first.get("d1") is None
    first.put("d1", (at, h), p)
    first.put("d2", None, p[:10])  # users not made (a first run without mirror mode)
    first.close(True)
    again = Memo(path)
    got = again.get("d1")
    assert got is not None and all(np.array_equal(x, y) for x, y in zip(got, (at, h, p), strict=True))  # type: ignore[arg-type]
    got2 = again.get("d2")
    assert got2 is not None and got2[0] is None and np.array_equal(got2[2], p[:10])
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    again.again("d1")
    again.put("d2", None, p[:10])
    again.close(True)
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp  # the same chunks: not written again
    assert sorted(x.name for x in path.parent.iterdir()) == ["s"]  # no temporary file left


def test_a_changed_run_rewrites_the_file_with_its_own_chunks(tmp_path: Path) -> None:
    path = tmp_path / "s"
    at, h, p = arrays(20, 2)
    m = Memo(path)
    m.put("d1", (at, h), p)
    m.put("d2", (at, h), p)
    m.close(True)
    m = Memo(path)
    m.again("d1")
    m.put("d3", (at[:5], h[:5]), p[:5])  # d2 not read this time
    m.close(True)
    m = Memo(path)
    assert m.get("d2") is None and m.get("d1") is not None
    got = m.get("d3")
    assert got is not None and np.array_equal(got[1], h[:5])  # type: ignore[arg-type]
    m.close(False)


def test_a_read_cut_short_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "s"
    at, h, p = arrays(20, 3)
    m = Memo(path)
    m.put("d1", (at, h), p)
    m.close(True)
    m = Memo(path)
    m.put("d9", (at, h), p)
    m.close(False)
    m = Memo(path)
    assert m.get("d1") is not None and m.get("d9") is None
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_file_is_never_trusted(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s"
    at, h, p = arrays(100, 4)
    m = Memo(path)
    m.put("d1", (at, h), p)
    m.close(True)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[900] ^= 1  # inside the arrays
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"x" * 40)
    path.write_bytes(bytes(data))
    m = Memo(path)
    assert m.get("d1") is None
    m.put("d1", (at, h), p)  # made again, and the file written whole again
    m.close(True)
    got = Memo(path).get("d1")
    assert got is not None and np.array_equal(got[2], p)
