"""Mirror mode's pure logic: who is removed, the delete guard, /users/delete identifiers, the config rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from connector.config import Stream
from connector.delivery.deletes import delete_identifier, not_deletable
from connector.delta.removed import Presence, delete_limit, guard, legacy_alias_keys
from connector.delta.state import DeltaState
from connector.mapping import identifier_keys, map_chunk
from connector.records import Chunk, alias_key

ATTRS = [{"column": "plan"}]


def stream(**kw: Any) -> Stream:
    base: dict[str, Any] = {"name": "users", "source": {"path": "u.csv"}, "kind": "attributes",
                            "identifier": {"external_id": "id"}, "attributes": ATTRS}  # fmt: skip
    return Stream.model_validate({**base, **kw})


def test_removed_is_known_minus_present_whatever_the_order_and_repeats() -> None:
    p = Presence()
    try:
        p.see(["external_id:b", None, "external_id:a", "external_id:a"])
        p.see(["external_id:z"])  # present, never known: a new user, not a removal
        known = [f"external_id:{c}" for c in "edcba"]
        r = p.removed(lambda: known)
        assert (r.known, r.count) == (5, 3)
        assert list(r.keys()) == ["external_id:e", "external_id:d", "external_id:c"]  # in the state's order
        assert p.removed(list).count == 0  # compared again: nothing known, nothing removed
    finally:
        p.close()


def test_removed_keys_are_read_again_from_the_state_whatever_their_number() -> None:
    p = Presence()
    try:
        p.see(f"k{i}" for i in range(0, 20_000, 2))
        r = p.removed(lambda: (f"k{i}" for i in range(20_000)))
        keys = list(r.keys())
        assert r.count == len(keys) == 10_000 and len(set(keys)) == 10_000
        assert all(int(k[1:]) % 2 == 1 for k in keys)
    finally:
        p.close()


@pytest.mark.parametrize(
    ("removed", "known", "fraction", "allowed", "ok"),
    [
        (1, 10, 0.1, None, True),
        (2, 10, 0.1, None, False),
        (5, 10, 0.1, 5, True),
        (5, 10, 0.1, 4, False),
        (0, 0, 0.1, None, True),
        (3, 3, 1.0, None, True),
        (1, 3, 0.0, None, False),
        (29, 290, 0.1, None, True),  # 0.1 * 290 is 28.999... in floating point: still 29
    ],
)
def test_guard(removed: int, known: int, fraction: float, allowed: int | None, ok: bool) -> None:
    assert (guard("users", removed, known, fraction, allowed) is None) is ok


def test_guard_message_names_the_numbers_and_the_fix() -> None:
    text = guard("users", 5, 10, 0.1, None)
    assert text is not None
    assert "stream users: 5 of the 10 users" in text and "(50.0 %)" in text
    assert "max_delete_fraction 0.1 allows (1)" in text and "nothing was deleted" in text
    assert text.endswith("--allow-deletes 5")
    assert delete_limit(10, 0.1) == 1 and delete_limit(9, 0.1) == 0


def test_delete_identifiers() -> None:
    assert delete_identifier("external_id:u:1") == ("external_ids", "u:1")
    assert delete_identifier("braze_id:abc") == ("braze_ids", "abc")
    assert delete_identifier("user_alias:n|crm") == ("user_aliases", {"alias_name": "n", "alias_label": "crm"})
    assert delete_identifier("user_alias:a|b|c") is None  # an old unescaped key: never guessed
    assert delete_identifier("email:a@b.co") is None
    assert "predates the escaping" in not_deletable("user_alias:a|b|c")


@pytest.mark.parametrize(("name", "label"), [("a|b", "crm"), ("n", "l|x"), ("|", "|"), ("a\\", "|b"),
                                             ("a\\|", "\\"), ("x\\y", "z"), ("a", "||"), ("n", "l")])  # fmt: skip
def test_alias_keys_with_a_bar_decode_to_the_alias_they_name(name: str, label: str) -> None:
    """The key the mapping gives an alias (whatever `|` and `\\` it holds) decodes to that alias for
    /users/delete; an alias without `|` keeps the plain key that states already hold."""
    s = stream(identifier={"user_alias": {"name": "n", "label": "l"}})
    chunk = Chunk("u.csv", pa.table({"n": [name], "l": [label], "plan": ["g"]}), [2])
    [key] = identifier_keys(s, chunk)
    assert map_chunk(s, chunk, datetime.now(UTC)).user_keys == [key]  # the state's key is the same
    assert key is not None and delete_identifier(key) == ("user_aliases", {"alias_name": name, "alias_label": label})
    if "|" not in name + label:
        assert key == f"user_alias:{name}|{label}"


def test_an_old_alias_key_of_a_user_still_present_is_stale_not_removed() -> None:
    """States written before alias keys escaped `|` hold "user_alias:a|b|c": the user read (or known) under
    today's key is not removed, and the old key is listed as stale for the state to forget."""
    p = Presence()
    try:
        p.see([alias_key("a|b", "c"), "external_id:u1"])
        known = ["external_id:gone", "external_id:u1", "user_alias:a|b|c", "user_alias:p|q|r",
                 "user_alias:x|y|z", alias_key("x|y", "z")]  # fmt: skip
        assert p.removed(lambda: known).stale == []  # not an alias stream: not looked for
        r = p.removed(lambda: known, aliases=True)
        # a|b|c: read under today's key; x|y|z: its today's key is in the state (and gone with it); p|q|r:
        # nobody under any reading of it, so gone (and not deletable: where the name ends is unknown).
        assert sorted(r.stale) == ["user_alias:a|b|c", "user_alias:x|y|z"]
        assert list(r.keys()) == ["external_id:gone", "user_alias:p|q|r", alias_key("x|y", "z")]
        assert (r.known, r.count) == (4, 3)
        assert legacy_alias_keys("user_alias:a|b|c") == [alias_key("a", "b|c"), alias_key("a|b", "c")]
        assert legacy_alias_keys(alias_key("a|b", "c")) == [] and legacy_alias_keys("external_id:a|b|c") == []
    finally:
        p.close()


