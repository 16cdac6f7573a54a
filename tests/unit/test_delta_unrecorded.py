"""A delta state whose store fails mid-run (a full disk, PostgreSQL gone): settle never raises, the first
error ends the writes, nothing is kept but a hash per key, one warning counts what the next run sends again
(delta/commit.py, delta/unrecorded.py); and deferred confirmations are committed by a timer."""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_delta import chunk_of, users

from connector.delta import DeltaState, commit
from connector.delta.pg_store import PgStore
from connector.delta.stores import SqliteStore, Store
from connector.delta.unrecorded import cause
from connector.errors import SourceError

FULL = "database or disk is full"


class FullAfter(SqliteStore):
    """A real state file whose disk fills after `n` transactions: every later write raises SQLITE_FULL."""

    def __init__(self, path: Path, n: int) -> None:
        super().__init__(path, read_only=False)
        self.n, self.writes, self.tried_after = n, 0, 0
        self.wrote = threading.Event()

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str], **kw: Any) -> None:
        if self.writes >= self.n:
            self.tried_after += 1
            raise sqlite3.OperationalError(FULL)
        super().write(stream, confirm, forget, **kw)
        self.writes += 1
        self.wrote.set()


def stored(path: Path, stream: str, keys: list[str]) -> list[bytes | None]:
    """What the file holds, read by a store of its own (another run's view)."""
    store = SqliteStore(path, read_only=True)
    try:
        return store.lookup(stream, keys)
    finally:
        store.close()


def events(*ids: int) -> Any:
    objs = [{"external_id": f"e{i % 7}", "name": "played", "time": f"2026-01-01T00:00:{i % 60:02d}Z",
             "properties": {"n": i}} for i in ids]  # fmt: skip
    return chunk_of(objs, [f"external_id:e{i % 7}" for i in ids], kind="events")


def settle_all(state: DeltaState, stream: str, mapped: Any, ok: bool = True, per: int = 10) -> None:
    keys = mapped.delta_keys
    for i in range(0, len(keys), per):  # answers a request at a time, as the writer settles them
        state.settle(stream, keys[i : i + per], ok)


def test_a_full_disk_mid_run_is_one_warning_and_counts_what_the_next_run_sends_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(commit, "DEFER_CHANGES", 50)  # a transaction every 50 users: the disk fills mid-run
    path = tmp_path / "s.sqlite"
    store = FullAfter(path, 3)
    state = DeltaState(store)
    ids = [f"u{i}" for i in range(1000)]
    with caplog.at_level(logging.WARNING):
        for a in range(0, 1000, 100):
            sent, _ = state.changed("users", "attributes", users(*((u, {"plan": "pro"}) for u in ids[a : a + 100])))
            settle_all(state, "users", sent)  # never raises
            if state.unrecorded is not None:
                assert state._commit.unwritten() == {}  # nothing kept to write later
        sent, _ = state.changed("events", "events", events(*range(120)))
        settle_all(state, "events", sent)
        assert [r.getMessage() for r in caplog.records] == []  # nothing said until the end of the run
        state.close()
    assert store.tried_after == 1  # one failed transaction, no retry after it
    written = sum(r is not None for r in stored(path, "users", [f"external_id:{u}" for u in ids]))
    assert 0 < written < 1000
    lost = state.unrecorded
    assert lost is not None and lost.counts() == {"cause": "the disk is full", "users": 1000 - written,
                                                  "events": 120, "purchases": 0, "stale_records": 0}  # fmt: skip
    assert lost.nbytes <= 8 * (1000 + 120)  # a hash per key, not the records
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(f"delta state {path}: could not be written (the disk is full)")
    assert f"what Braze confirmed for {1000 - written:,} users was not recorded: the next run sends those users " \
           "again" in warning  # fmt: skip
    assert "120 events may be sent again" in warning and "--full" not in warning
    assert "cannot rollback" not in caplog.text and "Traceback" not in caplog.text


def test_after_the_failure_the_run_still_decides_as_if_it_had_recorded(tmp_path: Path) -> None:
    """An event confirmed after the failure is still skipped when it comes again in the run; a user whose old
    record could not be removed before its change was sent is not compared with that record again."""
    path = tmp_path / "s.sqlite"
    store = FullAfter(path, 1)
    state = DeltaState(store)
    first, _ = state.changed("users", "attributes", users(("u1", {"plan": "basic"}), ("u2", {"plan": "basic"})))
    settle_all(state, "users", first)
    state.commit()  # the one write the disk takes
    sent, _ = state.changed("events", "events", events(1, 2))  # their confirmation: the first write refused
    settle_all(state, "events", sent)
    again, unchanged = state.changed("events", "events", events(1, 2, 3))
    assert unchanged == 2 and len(again) == 1  # 1 and 2 were delivered: not sent twice in one run
    changed, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro"})))  # its old record stays
    assert changed.objects == [{"external_id": "u1", "plan": "pro"}]
    settle_all(state, "users", changed)
    back, unchanged = state.changed("users", "attributes", users(("u1", {"plan": "basic"}), ("u2", {"plan": "basic"})))
    assert unchanged == 1 and back.objects == [{"external_id": "u1", "plan": "basic"}]  # Braze holds pro
    lost = state.finish()
    state.close()
    assert lost is not None and lost.counts() == {"cause": "the disk is full", "users": 1, "events": 2, "purchases": 0,
                                                  "stale_records": 1}  # fmt: skip
    assert "run once with --full" in lost.warning() and "2 events may be sent again" in lost.warning()
    assert b"basic" in (stored(path, "users", ["external_id:u1"])[0] or b"")  # the older record, kept


