"""The PostgreSQL delta state's index in memory (pg_store.py): key hashes and record digests as columns, read
once as the store opens, so unchanged rows never reach the server; a table of the previous layout converted
in place; two processes, each owning its users, sharing one state. A real server on loopback (the
`postgres_url` fixture); the conversion runs in a database of its own."""

from __future__ import annotations

import json
from typing import Any

import pytest
from delta_worker import users
from sql_helpers import pg_exec
from sql_helpers import pg_rows as rows
from test_delta_state_pg import state, worker

from connector.delta import DeltaState, pg_cache
from connector.delta.keyindex import digests, key_hashes
from connector.delta.pg_store import TABLE, PgStore
from connector.errors import SourceError
from connector.readers.sql.drivers import Database

pytestmark = pytest.mark.timeout(180)
GEN = [pg_cache.MARK_WRITER.split()[0], pg_cache.BUMP.split()[0]]  # a write's first two statements


class Counting:
    """A Database that records the statements it is given."""

    def __init__(self, db: Database) -> None:
        self.db, self.statements = db, []  # type: list[str]

    def transaction(self, statements: list[tuple[str, list[Any]]]) -> list[tuple[Any, ...]]:
        self.statements += [sql for sql, _ in statements]
        return self.db.transaction(statements)

    def transaction_table(self, statements: list[tuple[str, list[Any]]]) -> Any:
        self.statements += [sql for sql, _ in statements]
        return self.db.transaction_table(statements)

    def close(self) -> None:
        self.db.close()


def counted(store: PgStore) -> Counting:
    db = Counting(store._db)  # type: ignore[arg-type]
    store._db = db  # type: ignore[assignment]
    return db


def deliver(s: DeltaState, ids: range, changed: range = range(0)) -> tuple[int, int]:
    out, unchanged = s.changed("users", "attributes", users(ids, changed=changed))
    s.settle("users", out.delta_keys or [], True)
    s.commit()
    return len(out), unchanged


