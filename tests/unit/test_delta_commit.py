"""GroupCommit (delta/commit.py): changes from many threads committed in shared transactions, each before
its caller returns, shown to decisions until then; a failed transaction ends the writes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from connector.delta.commit import GroupCommit
from connector.delta.stores import SqliteStore


class CountingStore(SqliteStore):
    """A real state file that counts its transactions and can fail the next one."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, read_only=False)
        self.transactions = 0
        self.fail_next = False

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str], **kw: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        self.transactions += 1
        super().write(stream, confirm, forget, **kw)


def test_every_change_is_committed_when_flush_returns(tmp_path: Path) -> None:
    store, lock = CountingStore(tmp_path / "s.sqlite"), threading.Lock()
    commit = GroupCommit(store, lock)
    committed: list[bool] = []

    def settle(t: int) -> None:
        for i in range(200):
            key = f"k{t}-{i}"
            with lock:
                ticket = commit.put("users", [(key, b"1")])
            commit.flush(ticket)
            committed.append(store.lookup("users", [key])[0] == b"1")  # already in the store

    threads = [threading.Thread(target=settle, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(committed) == 1600 and all(committed)
    assert len(store.keys("users")) == 1600 and store.transactions <= 1600


def test_the_latest_change_of_a_key_wins_and_shows_until_committed(tmp_path: Path) -> None:
    store, lock = CountingStore(tmp_path / "s.sqlite"), threading.Lock()
    commit = GroupCommit(store, lock)
    store.write("users", [("a", b"old")], [])
    commit.put("users", [("a", b"new"), ("b", b"1")])
    ticket = commit.put("users", [("b", None)])  # forgotten after it was confirmed: forgotten
    stored = store.lookup("users", ["a", "b", "c"])
    commit.overlay("users", ["a", "b", "c"], stored)
    assert stored == [b"new", None, None]
    commit.flush(ticket)
    assert store.lookup("users", ["a", "b"]) == [b"new", None]


def test_a_failed_transaction_ends_the_writes_and_drops_what_is_unwritten(tmp_path: Path) -> None:
    """A store error is not raised: no later write is tried, and what could not be written goes to `dropped`
    instead of growing in memory (delta/unrecorded.py)."""
    store, lock = CountingStore(tmp_path / "s.sqlite"), threading.Lock()
    dropped: list[tuple[str, dict[str, bytes | None]]] = []
    commit = GroupCommit(store, lock, dropped=lambda stream, changes: dropped.append((stream, dict(changes))))
    assert commit.flush(commit.put("users", [("a", b"1")])) is True
    first = commit.put("users", [("b", b"2")])
    store.fail_next = True
    assert commit.flush(first) is False and isinstance(commit.failed, OSError)
    assert commit.put("users", [("c", b"3"), ("a", None)]) == 0  # dropped at once: nothing is queued
    assert commit.flush(commit.everything()) is False  # returns at once: what it covers was dropped
    assert commit.unwritten() == {} and store.transactions == 1
    assert dropped == [("users", {"b": b"2"}), ("users", {"c": b"3", "a": None})]
    assert store.lookup("users", ["a", "b", "c"]) == [b"1", None, None]
