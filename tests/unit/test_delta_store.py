"""The local delta state file (delta/stores.py, keyindex.py): a log of records with a key index in memory,
correct whatever order keys come in, shared by stores on one file, compacted, and read after a kill -9."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from connector.delta import keyindex, logfile, stores
from connector.delta.stores import SqliteStore


def uuids(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return [f"external_id:{uuid.UUID(int=rnd.getrandbits(128), version=4)}" for _ in range(n)]


def record(key: str, v: int = 0) -> bytes:
    return f'{{"external_id":"{key[12:]}","v":{v}}}'.encode()


def log_rows(path: Path) -> tuple[int, int, int]:
    """(log rows, records logged, index rows) of the file."""
    with sqlite3.connect(path) as db:
        rows, logged = db.execute("SELECT count(*), coalesce(sum(n), 0) FROM delta_log").fetchone()
        (index,) = db.execute("SELECT count(*) FROM delta_index").fetchone()
    return rows, logged, index


def test_random_keys_written_in_batches_read_back_in_any_order(tmp_path: Path) -> None:
    keys = uuids(5000)
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    for a in range(0, len(keys), 250):
        store.write("users", [(k, record(k)) for k in keys[a : a + 250]], [])
    shuffled = random.Random(2).sample(keys, len(keys))
    assert store.lookup("users", shuffled) == [record(k) for k in shuffled]
    assert store.lookup("users", ["external_id:nobody"]) == [None] and store.lookup("other", keys[:3]) == [None] * 3
    assert store.keys("users") == sorted(keys) and store.count("users") == 5000 and store.empty("other")
    store.close()
    again = SqliteStore(tmp_path / "s.sqlite", read_only=True)  # a dry run of the next run
    assert again.lookup("users", keys[:100]) == [record(k) for k in keys[:100]] and again.count("users") == 5000


def test_a_row_equal_to_its_record_is_answered_with_the_row_itself(tmp_path: Path) -> None:
    keys = uuids(3)
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    store.write("users", [(k, record(k)) for k in keys], [])
    rows = [bytes(record(keys[0])), record(keys[1], 7), record(keys[2])]
    got = store.lookup("users", keys, rows)
    assert got[0] is rows[0] and got[2] is rows[2]  # no record read for them
    assert got[1] == record(keys[1]) and got[1] is not rows[1]  # differs: the record, read from the file


def test_later_writes_win_and_forgetting_removes_a_key(tmp_path: Path) -> None:
    a, b, c = uuids(3)
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    store.write("users", [(a, b"1"), (b, b"1")], [])
    store.write("users", [(a, b"2")], [b])
    store.write("users", [(c, b"3")], [c])  # forget then confirm: confirmed
    assert store.lookup("users", [a, b, c]) == [b"2", None, b"3"] and store.count("users") == 2
    store.close()
    reopened = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    assert reopened.lookup("users", [a, b, c]) == [b"2", None, b"3"] and reopened.keys("users") == sorted([a, c])


def test_two_keys_with_one_hash_are_never_confused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash collision (about 1 in 10**7 at 10M keys): the later key wins the index entry and the earlier
    is unknown (sent again whole: safe), never answered with the other key's record."""
    monkeypatch.setattr(keyindex, "_key_hash", lambda b: 42)
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    store.write("users", [("external_id:a", b'{"v":1}')], [])
    store.write("users", [("external_id:b", b'{"v":2}')], [])
    assert store.lookup("users", ["external_id:a", "external_id:b"]) == [None, b'{"v":2}']
    assert store.lookup("users", ["external_id:a"], [b'{"v":1}']) == [None]  # its row is not b's record


def test_another_store_on_the_same_file_sees_what_was_written(tmp_path: Path) -> None:
    one = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    two = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    one.write("users", [("external_id:a", b"1")], [])
    assert two.lookup("users", ["external_id:a"]) == [b"1"]
    two.write("users", [("external_id:b", b"2")], ["external_id:a"])
    one.write("users", [("external_id:c", b"3")], [])  # its index was behind: read again, then ours
    assert one.lookup("users", ["external_id:a", "external_id:b", "external_id:c"]) == [None, b"2", b"3"]


