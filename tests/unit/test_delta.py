"""DeltaState: what is sent, skipped, remembered and forgotten, over both backends: a real SQLite file under
tmp_path, and a real PostgreSQL server on loopback (the session's `postgres_url` fixture, one pipeline name
per test so tests never see each other's state); and with the objects as dicts (mapping's row path) or as
their JSON (records.EncodedObjects, mapping's column path), every test both ways."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from connector.delta import DeltaState
from connector.delta import fingerprints as fp
from connector.delta.pg_store import PgStore
from connector.delta.seen import Seen
from connector.delta.stores import SqliteStore
from connector.records import Chunk, EncodedObjects, MappedChunk

Open = Callable[..., DeltaState]
AS_JSON = [False]  # objects_as: build chunks' objects as EncodedObjects


@pytest.fixture(autouse=True, params=["dicts", "json"])
def objects_as(request: pytest.FixtureRequest) -> Iterator[None]:
    AS_JSON[0] = request.param == "json"
    yield
    AS_JSON[0] = False


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Open:
    """DeltaState over one backend: `open_(path, read_only=False, full=False)`; the path names the state."""
    if request.param == "sqlite":
        return lambda path, read_only=False, full=False: DeltaState(SqliteStore(path, read_only=read_only),
                                                                    read_only=read_only, full=full)  # fmt: skip
    url = request.getfixturevalue("postgres_url")
    env = {"STATE_PG_URL": url}

    def open_(path: Path, read_only: bool = False, full: bool = False) -> DeltaState:
        name = f"{tmp_path.name}-{path.name}"
        return DeltaState(PgStore("STATE_PG_URL", name, env, read_only=read_only), read_only=read_only, full=full)

    return open_


def encoded(objects: list[dict[str, Any]]) -> EncodedObjects:
    """The objects as mapping's column path builds them: their JSON, each followed by a comma."""
    parts = [orjson.dumps(o) for o in objects]
    return EncodedObjects(b",".join(parts) + b",", [0, *accumulate(len(p) + 1 for p in parts)])


def chunk_of(objects: list[dict[str, Any]], keys: list[str], kind: str = "attributes") -> MappedChunk:
    n = len(objects)
    chunk = Chunk("users.csv", pa.table({"i": list(range(n))}), list(range(2, n + 2)))
    objs = encoded(objects) if AS_JSON[0] else objects
    return MappedChunk(kind, chunk, objs, list(range(n)), keys)  # type: ignore[arg-type]


def users(*rows: tuple[str, dict[str, Any]]) -> MappedChunk:
    return chunk_of([{"external_id": u, **attrs} for u, attrs in rows], [f"external_id:{u}" for u, _ in rows])


def deliver_all(state: DeltaState, mapped: MappedChunk, ok: bool = True) -> None:
    assert mapped.delta_keys is not None
    state.settle("users", mapped.delta_keys, ok)


def test_first_run_sends_all_then_unchanged_rows_are_skipped(tmp_path: Path, backend: Open) -> None:
    path = tmp_path / "state.sqlite"
    s = backend(path)
    sent, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 30}), ("u2", {"plan": "free"})))
    assert unchanged == 0 and sent.objects == [{"external_id": "u1", "plan": "pro", "age": 30},
                                               {"external_id": "u2", "plan": "free"}]  # fmt: skip
    deliver_all(s, sent)
    s.close()

    s = backend(path)  # the next night
    sent, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 31}), ("u2", {"plan": "free"})))
    assert unchanged == 1
    assert sent.objects == [{"external_id": "u1", "age": 31}]  # only the changed attribute
    assert sent.indices == [0] and sent.user_keys == ["external_id:u1"]


def test_operations_are_always_sent_and_never_remembered(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    row = ("u1", {"plan": "pro", "logins": {"inc": 1}, "tags": {"add": ["a"]}})
    sent, _ = s.changed("users", "attributes", users(row))
    deliver_all(s, sent)
    again, unchanged = s.changed("users", "attributes", users(row))
    assert unchanged == 0 and again.objects == [{"external_id": "u1", "logins": {"inc": 1}, "tags": {"add": ["a"]}}]


def test_a_failed_delivery_forgets_the_user(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    sent, _ = s.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 30})))
    deliver_all(s, sent)
    changed, _ = s.changed("users", "attributes", users(("u1", {"plan": "basic", "age": 30})))
    assert changed.objects == [{"external_id": "u1", "plan": "basic"}]
    deliver_all(s, changed, ok=False)  # Braze never got it
    resend, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "basic", "age": 30})))
    assert unchanged == 0 and resend.objects == [{"external_id": "u1", "plan": "basic", "age": 30}]