def test_state_known_keys_and_forget(tmp_path: Path) -> None:
    from connector.delta.stores import SqliteStore

    state = DeltaState(SqliteStore(tmp_path / "s.sqlite", read_only=False))
    try:
        rows = [(f"external_id:u{i:05d}", b"{}") for i in range(12_000)]
        state.store.write("users", list(reversed(rows)), [])
        state.store.write("other", [("external_id:y", b"{}")], [])
        keys = list(state.known_keys("users"))
        assert keys == [k for k, _ in rows]  # sorted, only confirmed users of that stream
        state.forget("users", keys[:3])
        assert next(state.known_keys("users")) == keys[3]
    finally:
        state.close()


def test_identifier_keys_match_the_mapped_user_keys_and_name_rows_the_mapping_rejects() -> None:
    s = stream(attributes=[{"column": "age", "type": "integer"}])
    table = pa.table({"id": ["a", "b", None, "d"], "age": ["1", "x", "3", "4"]})
    chunk = Chunk("u.csv", table, [2, 3, 4, 5])
    keys = identifier_keys(s, chunk)
    assert keys == ["external_id:a", "external_id:b", None, "external_id:d"]
    mapped = map_chunk(s, chunk, datetime.now(UTC))
    assert mapped.user_keys == ["external_id:a", "external_id:d"]  # b is rejected, but it was read
    alias = stream(identifier={"user_alias": {"name": "n", "label": "l"}})
    t2 = pa.table({"n": ["x", None], "l": ["crm", "crm"], "plan": ["g", "g"]})
    assert identifier_keys(alias, Chunk("u.csv", t2, [2, 3])) == ["user_alias:x|crm", None]


def test_mirror_config_rules() -> None:
    assert stream(delta=True).mirror == "report"  # the default of delta attributes streams
    assert stream().mirror is None  # no state to compare against: nothing to say
    assert stream(delta=True, on_removed="delete").mirror == "delete"
    assert stream(delta=True, incremental={"cursor": "updated_at"}).mirror is None
    cases = [
        ({"on_removed": "report"}, "on_removed needs delta: true"),
        ({"on_removed": "delete", "delta": True, "incremental": {"cursor": "u"}}, "cannot be used with incremental"),
        ({"on_removed": "delete", "delta": True, "identifier": {"email": "e"}}, "not email"),
        ({"on_removed": "report", "delta": True, "kind": "events", "attributes": [],
          "event": {"name": {"value": "x"}, "time": {"column": "t"}}}, "applies to kind attributes"),  # fmt: skip
        ({"on_removed": "erase", "delta": True}, "on_removed"),
        ({"delta": True, "max_delete_fraction": 1.5}, "max_delete_fraction"),
    ]
    for kw, message in cases:
        with pytest.raises(ValidationError, match=message):
            stream(**kw)
    assert stream(delta=True, on_removed="report", identifier={"email": "e"}).mirror == "report"
