"""The local copy of the PostgreSQL state's index (pg_cache.py): a re-run on the machine that wrote it reads
no index from the server; a copy made stale by any other write (another machine, another partition, a
process of an earlier version, SQL by hand, a table made again, another database) or damaged is never
used; a table of the layout before the gens gets them from the first run that may write. A real server on
loopback; each test that counts reads has a database of its own (a write by hand elsewhere on the server
makes every pipeline's copies stale there, by design)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from delta_worker import users
from sql_helpers import pg_exec
from sql_helpers import pg_rows as rows
from test_delta_state_pg import ROOT, WORKER
from test_pg_index import deliver, own_database

from connector.delta import DeltaState, pg_cache
from connector.delta.pg_store import TABLE, PgStore
from connector.readers.sql.drivers import Database

pytestmark = pytest.mark.timeout(180)
LOAD = "SELECT stream, key_hash"  # the index read from the server (pg_store._LOAD)


@pytest.fixture
def db_url(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "copy_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    url = own_database(postgres_url, name)
    yield url
    pg_exec(postgres_url, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The index reads of the stores opened since (the statements of the state's reads that start with LOAD)."""
    seen: list[str] = []
    real = Database.transaction_table

    def spy(self: Database, statements: list[tuple[str, Any]]) -> Any:
        seen.extend(sql for sql, _ in statements if sql.startswith(LOAD))
        return real(self, statements)

    monkeypatch.setattr(Database, "transaction_table", spy)
    return seen


def opened(url: str, copy: Path, pipeline: str = "p", *, part: str = "all", read_only: bool = False) -> DeltaState:
    store = PgStore("STATE_PG_URL", pipeline, {"STATE_PG_URL": url}, read_only=read_only, cache=copy, part=part)
    return DeltaState(store, read_only=read_only)


def test_a_rerun_on_the_same_machine_reads_no_index_and_keeps_its_writes(db_url: str, tmp_path: Path,
                                                                         loads: list[str]) -> None:  # fmt: skip
    copy = tmp_path / "p.pg-index"
    first = opened(db_url, copy)
    assert deliver(first, range(300)) == (300, 0)
    first.close()
    assert copy.exists() and len(loads) == 1  # the first run read the (empty) index; its close wrote the copy
    again = opened(db_url, copy)
    assert len(loads) == 1  # from the copy: nothing read
    assert deliver(again, range(300)) == (0, 300)
    assert deliver(again, range(300), changed=range(0, 300, 10)) == (30, 270)
    again.close()  # wrote, and nothing else did: the copy is written again, at the new stamp
    third = opened(db_url, copy)
    assert len(loads) == 1
    assert deliver(third, range(300), changed=range(0, 300, 10)) == (0, 300)
    third.close()
    dry = opened(db_url, copy, read_only=True)  # a dry run uses a right copy too
    assert dry.changed("users", "attributes", users(range(300), changed=range(0, 300, 10)))[1] == 300
    dry.close()
    assert len(loads) == 1


def test_another_process_writing_makes_the_copy_stale(db_url: str, tmp_path: Path, loads: list[str]) -> None:
    """Another machine (its own copy, its own process) changes users; this machine's copy is not used after."""
    mine, theirs = tmp_path / "mine.pg-index", tmp_path / "theirs.pg-index"
    first = opened(db_url, mine)
    deliver(first, range(300))
    first.close()
    env = {**os.environ, "STATE_PG_URL": db_url, "PYTHONPATH": str(ROOT), "STATE_PG_INDEX_COPY": str(theirs)}
    other = subprocess.run([sys.executable, str(WORKER), "rounds", "p", "0", "300"], env=env, capture_output=True,
                           text=True, timeout=150)  # fmt: skip
    assert other.returncode == 0, other.stderr[-2000:]
    assert json.loads(other.stdout) == [[0, 300], [30, 270], [0, 300]]  # every 10th user changed there
    assert theirs.exists()
    s = opened(db_url, mine)
    assert len(loads) == 2  # stale: read from the server
    assert deliver(s, range(300), changed=range(0, 300, 10)) == (0, 300)  # the other process's writes are seen
    s.close()