def test_later_rows_of_a_run_compare_with_what_the_run_just_sent(tmp_path: Path, backend: Open) -> None:
    """Stored basic; this run has pro then basic for the same user: both must go, in order."""
    s = backend(tmp_path / "s.sqlite")
    first, _ = s.changed("users", "attributes", users(("u1", {"plan": "basic"})))
    deliver_all(s, first)
    same_chunk, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "pro"}), ("u1", {"plan": "basic"})))
    assert unchanged == 0 and [o["plan"] for o in same_chunk.objects] == ["pro", "basic"]
    next_chunk, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "basic"})))
    assert unchanged == 1  # same as the pending value just sent
    deliver_all(s, same_chunk)
    assert s.changed("users", "attributes", users(("u1", {"plan": "basic"})))[1] == 1


def test_one_failure_among_a_users_objects_forgets_the_user(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    both, _ = s.changed("users", "attributes", users(("u1", {"plan": "pro"}), ("u1", {"age": 40})))
    assert both.delta_keys is not None
    s.settle("users", [both.delta_keys[0]], False)
    s.settle("users", [both.delta_keys[1]], True)
    again, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 40})))
    assert unchanged == 0 and again.objects == [{"external_id": "u1", "plan": "pro", "age": 40}]


def test_a_crashed_runs_pending_decisions_are_discarded(tmp_path: Path, backend: Open) -> None:
    path = tmp_path / "s.sqlite"
    s = backend(path)
    sent, _ = s.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 30})))
    deliver_all(s, sent)
    s.changed("users", "attributes", users(("u1", {"plan": "basic", "age": 30})))  # sent, then the process died
    s.close()
    s = backend(path)
    # Braze may hold basic (applied before the crash) or pro: the old value must be sent too, and all of it.
    back, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "pro", "age": 30})))
    assert unchanged == 0 and back.objects == [{"external_id": "u1", "plan": "pro", "age": 30}]


def test_identifier_keys_are_always_sent_never_compared(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    rows = chunk_of([{"email": "a@example.com", "plan": "pro", "_update_existing_only": True}], ["email:a@example.com"])
    sent, _ = s.changed("users", "attributes", rows, id_key="email")
    deliver_all(s, sent)
    rows = chunk_of([{"email": "a@example.com", "plan": "free", "_update_existing_only": True}], ["email:a@example.com"])
    changed, _ = s.changed("users", "attributes", rows, id_key="email")
    assert changed.objects == [{"email": "a@example.com", "plan": "free", "_update_existing_only": True}]


def test_events_already_delivered_are_skipped_once_only(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    e1 = {"external_id": "u1", "name": "played", "time": "2026-01-01T00:00:00Z", "properties": {"score": 1}}
    e2 = {**e1, "time": "2026-01-02T00:00:00Z"}
    sent, unchanged = s.changed("events", "events", chunk_of([e1, e2, e1], ["u1"] * 3, "events"))
    assert unchanged == 1 and sent.objects == [e1, e2]  # the identical third row is the same event
    assert sent.delta_keys is not None
    s.settle("events", [sent.delta_keys[0]], True)
    s.settle("events", [sent.delta_keys[1]], False)
    rerun, unchanged = s.changed("events", "events", chunk_of([e1, e2], ["u1"] * 2, "events"))
    assert unchanged == 1 and rerun.objects == [e2]  # e1 was delivered; e2 failed, so it goes again


def test_read_only_compares_without_writing(tmp_path: Path, backend: Open) -> None:
    path = tmp_path / "s.sqlite"
    assert backend(path, read_only=True).changed("users", "attributes", users(("u1", {"a": 1})))[1] == 0
    assert not path.exists()  # (the SQLite backend: no file created)
    s = backend(path)
    deliver_all(s, s.changed("users", "attributes", users(("u1", {"a": 1})))[0])
    s.close()
    ro = backend(path, read_only=True)
    assert ro.changed("users", "attributes", users(("u1", {"a": 1})))[1] == 1
    ro.changed("users", "attributes", users(("u1", {"a": 2})))
    ro.close()
    assert backend(path).changed("users", "attributes", users(("u1", {"a": 1})))[1] == 1  # nothing pending


def test_full_sends_everything_and_refreshes(tmp_path: Path, backend: Open) -> None:
    path = tmp_path / "s.sqlite"
    s = backend(path)
    deliver_all(s, s.changed("users", "attributes", users(("u1", {"a": 1})))[0])
    s.close()
    full = backend(path, full=True)
    sent, unchanged = full.changed("users", "attributes", users(("u1", {"a": 1, "b": 2})))
    assert unchanged == 0 and sent.objects == [{"external_id": "u1", "a": 1, "b": 2}]
    deliver_all(full, sent)
    full.close()
    assert backend(path).changed("users", "attributes", users(("u1", {"a": 1, "b": 2})))[1] == 1


def test_streams_do_not_share_state(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    sent, _ = s.changed("users", "attributes", users(("u1", {"a": 1})))
    deliver_all(s, sent)
    assert s.changed("other", "attributes", users(("u1", {"a": 1})))[1] == 0


def test_a_user_never_sent_is_sent_even_without_attributes(tmp_path: Path, backend: Open) -> None:
    """An identifier-only object creates the profile at Braze; the first time, it must go."""
    s = backend(tmp_path / "s.sqlite")
    sent, unchanged = s.changed("users", "attributes", users(("u1", {})))
    assert unchanged == 0 and sent.objects == [{"external_id": "u1"}]
    deliver_all(s, sent)
    assert s.changed("users", "attributes", users(("u1", {})))[1] == 1


def test_full_sends_rows_identical_to_the_state(tmp_path: Path, backend: Open) -> None:
    path = tmp_path / "s.sqlite"
    s = backend(path)
    deliver_all(s, s.changed("users", "attributes", users(("u1", {"a": 1})))[0])
    s.close()
    full = backend(path, full=True)
    sent, unchanged = full.changed("users", "attributes", users(("u1", {"a": 1})))
    assert unchanged == 0 and sent.objects == [{"external_id": "u1", "a": 1}]
    assert (full.last.added, full.last.changed) == (0, 1)  # the state knew u1


def test_counts_added_changed_unchanged(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    sent, _ = s.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 1}), ("u3", {"a": 1})))
    assert (s.last.added, s.last.changed, s.last.unchanged) == (3, 0, 0)
    deliver_all(s, sent)
    s.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 2}), ("u4", {"a": 1}), ("u3", {"a": 1})))
    assert (s.last.added, s.last.changed, s.last.unchanged) == (1, 1, 2)


