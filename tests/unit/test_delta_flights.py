"""New users in flight by position (delta/flights.py): answers settle a chunk's positions, confirmed ones are
written as array slices, failed ones are not recorded, a user seen again while in flight compares against
what was sent, and a run killed with SIGKILL forgets exactly what was not confirmed and committed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
import pytest
from test_delta import users

from connector.delta import DeltaState, commit
from connector.delta.flights import Positions
from connector.delta.stores import SqliteStore
from connector.records import MappedChunk


def ids(n: int, first: int = 0) -> list[str]:
    return [f"u{i}" for i in range(first, first + n)]


def chunk(names: list[str], plan: str = "pro") -> MappedChunk:
    return users(*((u, {"plan": plan}) for u in names))


def recorded(path: Path, names: list[str]) -> list[str]:
    """The users the file holds a record for, read by a store of its own (the next run's view)."""
    store = SqliteStore(path, read_only=True)
    try:
        found = store.lookup("users", [f"external_id:{u}" for u in names])
    finally:
        store.close()
    return [u for u, r in zip(names, found, strict=True) if r is not None]


def answer(state: DeltaState, sent: MappedChunk, at: range | list[int], ok: bool) -> None:
    rows = sent.delta_rows(list(at))
    assert isinstance(rows, Positions)  # as the writer passes them
    state.settle("users", rows, ok)


def test_a_first_runs_chunk_settles_by_position_and_a_failed_request_leaves_exactly_its_users(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    names = ids(300)
    sent, _ = state.changed("users", "attributes", chunk(names), prints=np.arange(1, 301, dtype=np.int64))
    assert sent.delta_flight is not None and sent.delta_keys == [f"external_id:{u}" for u in names]
    answer(state, sent, range(0, 100), True)
    answer(state, sent, range(200, 300), True)
    answer(state, sent, range(100, 175), False)  # a request that failed (5xx after the retries, say)
    # 175..199: never answered (a stop at once): not recorded either
    state.close()
    assert recorded(path, names) == names[:100] + names[200:]
    store = SqliteStore(path, read_only=False)
    assert store.sources("users", ["external_id:u0", "external_id:u250", "external_id:u150"]).tolist() == [1, 251, 0]
    store.close()
    again = DeltaState(SqliteStore(path, read_only=False))
    resent, unchanged = again.changed("users", "attributes", chunk(names))
    assert unchanged == 200 and resent.delta_keys == [f"external_id:{u}" for u in names[100:200]]
    again.close()


def test_answers_by_key_settle_a_flight_too(tmp_path: Path) -> None:
    """Callers that settle keys (tests, benches) reach users in flight by position."""
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    sent, _ = state.changed("users", "attributes", chunk(ids(4)))
    keys = sent.delta_keys or []
    state.settle("users", keys[:2], True)
    state.settle("users", keys[2:3], False)
    state.close()
    assert recorded(path, ids(4)) == ["u0", "u1"]


def test_a_user_seen_again_while_in_flight_compares_against_what_was_sent(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    first, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 1}), ("u2", {"plan": "pro"})))
    second, unchanged = state.changed("users", "attributes",
                                      users(("u1", {"plan": "pro", "age": 2}), ("u3", {"plan": "free"})))  # fmt: skip
    assert unchanged == 0 and state.last.changed == 1 and state.last.added == 1
    assert list(second.objects)[0] == {"external_id": "u1", "age": 2}  # only what differs from what was sent
    assert second.delta_flight is not None  # u3 by position, u1 by key
    answer(state, first, [0, 1], True)
    third, same = state.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 2})))
    assert same == 1 and len(third) == 0  # what is in flight for u1 already: unchanged
    answer(state, second, [0, 1], True)
    state.close()
    store = SqliteStore(path, read_only=True)
    got = store.lookup("users", ["external_id:u1", "external_id:u2", "external_id:u3"])
    store.close()
    assert [orjson.loads(r or b"null") for r in got] == [{"external_id": "u1", "plan": "pro", "age": 2},
                                                        {"external_id": "u2", "plan": "pro"},
                                                        {"external_id": "u3", "plan": "free"}]  # fmt: skip


def test_a_moved_user_whose_first_request_failed_is_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    first, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 1})))
    second, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 2})))
    answer(state, first, [0], False)  # the whole record was not applied: the second row sent only `age`
    state.settle("users", second.delta_rows([0]), True)
    state.close()
    assert recorded(path, ["u1"]) == []  # sent again, whole, next time


def test_a_confirmation_committed_mid_run_is_seen_by_a_later_chunk(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    first, _ = state.changed("users", "attributes", chunk(ids(3)))
    answer(state, first, range(3), True)
    state.commit()
    assert recorded(path, ids(3)) == ids(3)
    again, unchanged = state.changed("users", "attributes", chunk(ids(5)))
    assert unchanged == 3 and again.delta_keys == ["external_id:u3", "external_id:u4"]
    answer(state, again, range(2), True)  # settled, not committed yet: the next chunk sees it all the same
    last, unchanged = state.changed("users", "attributes", chunk(ids(5)))
    assert unchanged == 5 and len(last) == 0
    state.close()


def test_enough_waiting_answers_ask_for_a_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "DEFER_CHANGES", 10)
    monkeypatch.setattr(commit, "DEFER_SECONDS", 600)
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    sent, _ = state.changed("users", "attributes", chunk(ids(30)))
    assert state.settle_nowait("users", sent.delta_rows(list(range(5))), True) == 0
    ticket = state.settle_nowait("users", sent.delta_rows(list(range(5, 10))), True)
    assert ticket is not None and ticket < 0  # the caller commits them, off the writer's loop
    assert state.settle_nowait("users", sent.delta_rows(list(range(10, 20))), True) == 0  # asked once
    assert recorded(path, ids(30)) == []
    state.committed(ticket)
    assert recorded(path, ids(30)) == ids(20)
    state.close()


_WORKER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from test_delta import users
    from connector.delta import DeltaState, commit
    from connector.delta.stores import SqliteStore
    commit.DEFER_SECONDS = 600  # nothing commits but the calls below
    commit.DEFER_CHANGES = 10 ** 9
    state = DeltaState(SqliteStore(__import__("pathlib").Path(sys.argv[1]), read_only=False))
    chunks = [state.changed("users", "attributes", users(*((f"u{i}", {"plan": "pro"}) for i in range(a, a + 100))))[0]
              for a in range(0, 300, 100)]
    state.settle("users", chunks[0].delta_rows(list(range(100))), True)
    state.settle("users", chunks[1].delta_rows(list(range(0, 50))), True)
    state.settle("users", chunks[1].delta_rows(list(range(50, 75))), False)
    state.commit()  # u0..u149 recorded
    state.settle("users", chunks[2].delta_rows(list(range(100))), True)  # confirmed, not committed: forgotten
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_kill_9_mid_run_then_a_rerun_resends_exactly_the_unconfirmed_users(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", _WORKER, str(path), here], env=os.environ.copy(),
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == -9, done.stderr.decode()
    names = ids(300)
    assert recorded(path, names) == names[:150]
    state = DeltaState(SqliteStore(path, read_only=False))
    resent, unchanged = state.changed("users", "attributes", chunk(names))
    state.close()
    assert unchanged == 150 and resent.delta_keys == [f"external_id:{u}" for u in names[150:]]
