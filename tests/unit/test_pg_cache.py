"""The local copy of the PostgreSQL state's index (connector/delta/pg_cache.py) as a file: read back only
whole, for its pipeline, at exactly the stamp it was written at."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from connector.delta import pg_cache
from connector.delta.pg_cache import IndexCache

STAMP = (16384, ("all", 3, "a1b2"), ("p1of2", 1, "c3d4"))


def arrays() -> pg_cache.Arrays:
    h = np.array([-5, 2, 9], np.int64)
    return {"users": (h, h * 3 + 1, np.array([0, 7, 0], np.int64)), "events": (h[:1], h[:1] + 1, h[:1] * 0)}


def test_a_copy_reads_back_at_its_stamp(tmp_path: Path) -> None:
    copy = IndexCache(tmp_path / "state" / "p.sqlite.pg-index", "p")
    copy.save(STAMP, arrays())
    back = copy.load(STAMP)
    assert back is not None and list(back) == ["users", "events"]
    for name, want in arrays().items():
        assert [a.tolist() for a in back[name]] == [a.tolist() for a in want]
    assert not list(tmp_path.glob("state/*.tmp"))  # written under a temporary name, then renamed


@pytest.mark.parametrize("other", [
    (16385, ("all", 3, "a1b2"), ("p1of2", 1, "c3d4")),  # the table made again
    (16384, ("all", 4, "a1b2"), ("p1of2", 1, "c3d4")),  # a write since
    (16384, ("all", 3, "a1b2")),  # a partition's gen gone
    (16384, ("all", 3, "ffff"), ("p1of2", 1, "c3d4")),  # another database
])  # fmt: skip
def test_a_copy_at_another_stamp_is_not_read(tmp_path: Path, other: pg_cache.Stamp) -> None:
    copy = IndexCache(tmp_path / "p.pg-index", "p")
    copy.save(STAMP, arrays())
    assert copy.load(other) is None


def test_a_damaged_truncated_or_foreign_copy_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "p.pg-index"
    IndexCache(path, "p").save(STAMP, arrays())
    whole = path.read_bytes()
    assert IndexCache(path, "q").load(STAMP) is None  # another pipeline's
    for damaged in (whole[:-8], whole[:20], whole[:-1] + bytes([whole[-1] ^ 1]), b"not a copy", b""):
        path.write_bytes(damaged)
        assert IndexCache(path, "p").load(STAMP) is None
    assert IndexCache(tmp_path / "missing", "p").load(STAMP) is None


def test_a_copy_that_cannot_be_written_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("x")
    copy = IndexCache(tmp_path / "file" / "p.pg-index", "p")  # its folder is a file
    with caplog.at_level(logging.WARNING):
        copy.save(STAMP, arrays())
    assert "the next run reads the index from the server" in caplog.text
    assert copy.load(STAMP) is None


def test_stamps_name_the_table_and_every_partition() -> None:
    assert pg_cache.stamp_of([]) is None
    assert pg_cache.stamp_of([(None, None, None, None)]) is None  # no table
    assert pg_cache.stamp_of([(7, None, None, None)]) is None  # no gen row yet: nothing vouched for
    stamp = pg_cache.stamp_of([(16384, "all", 3, "a1b2"), (16384, "p1of2", 1, "c3d4")])
    assert stamp == STAMP
    assert pg_cache.bumped(STAMP, "p1of2", 2, "e5") == (16384, ("all", 3, "a1b2"), ("p1of2", 3, "e5"))
    assert pg_cache.bumped(STAMP, "p1of2", 0, "") == STAMP
