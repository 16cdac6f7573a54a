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

from connector.delta import keyindex
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
