"""Settling answers (delta/state.py, prints.py, commit.py): a first run's new users settled in bulk exactly as
key by key; settle_nowait, the writer's loop's way in, never waits and hands back what must still commit;
due() asks one caller per transaction to write."""

from __future__ import annotations

import random
import threading
from itertools import accumulate
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from connector.delta import DeltaState
from connector.delta import fingerprints as fp
from connector.delta.commit import DEFER_CHANGES, GroupCommit
from connector.delta.prints import Flying
from connector.delta.state import _Pending, _settle_each, _settle_new
from connector.delta.stores import SqliteStore
from connector.records import Chunk, EncodedObjects, MappedChunk


def users(n: int, start: int = 0) -> MappedChunk:
    objects = [{"external_id": f"u{i}", "plan": "pro", "age": i} for i in range(start, start + n)]
    parts = [orjson.dumps(o) for o in objects]
    encoded = EncodedObjects(b",".join(parts) + b",", [0, *accumulate(len(p) + 1 for p in parts)])
    chunk = Chunk("users.csv", pa.table({"i": list(range(n))}), list(range(n)))
    return MappedChunk("attributes", chunk, encoded, list(range(n)), [f"external_id:u{i}" for i in range(start, start + n)])


def test_new_users_settled_in_bulk_as_key_by_key() -> None:
    """Delivered or not, with keys repeated in one answer and keys not in flight (settled already)."""
    rng = random.Random(7)
    for _ in range(200):
        flying = {f"k{i}": f"r{i}".encode() for i in range(20)}
        keys = [f"k{rng.randrange(30)}" for _ in range(rng.randrange(1, 25))]  # k20..k29: not in flight
        delivered = rng.random() < 0.7
        bulk, each = dict(flying), dict(flying)
        assert _settle_new(bulk, keys, delivered) == _settle_each({}, each, keys, delivered)
        assert bulk == each  # the same users left in flight


def test_a_pending_key_among_an_answers_keys_is_settled_key_by_key(tmp_path: Path) -> None:
    """A user sent twice in a chunk is pending: settle() takes the key-by-key path, confirming it only
    once its last object settled."""
    state = DeltaState(SqliteStore(tmp_path / "s.sqlite", read_only=False))
    both = users(1)
    twice = MappedChunk("attributes", both.chunk, [{"external_id": "u0", "plan": "pro"}, {"external_id": "u0", "age": 3}],
                        [0, 0], ["external_id:u0", "external_id:u0"])  # fmt: skip
    sent, _ = state.changed("users", "attributes", twice)
    assert sent.delta_keys == ["external_id:u0", "external_id:u0"]
    state.settle("users", ["external_id:u0"], True)
    state.commit()
    assert state.store.lookup("users", ["external_id:u0"]) == [None]  # one object still in flight
    state.settle("users", ["external_id:u0"], True)
    state.commit()
    assert orjson.loads(state.store.lookup("users", ["external_id:u0"])[0] or b"") == {
        "external_id": "u0", "plan": "pro", "age": 3}  # fmt: skip
    state.close()


def test_flying_prints_leave_with_their_users() -> None:
    f = Flying()
    f.prints.update({"a": 11, "b": 22, "c": 33, "z": 0})
    assert f.settle(["a", "x", "z"], ["b"]) == {"a": 11}  # x: no print kept; z: none
    assert f.prints == {"c": 33}
    assert f.settle(["x"], []) is None


def test_settle_nowait_never_waits_and_hands_back_what_must_commit(tmp_path: Path) -> None:
    state = DeltaState(SqliteStore(tmp_path / "s.sqlite", read_only=False))
    sent, _ = state.changed("users", "attributes", users(3), prints=np.array([5, 6, 7], np.int64))
    keys = sent.delta_keys or []
    with state._lock:  # a chunk being decided on the main thread
        assert state.settle_nowait("users", keys, True) is None  # nothing done: the caller settles off the loop
    assert state.settle_nowait("users", keys, True) == 0  # attributes: left to a later transaction
    assert state.changed("users", "attributes", users(3))[1] == 3  # confirmed, shown until committed
    state.commit()
    assert state.store.sources("users", keys).tolist() == [5, 6, 7]  # each record with its row's print

    events = MappedChunk("events", users(2).chunk, [{"external_id": "u0", "name": "e", "time": "2024-01-01T00:00:00Z"},
                         {"external_id": "u1", "name": "e", "time": "2024-01-01T00:00:00Z"}], [0, 1],
                         ["external_id:u0", "external_id:u1"])  # fmt: skip
    sent, _ = state.changed("ev", "events", events)
    ticket = state.settle_nowait("ev", sent.delta_keys or [], True)
    assert ticket  # an event's confirmation is committed before it counts as recorded
    state.committed(ticket)
    assert state.store.lookup("ev", sent.delta_keys or []) == [fp.EVENT_RECORD] * 2
    state.close()


def test_due_asks_one_caller_per_transaction(tmp_path: Path) -> None:
    store, lock = SqliteStore(tmp_path / "s.sqlite", read_only=False), threading.Lock()
    commit = GroupCommit(store, lock)
    ticket = commit.put("users", [(f"k{i}", b"1") for i in range(DEFER_CHANGES)])
    assert commit.due() and not commit.due()  # the first caller writes; later ones leave theirs to it
    later = commit.put("users", [("late", b"1")])
    assert commit.flush(ticket) and commit.flush(later)  # the asked flush took the later change along
    assert store.count("users") == DEFER_CHANGES + 1
    commit.put("users", [(f"j{i}", b"1") for i in range(DEFER_CHANGES)])
    assert commit.due()  # a new transaction: asked again


def test_a_later_change_without_a_print_drops_the_earlier_print(tmp_path: Path) -> None:
    store, lock = SqliteStore(tmp_path / "s.sqlite", read_only=False), threading.Lock()
    commit = GroupCommit(store, lock)
    commit.put("users", [("a", b"1"), ("b", b"1")], {"a": 10, "b": 20})  # every key with its print
    commit.put("users", [("a", b"2")])  # a's latest record has no print
    ticket = commit.put("users", [("b", b"3")], {"b": 30})
    commit.flush(ticket)
    assert store.sources("users", ["a", "b"]).tolist() == [0, 30]
    assert store.lookup("users", ["a", "b"]) == [b"2", b"3"]


def test_pending_entries_stay_in_the_key_by_key_path() -> None:
    pending = {"a": _Pending(None, b"ra", 2)}
    new = {"b": b"rb"}
    confirm, forget, missing = _settle_each(pending, new, ["a", "b"], True)
    assert confirm == {"b": b"rb"} and forget == [] and pending["a"].inflight == 1 and not new