def test_the_end_of_a_run_compacts_the_log_and_the_index(tmp_path: Path) -> None:
    keys = uuids(12_000)
    path = tmp_path / "s.sqlite"
    logged_after = []
    for v in range(3):  # three runs: every key confirmed again each time, 100 transactions a run
        store = SqliteStore(path, read_only=False)
        for a in range(0, len(keys), 120):
            store.write("users", [(k, record(k, v)) for k in keys[a : a + 120]], [])
        store.close()
        _rows, logged, index = log_rows(path)
        assert index == 1  # the run's 100 index rows written again as one
        logged_after.append(logged)
    # run 2 leaves as many replaced records as live ones; run 3's replaced ones outnumber them: rewritten
    assert logged_after == [12_000, 24_000, 12_000]
    store = SqliteStore(path, read_only=True)
    assert store.lookup("users", keys) == [record(k, 2) for k in keys] and store.keys("users") == sorted(keys)


def pages(path: Path) -> tuple[int, int]:
    """(page_count, freelist_count) of the file."""
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA freelist_count").fetchone()[0]


def full_runs(path: Path, keys: list[str], runs: range) -> list[tuple[int, int]]:
    """Runs that confirm every key again (a padded record, so that pages count); the pages after each."""
    after = []
    for v in runs:
        store = SqliteStore(path, read_only=False)
        for a in range(0, len(keys), 100):
            store.write("users", [(k, record(k, v) + b" " * 300) for k in keys[a : a + 100]], [])
        store.close()
        after.append(pages(path))
    return after


def test_a_rewrite_that_leaves_most_pages_free_gives_them_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite reuses free pages but never returns them: after the rewrite of the log, a VACUUM does."""
    monkeypatch.setattr(stores, "_REWRITE_MIN", 10)
    path, keys = tmp_path / "s.sqlite", uuids(2000)
    (_, free1), (pages2, _), (pages3, free3) = full_runs(path, keys, range(3))  # run 3 rewrites the log
    assert free1 == 0 and pages3 < pages2 * 0.6 and free3 * 2 <= pages3
    assert full_runs(path, keys, range(3, 6))[-1][0] < pages2  # and again: the file does not grow run after run
    store = SqliteStore(path, read_only=True)
    assert store.lookup("users", keys[:3]) == [record(k, 5) + b" " * 300 for k in keys[:3]]


class FullDisk:
    """A connection whose VACUUM fails as on a full disk (sqlite3.Connection's methods cannot be patched)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "VACUUM":
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_a_failed_vacuum_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "_REWRITE_MIN", 10)
    path, keys = tmp_path / "s.sqlite", uuids(500)
    full_runs(path, keys, range(2))
    store = SqliteStore(path, read_only=False)
    store.write("users", [(k, record(k, 2)) for k in keys], [])
    store._db = FullDisk(store._db)  # type: ignore[arg-type,assignment]
    store.close()  # no error: the rewrite committed, the VACUUM did not happen
    assert log_rows(path)[1] == 500 and pages(path)[1] > 0
    store = SqliteStore(path, read_only=True)
    assert store.lookup("users", keys) == [record(k, 2) for k in keys]