@pytest.mark.parametrize("how", ["delete", "update", "truncate", "insert", "copy", "damaged", "table made again"])
def test_a_stale_or_damaged_copy_is_never_used(db_url: str, tmp_path: Path, loads: list[str], how: str) -> None:
    """Writes without this version's gen bump (a process of an earlier version, SQL by hand) go through the
    trigger; a damaged file fails its checksum; a table dropped and made again has another oid."""
    copy = tmp_path / "p.pg-index"
    first = opened(db_url, copy)
    deliver(first, range(100))
    first.close()
    if how == "delete":  # as an earlier version forgets a user before sending it
        pg_exec(db_url, f"DELETE FROM {TABLE} WHERE key = 'external_id:u7'")
    elif how == "update":  # as an earlier version confirms another record
        pg_exec(db_url, f"""UPDATE {TABLE} SET record = '{{"external_id":"u7","plan":"max","age":7}}', digest = 42 """
                        "WHERE key = 'external_id:u7'")  # fmt: skip
    elif how == "truncate":
        pg_exec(db_url, f"TRUNCATE {TABLE}")
    elif how == "insert":  # a write of another pipeline by an earlier version: every copy is stale
        pg_exec(db_url, f"INSERT INTO {TABLE} (pipeline, stream, key, record, key_hash, digest) "
                        "VALUES ('other', 'users', 'k', '{}', 1, 2)")  # fmt: skip
    elif how == "copy":  # an earlier version appends new keys by COPY (ADBC's ingest), as this one does
        import adbc_driver_postgresql.dbapi as pg
        import pyarrow as pa

        with pg.connect(db_url) as con, con.cursor() as cur:
            cur.adbc_ingest(TABLE, pa.table({"pipeline": ["p"], "stream": ["users"], "key": ["external_id:u500"],
                                             "record": ["{}"], "key_hash": [1], "digest": [2]}), mode="append")  # fmt: skip
            con.commit()
    elif how == "damaged":
        data = bytearray(copy.read_bytes())
        data[-3] ^= 0xFF
        copy.write_bytes(bytes(data))
    else:
        pg_exec(db_url, f"DROP TABLE {TABLE}")
        opened(db_url, tmp_path / "elsewhere.pg-index").close()  # made again by another run, nothing in it
    s = opened(db_url, copy)
    assert len(loads) == 2 + (how == "table made again")  # read from the server, not the copy
    sent = {"delete": 1, "update": 1, "truncate": 100, "insert": 0, "copy": 0, "damaged": 0, "table made again": 100}[how]
    assert deliver(s, range(100)) == (sent, 100 - sent)
    s.close()


def test_a_copy_from_another_database_is_not_used(db_url: str, postgres_url: str, tmp_path: Path,
                                                  loads: list[str]) -> None:  # fmt: skip
    """Same pipeline, same number of writes in two databases: the gens are equal, their random tokens not."""
    copy = tmp_path / "p.pg-index"
    other = own_database(postgres_url, "copy_another_db")
    try:
        for url, ids in ((other, range(50)), (db_url, range(100))):
            s = opened(url, copy)
            deliver(s, ids)
            s.close()
        s = opened(other, copy)  # the copy is db_url's
        assert len(loads) == 3
        assert deliver(s, range(100)) == (50, 50)
        s.close()
    finally:
        pg_exec(postgres_url, "DROP DATABASE copy_another_db WITH (FORCE)")


def test_a_partition_writing_meanwhile_leaves_no_copy(db_url: str, tmp_path: Path, loads: list[str]) -> None:
    """Two partitions run at once: neither index holds the other's writes, so neither writes its copy."""
    one, two = tmp_path / "p1.pg-index", tmp_path / "p2.pg-index"
    a, b = opened(db_url, one, part="p1of2"), opened(db_url, two, part="p2of2")
    deliver(a, range(0, 100))
    deliver(b, range(100, 200))
    a.close()
    b.close()
    assert not one.exists() and not two.exists()
    whole = opened(db_url, one)
    assert deliver(whole, range(200)) == (0, 200)  # read from the server: both partitions' users
    whole.close()
    assert one.exists()  # nothing else wrote while it ran


