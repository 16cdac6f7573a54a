"""Pure emulator logic: time parsing, object rules, attribute semantics, rate-limit windows, fault draws."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.emulator import attribute_rules, messaging_rules, rules
from connector.emulator.faults import FaultInjector, parse_fault
from connector.emulator.limits import RateLimits, parse_rate_limit
from connector.emulator.semantics import apply_attribute, deep_merge
from connector.emulator.workspace import parse_api_keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2013-07-16T19:20:30+01:00", "2013-07-16T18:20:30.000Z"),
        ("2013-07-16T19:20:30:123Z", "2013-07-16T19:20:30.123Z"),
        ("2013-07-16", "2013-07-16T00:00:00.000Z"),
        ("12/01/2021", "2021-12-01T00:00:00.000Z"),
        ("2019-02-15 00:00:00 -0500", "2019-02-15T05:00:00.000Z"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    dt = rules.parse_time(text)
    assert dt is not None and rules.format_time(dt) == expected


@pytest.mark.parametrize("bad", ["", "yesterday", "2013-13-01", 1700000000, None])
def test_parse_time_rejects(bad: Any) -> None:
    assert rules.parse_time(bad) is None


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (datetime(999, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC), "0999-01-02T03:04:05.678Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_time_pads_the_year(dt: datetime, expected: str) -> None:
    # strftime("%Y") gives "999" on glibc; the echo must stay ISO and sort as text (first/last aggregation).
    assert rules.format_time(dt) == expected


def test_clamp_future() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert rules.clamp_time("2030-01-01T00:00:00Z", now) == "2024-01-01T00:00:00.000Z"
    assert rules.clamp_time("2020-01-01T00:00:00Z", now) == "2020-01-01T00:00:00.000Z"


def test_identifier_rules() -> None:
    assert attribute_rules.check_attributes({"x": 1}) == rules.ERR_IDENTIFIER
    assert (
        attribute_rules.check_attributes({"external_id": "a", "user_alias": {"alias_name": "n", "alias_label": "l"}})
        == rules.ERR_MULTIPLE
    )
    assert attribute_rules.check_attributes({"external_id": 12345}) is None  # Braze accepts numeric ids
    assert attribute_rules.check_attributes({"email": "bad"}) == rules.ERR_EMAIL
    assert attribute_rules.check_attributes({"phone": "+14155550100"}) is None
    assert attribute_rules.check_attributes({"user_alias": {"alias_name": "n"}}) is not None
    assert attribute_rules.check_attributes({"external_id": "é" * 494}) is not None  # 988 bytes


def test_recipient_rules() -> None:
    assert messaging_rules.check_recipient({"external_user_id": "a"}) is None
    assert messaging_rules.check_recipient({"email": "a@b.co", "prioritization": ["unidentified"]}) is None
    assert messaging_rules.check_recipient({"email": "a@b.co"}) is not None
    assert (
        messaging_rules.check_recipient(
            {
                "user_alias": {"alias_name": "n", "alias_label": "l"},
                "send_to_existing_only": False,
                "attributes": {},
            }
        )
        is not None
    )
    assert (
        messaging_rules.recipient_key({"user_alias": {"alias_name": "n", "alias_label": "l"}})
        == "user_alias:n|l"
    )


def test_apply_attribute_semantics() -> None:
    a: dict[str, Any] = {}
    assert apply_attribute(a, "n", {"inc": 2}, merge=False, max_len=3, standard=False) == 1
    apply_attribute(a, "n", {"inc": 2.5}, merge=False, max_len=3, standard=False)
    assert a["n"] == 4.5
    apply_attribute(a, "t", ["a", "b", "c", "d"], merge=False, max_len=3, standard=False)
    assert a["t"] == ["b", "c", "d"]
    assert apply_attribute(a, "t", {"add": ["b", "e"]}, merge=False, max_len=3, standard=False) == 2
    assert a["t"] == ["d", "b", "e"]
    apply_attribute(a, "country", "Australia", merge=False, max_len=3, standard=True)
    apply_attribute(a, "gender", "f", merge=False, max_len=3, standard=True)
    assert (a["country"], a["gender"]) == ("AU", "F")
    apply_attribute(a, "country", "Atlantis", merge=False, max_len=3, standard=True)
    assert a["country"] is None
    assert apply_attribute(a, "email_subscribe", "opted_in", merge=False, max_len=3, standard=True) == 0
    apply_attribute(a, "d", {"$time": "2024-01-02"}, merge=False, max_len=3, standard=False)
    assert a["d"] == "2024-01-02T00:00:00.000Z"


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=3),
        st.integers() | st.dictionaries(st.text(min_size=1, max_size=3), st.integers(), max_size=3),
        max_size=4,
    ),
    st.dictionaries(
        st.text(min_size=1, max_size=3),
        st.integers() | st.dictionaries(st.text(min_size=1, max_size=3), st.integers(), max_size=3),
        max_size=4,
    ),
)
def test_deep_merge_keeps_all_keys_and_update_wins(base: dict[str, Any], update: dict[str, Any]) -> None:
    merged = deep_merge(base, update)
    assert set(merged) == set(base) | set(update)
    for k, v in update.items():
        if not isinstance(v, dict):
            assert merged[k] == v


def test_rate_limit_windows_with_fake_clock() -> None:
    now = [100.2]
    limits = RateLimits({"users_track": (2, 1.0)}, clock=lambda: now[0])
    assert [limits.admit("users_track").allowed for _ in range(3)] == [True, True, False]
    denied = limits.admit("users_track")
    assert denied.headers == {"X-Ratelimit-Retry-After": "1"}
    now[0] = 101.0
    ok = limits.admit("users_track")
    assert (
        ok.allowed and ok.headers["X-RateLimit-Reset"] == "102" and ok.headers["X-RateLimit-Remaining"] == "1"
    )
    # The two send endpoints share one hourly bucket by default.
    limits.admit("canvas_trigger_send")
    assert limits.admit("live_activity_update").headers["X-RateLimit-Remaining"] == str(250_000 - 2)


def test_option_parsers() -> None:
    assert parse_rate_limit("users_track=5/1") == ("users_track", (5, 1.0))
    for bad in ("nope=5/1", "users_track=5", "users_track=x/1", "users_track=0/1"):
        with pytest.raises(ValueError, match="--rate-limit"):
            parse_rate_limit(bad)
    assert parse_fault("users_track:drop=0.5") == ("users_track:drop", 0.5)
    with pytest.raises(ValueError, match="MODE"):
        parse_fault("explode=0.1")
    assert parse_api_keys(["a", "b:users.track,canvas.trigger.send", "c:d"]) == {
        "a": None, "b": frozenset({"users.track", "canvas.trigger.send"}), "c:d": None,
    }  # fmt: skip


def test_fault_draws_are_seeded_per_endpoint() -> None:
    a = FaultInjector(fault_rate=0.5, seed=3)
    b = FaultInjector(fault_rate=0.5, seed=3)
    seq_a = [a.draw("users_track") for _ in range(50)]
    b.draw("canvas_trigger_send")  # other endpoints do not disturb the sequence
    assert [b.draw("users_track") for _ in range(50)] == seq_a
    assert 10 < sum(m is not None for m in seq_a) < 40
    only = FaultInjector(faults={"users_track:503": 1.0})
    assert only.draw("users_track") == "503" and only.draw("live_activity_update") is None


def test_429_faults_come_in_bursts() -> None:
    inj = FaultInjector(faults={"users_track:429": 0.2}, seed=5, burst_429=3)
    seq = [inj.draw("users_track") for _ in range(200)]
    first = seq.index("429")
    assert seq[first : first + 3] == ["429", "429", "429"]
    runs = "".join("x" if m else "." for m in seq).split(".")
    assert all(len(r) % 3 == 0 for r in runs[:-1] if r)  # every finished burst is a multiple of three


def test_rate_limit_overrides_accept_config_objects_and_strings() -> None:
    from connector.config import RateLimit

    limits = RateLimits(
        {"users_track": RateLimit(requests=7, per_seconds=2), "users_track_sync": "3/60"}, clock=lambda: 10.0
    )
    assert limits.admit("users_track").headers["X-RateLimit-Limit"] == "7"
    assert limits.admit("users_track_sync").headers["X-RateLimit-Limit"] == "3"
    with pytest.raises(ValueError, match="unknown rate-limit endpoint"):
        RateLimits({"users_merge": (1, 1)})


def test_broadcast_windows_with_fake_clock() -> None:
    now = [120.5]
    limits = RateLimits({"broadcast": (3, 60)}, clock=lambda: now[0])
    assert [limits.admit_broadcast("a").allowed for _ in range(3)] == [True, True, True]
    denied = limits.admit_broadcast("b")
    assert not denied.allowed and denied.headers == {"X-Ratelimit-Retry-After": "60"}
    now[0] = 180.0  # the next minute: both windows start again
    # The overall window (2 left) is tighter than the audience's (9 left), so the headers describe it.
    assert limits.admit_broadcast("a").headers == {
        "X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "240",
    }  # fmt: skip
    assert limits.admit("canvas_trigger_send").headers["X-RateLimit-Remaining"] == str(250_000 - 1)
    assert parse_rate_limit("broadcast_audience=5/60") == ("broadcast_audience", (5, 60.0))


def test_fault_rate_never_draws_queued() -> None:
    inj = FaultInjector(fault_rate=1.0, seed=1)
    draws = {inj.draw("users_track") for _ in range(400)}
    assert "202" not in draws and len(draws) == 7
    assert FaultInjector(faults={"202": 1.0}).draw("canvas_trigger_send") == "202"


def test_unhashable_subscribe_states_and_overflowing_times_are_errors_not_crashes() -> None:
    from connector.emulator.rules import parse_time

    assert parse_time("9999-12-31T23:59:59-23:59") is None
    for key in ("email_subscribe", "push_subscribe"):
        for bad in ({"a": 1}, ["subscribed"]):
            assert attribute_rules.check_standard(key, bad) == f"'{key}' must be one of 'subscribed', 'unsubscribed' or 'opted_in'"


@pytest.mark.parametrize(
    ("prioritization", "ok"),
    [
        (["identified", "most_recently_updated"], True),
        (["unidentified", "least_recently_updated"], True),
        (["identified", "unidentified"], False),
        (["newest"], False),
        ([], False),
        ("identified", False),
    ],
)
def test_canvas_prioritization_values(prioritization: Any, ok: bool) -> None:
    rec = {"email": "a@example.com", "prioritization": prioritization}
    err = messaging_rules.check_recipient(rec)
    assert (err is None) is ok, err


def test_workspace_permissions_and_the_sync_beta() -> None:
    from connector.emulator.workspace import Workspace

    keys = parse_api_keys(["plain", "syncer:users.track.sync", "both:users.track,users.track.sync", "a:b:c"])
    assert keys["a:b:c"] is None  # not a permission list: a plain key that contains ':'
    ws = Workspace(api_keys=keys)
    assert [ws.allows("plain", e) for e in ("users_track", "users_track_sync", "canvas_trigger_send")] == [
        True, False, True,
    ]  # fmt: skip
    assert (ws.allows("syncer", "users_track_sync"), ws.allows("syncer", "users_track")) == (True, False)
    assert ws.allows("both", "users_track") and ws.allows("both", "users_track_sync")
    beta = Workspace(api_keys=keys, sync_beta=True)
    assert beta.allows("plain", "users_track_sync") and not beta.allows("syncer", "users_track")
    assert not ws.knows(None) and not ws.knows("nope") and ws.knows("plain")
    with pytest.raises(ValueError, match="unknown permission canvas.trigger"):
        parse_api_keys(["k:canvas.trigger"])


def test_canvas_registry() -> None:
    from connector.emulator.workspace import Workspace, parse_canvases

    assert parse_canvases(["a", "b=paused"]) == {"a": "active", "b": "paused"}
    assert parse_canvases({"c": "archived"}) == {"c": "archived"} and parse_canvases(None) == {}
    assert parse_canvases("solo") == {"solo": "active"}
    for bad in (["=paused"], ["x=gone"], {"y": "stopped"}):
        with pytest.raises(ValueError):
            parse_canvases(bad)
    ws = Workspace(api_keys={"k": None}, canvases={"a": "paused"})
    assert (ws.canvas_state("a"), ws.canvas_state("b")) == ("paused", None)
    anyone = Workspace(api_keys={"k": None}, canvases={"a": "paused"}, accept_any_canvas=True)
    assert (anyone.canvas_state("a"), anyone.canvas_state("b")) == ("paused", "active")


def test_sync_skips_rule() -> None:
    obj = {
        "external_id": "u", "first_name": "x" * 300, "s": "x" * 256, "ok": "x" * 255, "arr": ["a", "b", "c"],
        "dupes": ["a", "a", "b", "b"], "long": ["x" * 256], "add": {"add": ["y" * 256]}, "inc": {"inc": 1},
        "nested": {"k": "z" * 300},
    }  # fmt: skip
    # Standard fields and nested attributes follow their own rules; duplicates count once.
    assert attribute_rules.sync_skips(obj, max_len=2) == {"s", "arr", "long", "add"}
    assert attribute_rules.check_attributes(obj, sync=True) is None
    assert attribute_rules.check_attributes(obj) == "'s' is longer than 255 characters"


def test_apple_push_rules() -> None:
    check = messaging_rules.check_apple_push
    assert check({"alert": "hi"}) is None and check({"extra": {"k": 1}}) is None
    assert check("hi") == "'notification' must be an apple_push object"
    assert check({"extra": 1}) == check({"extra": {"aps": 1}}) == "Invalid Extra Push Payload"
    assert check({"alert": "x" * 1900}) is None  # 1,912 bytes exactly
    assert check({"alert": "x" * 1901}) == "Apple Push Length Exceeded"


def test_subscription_group_id_is_a_uuid() -> None:
    ok = attribute_rules.valid_subscription_group_id
    assert ok("ed06e19a-69b1-4f9b-a452-2db2c4e303a8") and ok("ED06E19A-69B1-4F9B-A452-2DB2C4E303A8")
    for bad in ("ed06e19a69b14f9ba4522db2c4e303a8", "{ed06e19a-69b1-4f9b-a452-2db2c4e303a8}", "", None, 1,
                "ed06e19a-69b1-4f9b-a452-2db2c4e303a8 ", "urn:uuid:ed06e19a-69b1-4f9b-a452-2db2c4e303a8"):  # fmt: skip
        assert not ok(bad), bad