def test_long_values_are_remembered_by_digest(tmp_path: Path, backend: Open) -> None:
    """A record over 1 KB keeps long values as digests: the state stays small, changes are still seen."""
    path = tmp_path / "s.sqlite"
    s = backend(path)
    bio, notes = "x" * 3000, ["n" * 50] * 30
    sent, _ = s.changed("users", "attributes", users(("u1", {"bio": bio, "notes": notes, "plan": "pro"})))
    deliver_all(s, sent)
    # the record holds a 32-character digest, not the 3,000 characters
    assert 0 < len(stored_record(s, "external_id:u1") or b"") < 600
    assert s.changed("users", "attributes", users(("u1", {"bio": bio, "notes": notes, "plan": "pro"})))[1] == 1
    changed, _ = s.changed("users", "attributes", users(("u1", {"bio": bio + "!", "notes": notes, "plan": "pro"})))
    assert changed.objects == [{"external_id": "u1", "bio": bio + "!"}]
    short, _ = s.changed("users", "attributes", users(("u1", {"bio": "short", "notes": notes, "plan": "pro"})))
    assert short.objects == [{"external_id": "u1", "bio": "short"}]


def test_known_keys_and_forget(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    sent, _ = s.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 1})))
    assert set(s.known_keys("users")) == set()  # pending is not confirmed
    deliver_all(s, sent)
    assert set(s.known_keys("users")) == {"external_id:u1", "external_id:u2"} and set(s.known_keys("other")) == set()
    assert (s.known_count("users"), s.known_count("other")) == (2, 0)
    assert not s.holds_nothing("users") and s.holds_nothing("other")
    s.forget("users", ["external_id:u1"])
    assert set(s.known_keys("users")) == {"external_id:u2"} and s.known_count("users") == 1
    assert s.changed("users", "attributes", users(("u1", {"a": 1})))[1] == 0  # forgotten: sent again


