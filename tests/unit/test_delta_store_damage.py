"""A damaged delta state file (delta/stores.py): whatever page is damaged, opening it and asking it either
answers or stops with a ConfigError that names the file and says what to do, never an sqlite3 traceback.
The run itself (exit code 2 before anything is sent) is tested in tests/integration/test_delta_sync.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connector.delta.stores import PAGE_SIZE, SqliteStore
from connector.delta.watermark import Watermarks
from connector.errors import ConfigError

PAGE = PAGE_SIZE  # the state file's page (a new file's: stores.py)


def state_file(path: Path, n: int = 6000) -> list[str]:
    """A state file of about 1 MB: n random keys confirmed 250 a transaction."""
    rnd = random.Random(3)
    keys = [f"external_id:{rnd.getrandbits(64):016x}" for _ in range(n)]
    store = SqliteStore(path, read_only=False)
    for a in range(0, n, 250):
        store.write("users", [(k, b'{"external_id":"%s","plan":"pro"}' % k.encode()) for k in keys[a : a + 250]], [])
    store.close()
    return keys


def damage(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def ask(path: Path, keys: list[str], *, read_only: bool) -> None:
    store = SqliteStore(path, read_only=read_only)
    try:
        store.lookup("users", keys)
        store.keys("users")
        store.count("users")
    finally:
        store.close()


def assert_says_what_to_do(err: ConfigError, path: Path, what: str) -> None:
    msg = str(err)
    assert f"state file {path} is damaged: {what}" in msg and "\n" not in msg
    assert "delete it to start over" in msg and "restore it from a backup" in msg


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_damaged_in_the_middle_stops_the_run_as_it_opens(tmp_path: Path, read_only: bool) -> None:
    """A page of noise over the third page (the index's first): found as the store opens, before a question."""
    path = tmp_path / "s.sqlite"
    state_file(path)
    damage(path, 2 * PAGE, random.Random(1).randbytes(PAGE))
    with pytest.raises(ConfigError) as err:
        SqliteStore(path, read_only=read_only)
    assert_says_what_to_do(err.value, path, "database disk image is malformed")


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_that_is_not_a_database_says_what_to_do(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(random.Random(2).randbytes(3 * PAGE))
    with pytest.raises(ConfigError) as err:
        SqliteStore(path, read_only=read_only)
    assert_says_what_to_do(err.value, path, "file is not a database")
    with pytest.raises(ConfigError) as err:  # the watermarks share the file: the same words
        Watermarks(path, read_only=read_only, full=False)
    assert_says_what_to_do(err.value, path, "file is not a database")


def test_whatever_page_is_damaged_a_store_answers_or_says_what_to_do(tmp_path: Path) -> None:
    """Noise over one page at a time (a sample of them): SQLite finds most; noise inside a blob it cannot
    check gives other bytes (a key that is not UTF-8 is damage too), never another exception."""
    path = tmp_path / "s.sqlite"
    keys = state_file(path)
    good = path.read_bytes()
    rnd = random.Random(4)
    pages = rnd.sample(range(1, len(good) // PAGE), 40)
    outcomes = {"answered": 0, "damaged": 0}
    for page in pages:
        for read_only in (True, False):
            path.write_bytes(good)
            damage(path, page * PAGE, rnd.randbytes(PAGE))
            try:
                ask(path, keys, read_only=read_only)
                outcomes["answered"] += 1
            except ConfigError as err:
                assert_says_what_to_do(err, path, "database disk image is malformed")
                outcomes["damaged"] += 1
    assert outcomes["damaged"] > 0


@pytest.mark.parametrize("read_only", [False, True])
def test_damaged_watermark_tables_stop_the_run_saying_what_to_do(tmp_path: Path, read_only: bool) -> None:
    """An incremental stream's watermark and done rows in a damaged file: the first read says so, no sqlite3
    traceback (delta/marks.py)."""
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    mark = marks.mark("ticks", "updated_at", ordered=True)
    mark.take([], [], [], below=False)
    marks.db.add_done("ticks", [(f"id{i}", "5", 5) for i in range(3000)])
    marks.db.put("ticks", "updated_at", "5", "2026-12-03T00:00:00+00:00")
    marks.close()
    size = path.stat().st_size
    assert size > 4 * PAGE
    for page in range(1, size // PAGE):  # every page but the schema's: each read answers or says what to do
        copy = tmp_path / f"p{page}.sqlite"
        copy.write_bytes(path.read_bytes())
        damage(copy, page * PAGE, random.Random(page).randbytes(PAGE))
        try:
            again = Watermarks(copy, read_only=read_only)
            again.stored("ticks", "updated_at")
            again.mark("ticks", "updated_at", ordered=True)._done({f"id{i}" for i in range(3000)})
            again.close()
        except ConfigError as err:
            assert_says_what_to_do(err, copy, "")