def test_a_store_error_at_the_last_commit_is_one_warning_not_a_rollback_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """SQLite rolls back by itself on SQLITE_FULL, so the store's own ROLLBACK fails too ("cannot rollback"):
    the warning still says the disk is full, once."""

    class RollbackFails(SqliteStore):
        def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str], **kw: Any) -> None:
            try:
                raise sqlite3.OperationalError(FULL)
            except sqlite3.OperationalError:
                raise sqlite3.OperationalError("cannot rollback - no transaction is active")  # noqa: B904

    state = DeltaState(RollbackFails(tmp_path / "s.sqlite", read_only=False))
    sent, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro"})))
    settle_all(state, "users", sent)  # deferred: written at close
    with caplog.at_level(logging.WARNING):
        state.close()
    [warning] = [r.getMessage() for r in caplog.records]
    assert "(the disk is full)" in warning and "confirmed for 1 user was not recorded" in warning
    assert "rollback" not in warning


def test_the_cause_in_words() -> None:
    assert cause(sqlite3.OperationalError(FULL)) == "the disk is full"
    assert cause(OSError(errno.ENOSPC, "No space left on device")) == "the disk is full"
    assert cause(SourceError("state database $STATE_PG_URL: query: could not extend file: No space left on device")) \
        == "the disk is full"  # fmt: skip
    assert cause(sqlite3.OperationalError("attempt to write a readonly database")) == "attempt to write a readonly database"
    try:
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")  # noqa: B904
    except sqlite3.OperationalError as e:
        assert cause(e) == "disk I/O error"


def test_postgresql_gone_mid_run_drops_alike(tmp_path: Path, postgres_url: str) -> None:
    """The PostgreSQL store's errors (the driver's, as SourceError) end the writes the same way."""
    env = {"STATE_PG_URL": postgres_url}

    class Gone(PgStore):
        def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None:
            raise SourceError("state database $STATE_PG_URL: server closed the connection unexpectedly")

    state = DeltaState(Gone("STATE_PG_URL", f"gone-{tmp_path.name}", env, read_only=False))
    sent, _ = state.changed("events", "events", events(1, 2, 3))
    settle_all(state, "events", sent)
    lost = state.finish()
    state.close()
    assert lost is not None and lost.counts()["events"] == 3
    assert lost.warning().startswith("delta state postgresql ($STATE_PG_URL): could not be written (state database "
                                     "$STATE_PG_URL: server closed the connection unexpectedly)")  # fmt: skip
    assert "fix the state's storage before the next run" in lost.warning()


# ---- the deferred confirmations' timer ------------------------------------------------------------------
def deferred_state(path: Path, store: Callable[[Path], Store], monkeypatch: pytest.MonkeyPatch,
                   seconds: float = 0.05) -> DeltaState:  # fmt: skip
    """Every attributes confirmation deferred (never due at settle), so only the timer or close commits it."""
    monkeypatch.setattr(commit.GroupCommit, "due", lambda self: False)
    monkeypatch.setattr(commit, "DEFER_SECONDS", seconds)
    return DeltaState(store(path))


def timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "delta-deferred-commit" and t.is_alive()]


def test_a_deferred_confirmation_is_committed_without_another_settle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.sqlite"
    state = deferred_state(path, lambda p: FullAfter(p, 10), monkeypatch)
    store = state.store
    assert isinstance(store, FullAfter)
    sent, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro"})))
    settle_all(state, "users", sent)  # deferred: settle returns without writing
    assert store.wrote.wait(60)  # ... and the timer writes it, with no other settle and no close
    assert stored(path, "users", ["external_id:u1"])[0] is not None
    state.close()
    assert timer_threads() == []


def test_close_stops_the_timer_and_commits_what_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.sqlite"
    state = deferred_state(path, lambda p: SqliteStore(p, read_only=False), monkeypatch, seconds=600)
    sent, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro"})))
    settle_all(state, "users", sent)
    assert len(timer_threads()) == 1
    state.close()  # long before the timer is due: it is cancelled, and close commits
    assert timer_threads() == []
    assert stored(path, "users", ["external_id:u1"])[0] is not None


def test_a_store_error_in_the_timer_follows_the_same_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    state = deferred_state(tmp_path / "s.sqlite", lambda p: FullAfter(p, 0), monkeypatch)
    sent, _ = state.changed("users", "attributes", users(("u1", {"plan": "pro"}), ("u2", {"plan": "pro"})))
    settle_all(state, "users", sent)
    store = state.store
    assert isinstance(store, FullAfter)
    done = threading.Event()
    for _ in range(600):  # the timer's write fails: polled, at most a minute
        if state.unrecorded is not None or done.wait(0.1):
            break
    assert state.unrecorded is not None and state.unrecorded.counts()["users"] == 2 and store.tried_after == 1
    more, _ = state.changed("users", "attributes", users(("u3", {"plan": "pro"})))
    settle_all(state, "users", more)  # dropped at once: no write tried, no timer armed
    assert timer_threads() == []
    with caplog.at_level(logging.WARNING):
        state.close()
    assert errors == [] and store.tried_after == 1 and len(caplog.records) == 1
    assert state.unrecorded.counts()["users"] == 3
