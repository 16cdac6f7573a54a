"""New users confirmed by position written to the PostgreSQL state as a Bulk (pg_store.py, pg_rows.py): COPY
of the flights' blobs, with the same rows, prints and index as confirmations given by key; the rare writes
that cannot go so (a key known, changed by key in the same write, or written by another store since the
snapshot) fall back to (key, record) pairs. A real server on loopback (the `postgres_url` fixture)."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pytest
from sql_helpers import pg_rows as rows
from test_pg_index import GEN, counted

from connector.delta import DeltaState
from connector.delta.flights import Flight, Positions, gather
from connector.delta.keyindex import digests, key_hashes
from connector.delta.pg_store import TABLE, PgStore
from connector.records import Chunk, MappedChunk

pytestmark = pytest.mark.timeout(180)


def bulk(keys: list[str], records: list[bytes], prints: list[int] | None = None, at: list[int] | None = None) -> object:
    """The Bulk a group commit hands over for these users (positions `at` of their chunk; None: all)."""
    f = Flight(keys, records, None if prints is None else np.array(prints, np.int64), slice(None))
    return gather([(f, np.arange(len(keys)) if at is None else np.array(at, np.int64))])


def users(*rows: tuple[str, dict[str, object]]) -> MappedChunk:
    objects = [{"external_id": u, **attrs} for u, attrs in rows]
    chunk = Chunk("users", pa.table({"i": list(range(len(objects)))}), list(range(len(objects))))
    return MappedChunk("attributes", chunk, objects, list(range(len(objects))), [f"external_id:{u}" for u, _ in rows])


def answer(state: DeltaState, sent: MappedChunk, at: range | list[int], ok: bool) -> None:
    positions = sent.delta_rows(list(at))
    assert isinstance(positions, Positions)  # as the writer passes them
    state.settle("users", positions, ok)


def table(url: str, pipeline: str) -> list[tuple[object, ...]]:
    return rows(url, f"SELECT stream, key, record, key_hash, digest, print FROM {TABLE} WHERE pipeline = "
                     f"'{pipeline}' ORDER BY stream, key")  # fmt: skip


def store(url: str, pipeline: str, *, read_only: bool = False) -> PgStore:
    return PgStore("STATE_PG_URL", pipeline, {"STATE_PG_URL": url}, read_only=read_only)


def test_a_bulk_is_one_copy_and_reads_back_as_pairs_would(postgres_url: str) -> None:
    """The same users confirmed as a Bulk and as pairs leave the same rows (text, hashes, digests, bound
    prints, NULL for none), the same index, and one COPY per write, no upsert."""
    keys = ["é1", "k2", "k3"]
    records = ['{"name":"Zoë"}'.encode(), b'{"a":2}', b'{"a":3}']
    a = store(postgres_url, "bulk-a")
    seen = counted(a)
    a.write("users", [], [], bulk=bulk(keys, records, [77, 0, 5]))  # type: ignore[arg-type]
    assert [s for s in seen.statements if s.startswith(("INSERT", TABLE))] == [TABLE]
    a.close()
    b = store(postgres_url, "bulk-b")
    b.write("users", list(zip(keys, records, strict=True)), [], {"é1": 77, "k3": 5})
    b.close()
    got = {r[1]: r for r in table(postgres_url, "bulk-a")}
    assert list(got.values()) == table(postgres_url, "bulk-b")
    assert [got[k][3] for k in keys] == key_hashes(keys).tolist()
    assert [got[k][4] for k in keys] == digests(records).tolist()
    assert [got[k][5] is None for k in keys] == [False, True, False]
    again = store(postgres_url, "bulk-a", read_only=True)
    assert again.sources("users", keys).tolist() == [77, 0, 5]
    assert again.lookup("users", keys) == records
    again.close()


def test_new_keys_by_key_and_a_bulk_share_one_copy(postgres_url: str) -> None:
    s = store(postgres_url, "bulk-both")
    seen = counted(s)
    s.write("users", [("k9", b'{"v":9}')], [], {"k9": 3}, bulk=bulk(["k1", "k2"], [b'{"v":1}', b'{"v":2}'], [0, 4]))  # type: ignore[arg-type]
    assert [q.split()[0] for q in seen.statements] == [*GEN, TABLE]
    s.close()
    again = store(postgres_url, "bulk-both", read_only=True)
    assert again.lookup("users", ["k1", "k2", "k9"]) == [b'{"v":1}', b'{"v":2}', b'{"v":9}']
    assert again.sources("users", ["k1", "k2", "k9"]).tolist() == [0, 4, 3]
    again.close()


def test_only_the_confirmed_positions_of_a_flight_are_written(postgres_url: str) -> None:
    s = store(postgres_url, "bulk-some")
    s.write("users", [], [], bulk=bulk(["k0", "k1", "k2", "k3"], [b"0", b"1", b"2", b"3"], at=[3, 1]))  # type: ignore[arg-type]
    assert s.lookup("users", ["k0", "k1", "k2", "k3"]) == [None, b"1", None, b"3"]
    s.close()
    assert [r[1] for r in table(postgres_url, "bulk-some")] == ["k1", "k3"]


def test_changes_by_key_in_the_same_write_are_newer_than_the_bulk(postgres_url: str) -> None:
    """A key both in the Bulk and confirmed or forgotten by key: the change by key wins (as the state file
    writes them: the Bulk first); the write goes as pairs, the other Bulk users still confirmed."""
    s = store(postgres_url, "bulk-mixed")
    s.write("users", [("k1", b'{"v":"by key"}')], [], None,
            bulk=bulk(["k1", "k3"], [b'{"v":1}', b'{"v":3}'], [11, 33]))  # type: ignore[arg-type]  # fmt: skip
    s.write("users", [], ["k2"], None, bulk=bulk(["k2", "k4"], [b'{"v":2}', b'{"v":4}'], [22, 44]))  # type: ignore[arg-type]
    want = [b'{"v":"by key"}', None, b'{"v":3}', b'{"v":4}']
    assert s.lookup("users", ["k1", "k2", "k3", "k4"]) == want
    assert s.sources("users", ["k1", "k2", "k3", "k4"]).tolist() == [0, 0, 33, 44]  # k1's change has no print
    s.close()
    again = store(postgres_url, "bulk-mixed", read_only=True)
    assert again.lookup("users", ["k1", "k2", "k3", "k4"]) == want
    assert again.sources("users", ["k1", "k2", "k3", "k4"]).tolist() == [0, 0, 33, 44]
    again.close()


def test_a_bulk_key_the_index_knows_is_upserted(postgres_url: str) -> None:
    s = store(postgres_url, "bulk-known")
    s.write("users", [("k1", b'{"v":1}')], [])
    seen = counted(s)
    s.write("users", [], [], bulk=bulk(["k1", "k2"], [b'{"v":10}', b'{"v":2}']))  # type: ignore[arg-type]
    assert [q.split()[0] for q in seen.statements] == [*GEN, "INSERT", TABLE]  # k1 upserted, k2 appended, at once
    s.close()
    assert [(r[1], r[2]) for r in table(postgres_url, "bulk-known")] == [("k1", '{"v":10}'), ("k2", '{"v":2}')]


def test_a_bulk_key_written_by_another_store_since_the_snapshot_falls_back_to_upserts(postgres_url: str) -> None:
    late = store(postgres_url, "bulk-late")
    other = store(postgres_url, "bulk-late")
    other.write("users", [("k1", b'{"v":1}')], [])
    other.close()
    late.write("users", [], [], bulk=bulk(["k1", "k2"], [b'{"v":10}', b'{"v":2}'], [5, 6]))  # type: ignore[arg-type]
    assert late.lookup("users", ["k1", "k2"]) == [b'{"v":10}', b'{"v":2}']
    late.close()
    fresh = store(postgres_url, "bulk-late", read_only=True)
    assert fresh.lookup("users", ["k1", "k2"]) == [b'{"v":10}', b'{"v":2}']
    assert fresh.sources("users", ["k1", "k2"]).tolist() == [5, 6]
    fresh.close()


def recorded(url: str, pipeline: str, names: list[str]) -> list[bytes | None]:
    """The records a store of its own reads (the next run's view)."""
    s = store(url, pipeline, read_only=True)
    try:
        return s.lookup("users", [f"external_id:{u}" for u in names])
    finally:
        s.close()


def test_a_first_run_by_position_records_exactly_the_confirmed_users_with_their_prints(postgres_url: str) -> None:
    """The flights path end to end on the PostgreSQL state: confirmed positions written (one COPY a commit, no
    upsert), a failed request's users and unanswered ones not recorded."""
    s = store(postgres_url, "bulk-run")
    seen = counted(s)
    given: list[tuple[int, int]] = []  # (pairs, Bulk users) of each write
    write = s.write

    def spy(stream: str, confirm: list[tuple[str, bytes]], forget: list[str], sources: object = None,
            bulk: object = None) -> None:  # fmt: skip
        given.append((len(confirm), len(bulk) if bulk is not None else 0))  # type: ignore[arg-type]
        write(stream, confirm, forget, sources, bulk)  # type: ignore[arg-type]

    s.write = spy  # type: ignore[method-assign]
    state = DeltaState(s)
    names = [f"u{i}" for i in range(300)]
    sent, _ = state.changed("users", "attributes", users(*((u, {"plan": "pro"}) for u in names)),
                            prints=np.arange(1, 301, dtype=np.int64))  # fmt: skip
    assert sent.delta_flight is not None
    answer(state, sent, range(0, 100), True)
    answer(state, sent, range(200, 300), True)
    answer(state, sent, range(100, 175), False)
    state.close()  # 175..199 never answered
    assert not any(q.startswith("INSERT") for q in seen.statements)
    assert {p for p, _ in given} == {0} and sum(n for _, n in given) == 200  # as blobs, none as pairs
    got = recorded(postgres_url, "bulk-run", names)
    assert [u for u, r in zip(names, got, strict=True) if r is not None] == names[:100] + names[200:]
    again = store(postgres_url, "bulk-run", read_only=True)
    keys = [f"external_id:{u}" for u in names]
    want = np.arange(1, 301)
    want[100:200] = 0
    assert again.sources("users", keys).tolist() == want.tolist()
    again.close()


def test_a_user_seen_again_while_in_flight_ends_with_what_was_sent_last(postgres_url: str) -> None:
    """A user moved to the bookkeeping by key while its first row's position is in flight: its positions and
    the chunk's other new users reach the store in one commit, the change by key last."""
    state = DeltaState(store(postgres_url, "bulk-moved"))
    first, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 1}), ("u2", {"plan": "pro"})))
    second, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 2}), ("u3", {"plan": "free"})))
    answer(state, first, [0, 1], True)
    answer(state, second, [0, 1], True)
    state.close()
    got = recorded(postgres_url, "bulk-moved", ["u1", "u2", "u3"])
    assert [orjson.loads(r or b"null") for r in got] == [{"external_id": "u1", "plan": "pro", "age": 2},
                                                        {"external_id": "u2", "plan": "pro"},
                                                        {"external_id": "u3", "plan": "free"}]  # fmt: skip