def test_a_write_with_an_unknown_outcome_leaves_no_copy(db_url: str, tmp_path: Path) -> None:
    """The connection dies under a write: whether it committed is unknown, so no copy is written (and the
    store's close does not fail on it)."""
    copy = tmp_path / "p.pg-index"
    store = PgStore("STATE_PG_URL", "p", {"STATE_PG_URL": db_url}, read_only=False, cache=copy)
    store.write("users", [("k1", b'{"a":1}')], [])
    assert store._db is not None
    pg_exec(db_url, f"SELECT pg_terminate_backend({int(store._db.scalar('SELECT pg_backend_pid()', []))})")
    with pytest.raises(Exception, match="state database"):
        store.write("users", [("k2", b'{"a":2}')], [])
    store.close()
    assert not copy.exists()


def test_a_table_from_before_the_gens_gets_them_from_the_first_writer(db_url: str, tmp_path: Path,
                                                                      loads: list[str]) -> None:  # fmt: skip
    """The table as the previous version left it (no gen table, no trigger): a dry run reads it without a
    copy and changes nothing; the first run that may write adds both; a process of that previous version
    writing afterwards still works, and only makes the copies stale."""
    pg_exec(db_url, f"""CREATE TABLE {TABLE} (pipeline TEXT NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL,
        record TEXT NOT NULL, key_hash BIGINT NOT NULL, digest BIGINT NOT NULL, print BIGINT,
        PRIMARY KEY (pipeline, stream, key))""")  # fmt: skip
    seed = PgStore("STATE_PG_URL", "p", {"STATE_PG_URL": db_url}, read_only=False)
    seed.write("users", [(f"external_id:u{i}", json.dumps({"external_id": f"u{i}", "plan": "pro", "age": i % 50},
                                                         separators=(",", ":")).encode()) for i in range(100)], [])  # fmt: skip
    seed.close()
    pg_exec(db_url, f"DROP TABLE {pg_cache.GENS}", f"DROP TRIGGER {TABLE}_foreign ON {TABLE}")  # as it was before
    copy = tmp_path / "p.pg-index"
    dry = opened(db_url, copy, read_only=True)
    assert dry.changed("users", "attributes", users(range(100)))[1] == 100
    dry.close()
    assert not copy.exists() and rows(db_url, f"SELECT to_regclass('{pg_cache.GENS}') IS NULL") == [(True,)]
    s = opened(db_url, copy)
    assert deliver(s, range(100)) == (0, 100)
    s.close()
    assert rows(db_url, f"SELECT part, gen FROM {pg_cache.GENS} WHERE pipeline = 'p'") == [("all", 0)]
    assert copy.exists()
    # the previous version's write: its columns, no gen of its own
    pg_exec(db_url, f"INSERT INTO {TABLE} (pipeline, stream, key, record, key_hash, digest) VALUES ('p', 'users', "
                    "'external_id:u500', '{}', 1, 2) ON CONFLICT (pipeline, stream, key) DO UPDATE SET record = "
                    "excluded.record")  # fmt: skip
    assert rows(db_url, f"SELECT gen > 0 FROM {pg_cache.GENS} WHERE pipeline = 'p'") == [(True,)]  # the trigger
    n = len(loads)
    again = opened(db_url, copy)
    assert len(loads) == n + 1  # not the copy
    assert again.store.count("users") == 101
    again.close()


def test_a_run_from_the_copy_with_failed_rows_leaves_a_right_copy(db_url: str, tmp_path: Path, loads: list[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Runs opened from the copy whose requests failed (their users forgotten: sent again next time) write the
    copy again at close, the failed users left out. A user's trial: when every user a run wrote was one the
    copy did not hold (failed again), the close logged numpy's "assignment destination is read-only" and
    wrote no copy (keyindex.merge assigned into the copy's read-only arrays with an empty index)."""
    copy = tmp_path / "p.pg-index"
    first = opened(db_url, copy)
    deliver(first, range(300))
    first.close()
    for run, (sent, failing) in enumerate([(30, 10), (10, 10), (10, 0)]):
        s = opened(db_url, copy)
        out, unchanged = s.changed("users", "attributes", users(range(300), changed=range(0, 300, 10)))
        keys = list(out.delta_keys or [])
        assert (len(keys), unchanged) == (sent, 300 - sent), run
        s.settle("users", keys[:failing], False)  # their requests failed
        s.settle("users", keys[failing:], True)
        s.commit()
        with caplog.at_level("WARNING"):
            s.close()
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    assert len(loads) == 1  # every run after the first opened from the copy its predecessor wrote
    last = opened(db_url, copy)
    assert deliver(last, range(300), changed=range(0, 300, 10)) == (0, 300)
    last.close()