def own_database(postgres_url: str, name: str) -> str:
    pg_exec(postgres_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return f"{postgres_url.rsplit('/', 1)[0]}/{name}"


def test_unchanged_rows_are_answered_from_memory_and_changed_ones_read_once(postgres_url: str) -> None:
    first = state(postgres_url, "index-mem")
    assert deliver(first, range(300)) == (300, 0)
    first.close()
    s = state(postgres_url, "index-mem")
    db = counted(s.store)  # type: ignore[arg-type]
    assert deliver(s, range(300)) == (0, 300)
    assert db.statements == []  # nothing asked of the server
    assert deliver(s, range(300), changed=range(0, 300, 10)) == (30, 270)
    # the 30 changed users' records in one statement; their old records deleted before they were sent; their
    # new ones appended by COPY (no ON CONFLICT: the index knows they are gone)
    # (each write also says it is this version's and bumps its partition's gen: pg_cache.py)
    assert [q.split()[0] for q in db.statements] == ["SELECT", *GEN, "DELETE", *GEN, TABLE]
    assert deliver(s, range(300), changed=range(0, 300, 10)) == (0, 300)  # its own writes are in its index
    s.close()


def test_key_hashes_and_record_digests_are_columns(postgres_url: str) -> None:
    s = state(postgres_url, "index-cols")
    deliver(s, range(50))
    s.close()
    found = rows(postgres_url, f"SELECT key, record, key_hash, digest FROM {TABLE} WHERE pipeline = 'index-cols' ORDER BY key")
    assert len(found) == 50
    assert [h for _, _, h, _ in found] == key_hashes([k for k, _, _, _ in found]).tolist()
    assert [d for _, _, _, d in found] == digests([r.encode() for _, r, _, _ in found]).tolist()


def test_a_table_of_the_previous_layout_is_converted_in_place(postgres_url: str) -> None:
    url = own_database(postgres_url, "delta_old_layout")
    env = {"STATE_PG_URL": url}
    records = {f"external_id:u{i}": json.dumps({"external_id": f"u{i}", "plan": "pro", "age": i % 50},
                                               separators=(",", ":")) for i in range(200)}  # fmt: skip
    values = ", ".join(f"('{p}', 'users', '{k}', '{r}')" for p in ("old", "other") for k, r in records.items())
    pg_exec(url, f"CREATE TABLE {TABLE} (pipeline TEXT NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL, "
                 "record TEXT NOT NULL, PRIMARY KEY (pipeline, stream, key))",
            f"INSERT INTO {TABLE} VALUES {values}")  # fmt: skip

    dry = DeltaState(PgStore("STATE_PG_URL", "old", env, read_only=True), read_only=True)
    assert dry.changed("users", "attributes", users(range(200)))[1] == 200  # read as it is: no column added
    dry.close()
    assert rows(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'digest'") == [(0,)]

    s = DeltaState(PgStore("STATE_PG_URL", "old", env, read_only=False))  # converts, every pipeline's rows
    db = counted(s.store)  # type: ignore[arg-type]
    assert deliver(s, range(200)) == (0, 200) and db.statements == []
    s.close()
    found = rows(url, f"SELECT pipeline, key, record, key_hash, digest FROM {TABLE} ORDER BY pipeline, key")
    assert len(found) == 400
    assert [f[3] for f in found] == key_hashes([f[1] for f in found]).tolist()
    assert [f[4] for f in found] == digests([f[2].encode() for f in found]).tolist()
    assert rows(url, "SELECT is_nullable FROM information_schema.columns WHERE column_name = 'print'") == [("YES",)]
    # A process of an earlier version cannot leave a record with a stale digest: its write fails.
    with pytest.raises(Exception, match="null value"):
        pg_exec(url, f"INSERT INTO {TABLE} (pipeline, stream, key, record) VALUES ('old', 'users', 'external_id:u1', "
                     "'{}') ON CONFLICT (pipeline, stream, key) DO UPDATE SET record = excluded.record")  # fmt: skip
    again = DeltaState(PgStore("STATE_PG_URL", "other", env, read_only=False))  # converted once: nothing to do
    assert deliver(again, range(200)) == (0, 200)
    again.close()
    pg_exec(postgres_url, "DROP DATABASE delta_old_layout WITH (FORCE)")


def test_two_processes_each_owning_its_users_share_one_state(postgres_url: str) -> None:
    """Both open (a snapshot each) while the other writes; each changes and re-reads its own users."""
    seed = state(postgres_url, "index-two")
    deliver(seed, range(6000))
    seed.close()
    procs = [worker(postgres_url, "rounds", "index-two", str(first), "3000") for first in (0, 3000)]
    outs = [p.communicate(timeout=150) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    # as they were (from the snapshot), 300 changed, then unchanged again (its own writes in its index)
    assert [json.loads(out) for out, _ in outs] == [[[0, 3000], [300, 2700], [0, 3000]]] * 2
    fresh = state(postgres_url, "index-two")
    assert deliver(fresh, range(6000), changed=range(0, 6000, 10)) == (0, 6000)  # both processes' writes
    fresh.close()


def test_a_store_sees_the_state_as_it_opened_plus_its_own_writes(postgres_url: str) -> None:
    """Keys another process writes after a store opened are not in its index (they are not its keys)."""
    dry = PgStore("STATE_PG_URL", "index-snap", {"STATE_PG_URL": postgres_url}, read_only=True)
    writer = state(postgres_url, "index-snap")
    deliver(writer, range(10))
    writer.close()
    assert dry.lookup("users", ["external_id:u1"]) == [None] and dry.empty("users")
    dry.close()
    fresh = PgStore("STATE_PG_URL", "index-snap", {"STATE_PG_URL": postgres_url}, read_only=True)
    assert fresh.lookup("users", ["external_id:u1"]) == [b'{"external_id":"u1","plan":"pro","age":1}']
    assert not fresh.empty("users")
    fresh.close()


def test_a_store_error_on_a_changed_row_is_raised(postgres_url: str) -> None:
    """A row whose digest differs needs the server: gone, the lookup fails (the run stops, exit 2)."""
    first = state(postgres_url, "index-gone")
    deliver(first, range(5))
    first.close()
    store = PgStore("STATE_PG_URL", "index-gone", {"STATE_PG_URL": postgres_url}, read_only=True)
    assert store._db is not None
    pid = store._db.scalar("SELECT pg_backend_pid()", [])
    pg_exec(postgres_url, f"SELECT pg_terminate_backend({int(pid)})")  # the connection is gone
    assert store.lookup("users", ["external_id:u1"], [b'{"external_id":"u1","plan":"pro","age":1}']) == [
        b'{"external_id":"u1","plan":"pro","age":1}']  # answered from memory
    with pytest.raises(SourceError, match="state database"):
        store.lookup("users", ["external_id:u1"], [b'{"external_id":"u1","plan":"max","age":1}'])
    store.close()


def test_a_key_written_by_another_store_since_the_snapshot_is_upserted(postgres_url: str) -> None:
    """Keys new to the index are inserted without ON CONFLICT; one there after all (two runs sharing a user)
    makes the write fall back to upserts, never fail."""
    env = {"STATE_PG_URL": postgres_url}
    late = PgStore("STATE_PG_URL", "index-upsert", env, read_only=False)
    other = PgStore("STATE_PG_URL", "index-upsert", env, read_only=False)
    other.write("users", [("k1", b'{"a":1}'), ("k2", b'{"a":2}')], [])
    other.close()
    late.write("users", [("k1", b'{"a":10}'), ("k3", b'{"a":3}')], [])  # k1 is there: no error
    assert late.lookup("users", ["k1", "k2", "k3"]) == [b'{"a":10}', None, b'{"a":3}']  # k2: not in its index
    late.close()
    fresh = PgStore("STATE_PG_URL", "index-upsert", env, read_only=True)
    assert fresh.lookup("users", ["k1", "k2", "k3"]) == [b'{"a":10}', b'{"a":2}', b'{"a":3}']
    fresh.close()


def test_new_keys_appended_by_copy_keep_their_text_prints_and_hashes(postgres_url: str) -> None:
    """New keys go in by COPY (binary), some of a write's keys new and others upserted: each column reads
    back as an INSERT would have written it (non-ASCII text intact, no print stored as NULL)."""
    env = {"STATE_PG_URL": postgres_url}
    store = PgStore("STATE_PG_URL", "index-copy", env, read_only=False)
    store.write("users", [("é1", '{"name":"Zoë"}'.encode()), ("k2", b'{"a":2}')], [], {"é1": 77})
    store.write("users", [("k2", b'{"a":22}'), ("k3", b'{"a":3}')], ["é1"], {"k3": 5})  # k2 upserted, k3 new
    store.close()
    found = rows(postgres_url, f"SELECT key, record, key_hash, digest, print IS NULL FROM {TABLE} "
                               "WHERE pipeline = 'index-copy' ORDER BY key")  # fmt: skip
    assert [(k, r, n) for k, r, _, _, n in found] == [("k2", '{"a":22}', True), ("k3", '{"a":3}', False)]
    assert [h for _, _, h, _, _ in found] == key_hashes(["k2", "k3"]).tolist()
    assert [d for _, _, _, d, _ in found] == digests([b'{"a":22}', b'{"a":3}']).tolist()
    again = PgStore("STATE_PG_URL", "index-copy", env, read_only=True)
    assert again.sources("users", ["é1", "k2", "k3"]).tolist() == [0, 0, 5]
    again.close()
    store = PgStore("STATE_PG_URL", "index-copy", env, read_only=False)
    store.write("users", [("é1", '{"name":"Zoë"}'.encode())], [], {"é1": 77})
    assert store.lookup("users", ["é1"]) == ['{"name":"Zoë"}'.encode()]
    store.close()