def test_found_count_counts_distinct_known_users_until_the_run_writes_the_stream(tmp_path: Path, backend: Open) -> None:
    first = backend(tmp_path / "s.sqlite")
    deliver_all(first, first.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 1})))[0])
    first.close()
    s = backend(tmp_path / "s.sqlite")
    assert s.found_count("users") is None  # not tracked
    s.track_found("users")
    assert s.found_count("users") == 0
    s.changed("users", "attributes", users(("u1", {"a": 1}), ("u3", {"a": 1})))  # u3: not known, not found
    s.changed("users", "attributes", users(("u1", {"a": 1})))  # u1 again: counted once
    assert s.found_count("users") == 1
    s.changed("users", "attributes", users(("u2", {"a": 1})))
    assert s.found_count("users") == 2
    sent, _ = s.changed("users", "attributes", users(("u4", {"a": 1})))
    deliver_all(s, sent)  # the run wrote the stream: a later lookup may find what it confirmed itself
    assert s.found_count("users") is None
    s.changed("users", "attributes", users(("u4", {"a": 1})))
    assert s.found_count("users") is None


def test_an_operation_on_a_known_user_that_fails_forgets_the_user(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    deliver_all(s, s.changed("users", "attributes", users(("u1", {"plan": "pro"})))[0])
    ops, unchanged = s.changed("users", "attributes", users(("u1", {"plan": "pro", "logins": {"inc": 1}})))
    assert unchanged == 0 and ops.objects == [{"external_id": "u1", "logins": {"inc": 1}}]
    deliver_all(s, ops, ok=False)
    assert set(s.known_keys("users")) == set()


# ---- deciding on the objects' JSON ---------------------------------------------------------------------


def json_users(*rows: dict[str, Any]) -> MappedChunk:
    n = len(rows)
    chunk = Chunk("users.csv", pa.table({"i": list(range(n))}), list(range(2, n + 2)))
    return MappedChunk("attributes", chunk, encoded(list(rows)), list(range(n)), [f"external_id:{r['external_id']}" for r in rows])


def stored_record(s: DeltaState, key: str) -> bytes | None:
    s.commit()  # an attribute's confirmation may wait for a later transaction
    return s.store.lookup("users", [key])[0]


def test_json_objects_new_or_unchanged_are_never_decoded(tmp_path: Path, backend: Open) -> None:
    """New users go as mapping encoded them; unchanged ones are skipped on their JSON alone."""
    s = backend(tmp_path / "s.sqlite")
    first = json_users({"external_id": "u1", "plan": "pro", "age": 30}, {"external_id": "u2", "plan": "free"})
    sent, unchanged = s.changed("users", "attributes", first)
    assert unchanged == 0 and sent.objects is first.objects and sent.delta_keys == first.user_keys
    deliver_all(s, sent)
    again = json_users({"external_id": "u1", "plan": "pro", "age": 30}, {"external_id": "u2", "plan": "free"})
    assert s.changed("users", "attributes", again)[1] == 2
    assert isinstance(first.objects, EncodedObjects) and isinstance(again.objects, EncodedObjects)
    assert first.objects._dicts == {} and again.objects._dicts == {}  # no object was decoded


def test_json_that_differs_is_compared_attribute_by_attribute(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    deliver_all(s, s.changed("users", "attributes", json_users({"external_id": "u1", "plan": "pro", "age": 30, "c": "FR"}))[0])
    sent, unchanged = s.changed("users", "attributes", json_users({"external_id": "u1", "plan": "pro", "age": 31, "c": "FR"},
                                                                    {"external_id": "u2", "plan": "free"}))  # fmt: skip
    assert unchanged == 0 and (s.last.added, s.last.changed) == (1, 1)
    assert isinstance(sent.objects, EncodedObjects)  # still JSON for the packer: the reduced object re-encoded
    assert sent.objects.encoded(0) == b'{"external_id":"u1","age":31}' and sent.objects.encoded(1) == b'{"external_id":"u2","plan":"free"}'
    deliver_all(s, sent)
    assert stored_record(s, "external_id:u1") == b'{"external_id":"u1","plan":"pro","age":31,"c":"FR"}'  # the row's own JSON
    assert s.changed("users", "attributes", json_users({"external_id": "u1", "plan": "pro", "age": 31, "c": "FR"}))[1] == 1


def test_same_values_in_other_json_are_unchanged_and_the_record_refreshed(tmp_path: Path, backend: Open) -> None:
    """Another key order (a mapping edited, or a record of the previous layout): compared attribute by
    attribute, unchanged, and the record becomes the row's JSON so the next run compares the JSON alone."""
    s = backend(tmp_path / "s.sqlite")
    deliver_all(s, s.changed("users", "attributes", json_users({"external_id": "u1", "plan": "pro", "age": 30}))[0])
    assert s.changed("users", "attributes", json_users({"external_id": "u1", "age": 30, "plan": "pro"}))[1] == 1
    assert stored_record(s, "external_id:u1") == b'{"external_id":"u1","age":30,"plan":"pro"}'
    # A row holding fewer attributes than the record: unchanged, but the record keeps them all.
    assert s.changed("users", "attributes", json_users({"external_id": "u1", "age": 30}))[1] == 1
    assert stored_record(s, "external_id:u1") == b'{"external_id":"u1","age":30,"plan":"pro"}'


# The table as the previous layout wrote it: records were the sorted JSON of the values (fingerprints.record).
PREVIOUS_LAYOUT = """
CREATE TABLE delta (stream TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY (stream, key)) WITHOUT ROWID;
CREATE TABLE state (stream TEXT, key TEXT, attribute TEXT, fingerprint TEXT);
"""


def test_a_state_file_of_the_previous_layout_still_works(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(PREVIOUS_LAYOUT)
    long_bio = "x" * 2000
    old = {"u1": {"age": 30, "external_id": "u1", "plan": "pro"}, "u2": {"external_id": "u2", "plan": "free"},
           "u3": {"bio": long_bio, "external_id": "u3"}}  # fmt: skip
    db.executemany("INSERT INTO delta VALUES ('users', ?, ?)", [(f"external_id:{u}", fp.record(v)) for u, v in old.items()])
    db.commit()
    db.close()
    s = DeltaState(SqliteStore(path, read_only=False))
    sent, unchanged = s.changed("users", "attributes", json_users({"external_id": "u1", "plan": "pro", "age": 30},
                                                                    {"external_id": "u2", "plan": "pro"},
                                                                    {"external_id": "u3", "bio": long_bio}))  # fmt: skip
    assert unchanged == 2 and (s.last.added, s.last.changed) == (0, 1)
    assert sent.objects == [{"external_id": "u2", "plan": "pro"}]
    deliver_all(s, sent)
    assert stored_record(s, "external_id:u1") == b'{"external_id":"u1","plan":"pro","age":30}'  # refreshed
    assert fp.load(stored_record(s, "external_id:u3") or b"")["bio"] != long_bio  # long values stay digests
    s.close()
    s = DeltaState(SqliteStore(path, read_only=False))
    assert s.changed("users", "attributes", json_users({"external_id": "u1", "plan": "pro", "age": 30},
                                                       {"external_id": "u2", "plan": "pro"},
                                                       {"external_id": "u3", "bio": long_bio}))[1] == 3  # fmt: skip


def test_a_run_that_began_on_an_empty_state_reads_what_it_confirmed(tmp_path: Path, backend: Open) -> None:
    s = backend(tmp_path / "s.sqlite")
    deliver_all(s, s.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 1})))[0])
    again, unchanged = s.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 2}), ("u3", {"a": 1})))
    assert unchanged == 1 and (s.last.added, s.last.changed) == (1, 1)
    assert again.objects == [{"external_id": "u2", "a": 2}, {"external_id": "u3", "a": 1}]