def test_a_file_of_the_previous_layout_is_read_by_a_dry_run_and_converted_by_a_run(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE delta (stream TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, "
                   "PRIMARY KEY (stream, key)) WITHOUT ROWID")  # fmt: skip
        db.executemany("INSERT INTO delta VALUES (?, ?, ?)", [("users", f"external_id:u{i}", b"%d" % i) for i in range(300)])
    dry = SqliteStore(path, read_only=True)
    assert dry.lookup("users", ["external_id:u7", "external_id:x"]) == [b"7", None] and dry.count("users") == 300
    dry.close()
    with sqlite3.connect(path) as db:  # the dry run changed nothing
        assert {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {"delta"}
    run = SqliteStore(path, read_only=False)
    assert run.lookup("users", ["external_id:u7", "external_id:u299"]) == [b"7", b"299"]
    assert run.keys("users") == sorted(f"external_id:u{i}" for i in range(300))
    with sqlite3.connect(path) as db:
        assert "delta" not in {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


_KILLED = """
import os, signal, sys
from pathlib import Path
from connector.delta.stores import SqliteStore
store = SqliteStore(Path(sys.argv[1]), read_only=False)
for a in range(0, 3000, 100):
    store.write("users", [(f"external_id:u{i}", b"%d" % i) for i in range(a, a + 100)], [])
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_was_committed_before_a_kill_9_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", _KILLED, str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == -signal.SIGKILL and res.stdout.strip() == "written", res.stderr
    store = SqliteStore(path, read_only=False)
    keys = [f"external_id:u{i}" for i in range(3000)]
    assert store.lookup("users", keys) == [b"%d" % i for i in range(3000)] and store.count("users") == 3000


# ---- several stores on one file: compaction, staleness, read transactions ---------------------------------
def many_rows(store: SqliteStore, keys: list[str], v: int = 0) -> None:
    """One transaction per key: more index rows than the end of a run leaves as they are."""
    for k in keys:
        store.write("users", [(k, record(k, v))], [])


def test_a_write_by_another_store_while_a_run_ends_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a run decides and compacts in one write transaction: another store's write waits for it
    (or fails and is made again), never lands between what the compaction read and what it wrote."""
    path = tmp_path / "s.sqlite"
    keys = uuids(100)
    one, two = SqliteStore(path, read_only=False), SqliteStore(path, read_only=False)
    many_rows(one, keys)
    assert two._db is not None
    two._db.execute("PRAGMA busy_timeout = 0")  # a write that must wait fails at once
    late: list[str] = []
    indexes = SqliteStore._indexes

    def meanwhile(self: SqliteStore) -> object:
        out = indexes(self)
        if self is one and not late:
            late.append("tried")
            try:
                two.write("users", [("external_id:new", b"1")], [keys[0]])
                late.append("written")
            except sqlite3.OperationalError:  # the compaction holds the write lock: written after it
                pass
        return out

    monkeypatch.setattr(SqliteStore, "_indexes", meanwhile)
    one.close()
    monkeypatch.undo()
    if late != ["tried", "written"]:
        two.write("users", [("external_id:new", b"1")], [keys[0]])
    two.close()
    again = SqliteStore(path, read_only=True)
    assert again.lookup("users", [keys[0], keys[1], "external_id:new"]) == [None, record(keys[1]), b"1"]
    assert again.count("users") == 100


def test_a_store_reads_the_index_another_store_compacted(tmp_path: Path) -> None:
    """Row ids never go back: the compacted index row comes after every row another store has read, so it
    reads it, and its own later writes."""
    path = tmp_path / "s.sqlite"
    keys = uuids(100)
    one, two = SqliteStore(path, read_only=False), SqliteStore(path, read_only=False)
    many_rows(one, keys)
    assert two.count("users") == 100  # two has read every row
    one.close()
    two.write("users", [("external_id:new", b"1")], [keys[5]])
    assert two.lookup("users", ["external_id:new", keys[5], keys[6]]) == [b"1", None, record(keys[6])]
    assert two.count("users") == 100 and log_rows(path)[2] == 2


def test_a_store_whose_index_rows_another_store_compacted_away_reads_it_again(tmp_path: Path) -> None:
    """Rows two had not read were replaced by one's compacted index (a key forgotten among them): two reads
    the index again whole rather than keep the key."""
    path = tmp_path / "s.sqlite"
    keys = uuids(100)
    one, two = SqliteStore(path, read_only=False), SqliteStore(path, read_only=False)
    many_rows(one, keys)
    assert two.count("users") == 100
    one.write("users", [], [keys[0]])
    one.close()
    assert two.lookup("users", keys[:2]) == [None, record(keys[1])] and two.count("users") == 99
    assert two.keys("users") == sorted(keys[1:])


def test_a_store_reads_the_records_another_store_rewrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One's compaction rewrites the log (the rows two's index named are gone): two reads the new names."""
    monkeypatch.setattr(stores, "_REWRITE_MIN", 10)
    path = tmp_path / "s.sqlite"
    keys = uuids(100)
    one, two, three = (SqliteStore(path, read_only=False) for _ in range(3))
    for v in range(3):
        many_rows(one, keys, v)
    assert two.count("users") == 100  # two is up to date; three read before the last writes
    many_rows(one, keys[:10], 9)
    one.close()
    assert log_rows(path)[1] == 100  # rewritten: only the live records
    for store in (two, three):
        want = [record(k, 9) for k in keys[:10]] + [record(k, 2) for k in keys[10:]]
        assert store.lookup("users", keys) == want and store.keys("users") == sorted(keys)


def test_a_question_sees_one_state_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another store's compaction between the index's catch-up and the reading of the records does not
    make the records vanish: one read transaction covers both."""
    monkeypatch.setattr(stores, "_REWRITE_MIN", 10)
    path = tmp_path / "s.sqlite"
    keys = uuids(50)
    one, two = SqliteStore(path, read_only=False), SqliteStore(path, read_only=False)
    for v in range(3):
        many_rows(one, keys, v)
    records = logfile.records

    def compacted_meanwhile(db: sqlite3.Connection, *args: object) -> object:
        if db is two._db and one._db is not None:
            one.close()
        return records(db, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(logfile, "records", compacted_meanwhile)
    assert two.lookup("users", keys) == [record(k, 2) for k in keys]
    assert one._db is None and log_rows(path)[1] == 50  # the compaction did happen meanwhile


# ---- the previous layout, read by a dry run while a run converts it ------------------------------------
def legacy_file(path: Path, n: int = 300) -> list[str]:
    keys = [f"external_id:u{i}" for i in range(n)]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE delta (stream TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, "
                   "PRIMARY KEY (stream, key)) WITHOUT ROWID")  # fmt: skip
        db.executemany("INSERT INTO delta VALUES ('users', ?, ?)", [(k, k.encode()) for k in keys])
    return keys


def answers(store: SqliteStore, keys: list[str]) -> tuple[list[bytes | None], list[str], int]:
    return store.lookup("users", [keys[7], "external_id:x"]), store.keys("users"), store.count("users")


def test_a_dry_run_reads_the_previous_layout_when_a_conversion_was_cut_short(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The run created the new tables, then its conversion failed: `delta` is still what holds the state."""
    path = tmp_path / "old.sqlite"
    keys = legacy_file(path)

    def cut(*args: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(logfile, "append", cut)
    with pytest.raises(OSError, match="killed"):
        SqliteStore(path, read_only=False)
    monkeypatch.undo()
    with sqlite3.connect(path) as db:
        assert {"delta", "delta_log", "delta_index"} <= {t for (t,) in db.execute("SELECT name FROM sqlite_master")}
    dry = SqliteStore(path, read_only=True)
    assert answers(dry, keys) == ([keys[7].encode(), None], sorted(keys), 300)


def test_a_dry_run_reads_the_new_tables_once_a_run_converted_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    keys = legacy_file(path)
    before = SqliteStore(path, read_only=True)  # opened on the previous layout
    assert before.count("users") == 300
    run = SqliteStore(path, read_only=False)  # converts
    run.write("users", [("external_id:x", b"x")], [keys[0]])
    run.close()
    after = SqliteStore(path, read_only=True)  # opened on the new layout
    for dry in (before, after):
        assert answers(dry, keys) == ([keys[7].encode(), b"x"], sorted([*keys[1:], "external_id:x"]), 300)


# ---- failures: the real error, not a failed ROLLBACK; a store that stays usable ---------------------------
def test_a_full_disk_is_the_error_a_write_raises(tmp_path: Path) -> None:
    """SQLite rolls the transaction back itself on SQLITE_FULL: no ROLLBACK then, whose own error would
    hide the real one."""
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    store.write("users", [("external_id:a", b"1")], [])
    assert store._db is not None
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        store.write("users", [(f"external_id:{i}", b"x" * 1000) for i in range(100)], [])
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.write("users", [("external_id:b", b"2")], [])
    assert store.lookup("users", ["external_id:a", "external_id:b", "external_id:1"]) == [b"1", b"2", None]


class FailingCommit:
    """A connection whose next COMMIT fails (as a full disk can make it), nothing else changed."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.fail = db, True

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_a_failed_commit_is_rolled_back_and_the_store_goes_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    store.write("users", [("external_id:a", b"1")], [])
    assert store._db is not None
    store._db = FailingCommit(store._db)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        store.write("users", [("external_id:b", b"2")], ["external_id:a"])
    store.write("users", [("external_id:c", b"3")], [])  # no transaction left open
    assert store.lookup("users", ["external_id:a", "external_id:b", "external_id:c"]) == [b"1", None, b"3"]


def test_a_record_missing_from_the_log_is_forgotten_by_the_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rewrite pairs records with index entries by name: a key whose record is gone is forgotten (sent
    again next time), the others keep theirs."""
    monkeypatch.setattr(stores, "_REWRITE_MIN", 10)
    path = tmp_path / "s.sqlite"
    keys = uuids(300)
    store = SqliteStore(path, read_only=False)
    for v in range(3):
        for a in range(0, 300, 100):
            store.write("users", [(k, record(k, v)) for k in keys[a : a + 100]], [])
    with sqlite3.connect(path) as db:  # the last run's log row of keys[100:200]
        db.execute("DELETE FROM delta_log WHERE id = (SELECT max(id) - 1 FROM delta_log)")
    store.close()
    again = SqliteStore(path, read_only=True)
    assert again.lookup("users", keys) == [record(k, 2) for k in keys[:100]] + [None] * 100 + [record(k, 2) for k in keys[200:]]
    assert again.count("users") == 200 and log_rows(path)[1] == 200
