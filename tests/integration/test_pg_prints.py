"""The PostgreSQL delta state keeps source prints (pg_store.py; delta sync's fast path, rowprint.py) with the
local store's semantics: a print is stored only with a confirmed record, read into the index at open, dropped
when the record is replaced or forgotten, attached to a record only while it is the one compared. A table
of the index's layout (no `print` column) gets the column in place; one an earlier version writes cannot
leave a stale print that would skip a row. A real server on loopback; each test in a database of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rowprint_worker import decide
from sql_helpers import pg_exec, pg_rows
from test_pg_index import own_database

from connector.delta import DeltaState
from connector.delta.keyindex import digests, key_hashes
from connector.delta.pg_store import TABLE, PgStore

pytestmark = pytest.mark.timeout(180)
ENV = "STATE_PG_URL"


def opened(url: str, pipeline: str = "p", *, read_only: bool = False) -> DeltaState:
    return DeltaState(PgStore(ENV, pipeline, {ENV: url}, read_only=read_only), read_only=read_only)


def confirm(s: DeltaState, ids: list[int], changed: range = range(0)) -> tuple[list[int], list[str]]:
    """decide (the fast path, then the object comparison), confirm what was sent, commit: (fast, sent)."""
    fast, sent = decide(s, ids, changed)
    s.settle("users", sent, True)
    s.commit()
    return fast, sent


def index_layout_table(url: str, n: int) -> None:
    """A table as the index's version left it (key_hash, digest; no print), with users 0..n-1 confirmed."""
    records = {f"external_id:u{i}": json.dumps({"external_id": f"u{i}", "plan": "pro"}, separators=(",", ":"))
               for i in range(n)}  # fmt: skip
    h = key_hashes(list(records))
    d = digests([r.encode() for r in records.values()])
    values = ", ".join(f"('p', 'users', '{k}', '{r}', {hh}, {dd})"
                       for (k, r), hh, dd in zip(records.items(), h.tolist(), d.tolist(), strict=True))  # fmt: skip
    pg_exec(url, f"CREATE TABLE {TABLE} (pipeline TEXT NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL, "
                 "record TEXT NOT NULL, key_hash BIGINT NOT NULL, digest BIGINT NOT NULL, "
                 "PRIMARY KEY (pipeline, stream, key))", f"INSERT INTO {TABLE} VALUES {values}")  # fmt: skip


def has_print(url: str) -> bool:
    return pg_rows(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'print'") == [(1,)]


def test_prints_follow_their_records(postgres_url: str) -> None:
    url = own_database(postgres_url, "prints_follow")
    s = opened(url)
    assert confirm(s, list(range(100))) == ([], [f"external_id:u{i}" for i in range(100)])
    s.close()
    stored = pg_rows(url, f"SELECT key, digest, print FROM {TABLE} ORDER BY key")
    assert all(p is not None for _, _, p in stored)  # bound to the digest (XOR), not stored as they are
    assert all(p ^ d == 1_000_000 + int(k.split(":u")[1]) for k, d, p in stored)

    s = opened(url)
    fast, sent = confirm(s, list(range(100)), changed=range(10))  # 0..9 replaced: the new prints go with them
    assert fast == list(range(10, 100)) and len(sent) == 10
    s.store.write("users", [], ["external_id:u20"])  # forgotten: its print goes with the row
    s.store.write("users", [("external_id:u21", b'{"external_id":"u21","plan":"x"}')], [])  # no print: dropped
    s.close()
    s = opened(url)
    fast, _ = decide(s, list(range(100)), changed=range(10))
    assert fast == [i for i in range(100) if i not in (20, 21)]
    s.close()


def test_a_print_is_attached_only_while_the_record_is_the_one_compared(postgres_url: str) -> None:
    url = own_database(postgres_url, "prints_mark")
    index_layout_table(url, 3)  # records without prints: the object comparison finds them unchanged
    store = PgStore(ENV, "p", {ENV: url}, read_only=False)
    assert has_print(url)
    rec = [f'{{"external_id":"u{i}","plan":"pro"}}'.encode() for i in range(3)]
    d = digests(rec).tolist()
    store.write("users", [("external_id:u1", b'{"external_id":"u1","plan":"max"}')], [])  # u1 replaced since
    store.mark("users", {"external_id:u0": (7, d[0]), "external_id:u1": (8, d[1]), "external_id:u2": (9, 1)})
    assert store.sources("users", ["external_id:u0", "external_id:u1", "external_id:u2"]).tolist() == [7, 0, 0]
    store.close()
    again = PgStore(ENV, "p", {ENV: url}, read_only=True)  # read back at open
    assert again.sources("users", ["external_id:u0", "external_id:u1", "external_id:u2"]).tolist() == [7, 0, 0]
    again.close()


def test_a_table_of_the_index_layout_gets_the_print_column_in_place(postgres_url: str) -> None:
    url = own_database(postgres_url, "prints_convert")
    index_layout_table(url, 200)
    dry = opened(url, read_only=True)  # read as it is: no column added, no print to match
    assert decide(dry, list(range(200)))[0] == []
    dry.close()
    assert not has_print(url)

    s = opened(url)  # the column, added; the object comparison finds every user unchanged and marks them
    assert confirm(s, list(range(200))) == ([], [])
    s.close()
    assert has_print(url) and pg_rows(url, f"SELECT count(print) FROM {TABLE}") == [(200,)]
    s = opened(url)
    assert confirm(s, list(range(200))) == (list(range(200)), [])
    s.close()

    # A process of an earlier version replaces u1's record (its upsert does not know the print): the print
    # left in place no longer reads as u1's, so u1's row is compared, never skipped.
    new = '{"external_id":"u1","plan":"max"}'
    pg_exec(url, f"INSERT INTO {TABLE} (pipeline, stream, key, record, key_hash, digest) VALUES ('p', 'users', "
                 f"'external_id:u1', '{new}', {int(key_hashes(['external_id:u1'])[0])}, "
                 f"{int(digests([new.encode()])[0])}) ON CONFLICT (pipeline, stream, key) DO UPDATE SET "
                 "record = excluded.record, key_hash = excluded.key_hash, digest = excluded.digest")  # fmt: skip
    s = opened(url)
    fast, sent = confirm(s, list(range(200)))
    assert fast == [i for i in range(200) if i != 1] and sent == ["external_id:u1"]
    s.close()
    pg_exec(postgres_url, "DROP DATABASE prints_convert WITH (FORCE)")


def test_prints_in_memory_survive_folding(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes folded into the index's arrays keep their prints."""
    monkeypatch.setattr("connector.delta.pg_store._FOLD", 50)
    url = own_database(postgres_url, "prints_fold")
    s = opened(url)
    confirm(s, list(range(120)))
    store = s.store
    assert isinstance(store, PgStore)
    got = store.sources("users", [f"external_id:u{i}" for i in range(120)])
    assert np.array_equal(got, 1_000_000 + np.arange(120))
    s.close()