class _SettledMeanwhile(SqliteStore):
    """A store whose lookup lets a writer thread settle right after it read (the lookup runs without the lock)."""

    meanwhile: Callable[[], None] | None = None

    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]:
        out = super().lookup(stream, keys, rows)
        if self.meanwhile is not None:
            self.meanwhile, settle = None, self.meanwhile
            settle()
        return out


def test_a_key_settled_during_its_chunks_lookup_is_read_again(tmp_path: Path) -> None:
    store = _SettledMeanwhile(tmp_path / "s.sqlite", read_only=False)
    s = DeltaState(store)
    deliver_all(s, s.changed("users", "attributes", users(("u0", {"a": 1})))[0])  # the state is not empty
    sent, _ = s.changed("users", "attributes", users(("u1", {"a": 1})))  # in flight
    store.meanwhile = lambda: deliver_all(s, sent)  # ... confirmed after the next chunk's lookup read nothing
    again, unchanged = s.changed("users", "attributes", users(("u1", {"a": 1}), ("u2", {"a": 1})))
    assert unchanged == 1 and again.objects == [{"external_id": "u2", "a": 1}]


def test_seen_answers_whether_a_key_may_have_been_added_before() -> None:
    seen = Seen()
    assert not seen.add(["a", "b", "a"]).any()  # a repeat within one call is not "before"
    assert seen.add(["a", "c", "b"]).tolist() == [True, False, True]
