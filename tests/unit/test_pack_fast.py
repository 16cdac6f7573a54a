"""batching fast paths: pack_track_array, column-backed Request, and the user-run cut at request ends."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from connector.delivery.batching import Item, PackedItem, Request, pack_track, pack_track_array, split

ARRAYS = ("attributes", "events", "purchases")


def reference(items: list[Item], combined: bool, max_objects: int, max_bytes: int) -> list[tuple[Any, ...]]:
    """The plain greedy packer (one object at a time): (body, [(array, index, token, key)], oversize)."""
    out: list[tuple[Any, ...]] = []
    parts: dict[str, list[bytes]] = {}
    packed: list[tuple[str, int, Any, str]] = []

    def body(p: dict[str, list[bytes]]) -> bytes:
        order = [a for a in ARRAYS if a in p] + [a for a in p if a not in ARRAYS]
        return b"{" + b",".join(b'"' + a.encode() + b'":[' + b",".join(p[a]) + b"]" for a in order) + b"}"

    for it in items:
        data = orjson.dumps(it.obj)
        if len(body({it.array: [data]})) > max_bytes:
            if packed:
                out.append((body(parts), packed, False))
            out.append((body({it.array: [data]}), [(it.array, 0, it.token, it.user_key)], True))
            parts, packed = {}, []
            continue
        trial = {**parts, it.array: [*parts.get(it.array, []), data]}
        n = len(packed) if combined else len(parts.get(it.array, []))
        if packed and (n >= max_objects or len(body(trial)) > max_bytes):
            out.append((body(parts), packed, False))
            parts, packed = {}, []
            trial = {it.array: [data]}
        packed = [*packed, (it.array, len(parts.get(it.array, [])), it.token, it.user_key)]
        parts = trial
    if packed:
        out.append((body(parts), packed, False))
    return out


def shape(reqs: list[Request]) -> list[tuple[Any, ...]]:
    return [(r.body, [(p.array, p.index, p.token, p.user_key) for p in r.items], r.oversize) for r in reqs]


def mixed(n: int, seed: int, arrays: tuple[str, ...] = ARRAYS, big_every: int = 0) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        pad = "x" * (3000 if big_every and i % big_every == big_every - 1 else rng.randrange(80))
        out.append(Item(rng.choice(arrays), {"external_id": f"u{i}", "seq": i, "pad": pad}, f"u{i}", i))
    return out


@pytest.mark.parametrize("combined", [True, False])
@pytest.mark.parametrize("max_bytes", [2048, 2500, 10_000, 3_900_000])
@pytest.mark.parametrize("arrays", [ARRAYS, ("attributes",)])
def test_pack_track_matches_the_plain_greedy_packer(
    combined: bool, max_bytes: int, arrays: tuple[str, ...]
) -> None:
    src = mixed(700, seed=max_bytes, arrays=arrays, big_every=97)
    mode = "combined" if combined else "per_array"
    got = shape(list(pack_track(iter(src), batching=mode, max_objects=75, max_bytes=max_bytes)))  # type: ignore[arg-type]
    assert got == reference(src, combined, 75, max_bytes)
    if arrays == ("attributes",):
        objs, keys = [it.obj for it in src], [it.user_key for it in src]
        fast = list(pack_track_array("attributes", objs, keys, range(700), max_bytes=max_bytes))
        assert shape(fast) == got


def test_pack_track_array_takes_any_positions_as_tokens() -> None:
    objs = [{"external_id": f"u{i}", "seq": i} for i in range(300)]
    keys = [f"u{i}" for i in range(300)]
    positions = [j for j in range(300) if j % 3] + [0]
    reqs = list(pack_track_array("events", objs, keys, positions, max_objects=50))
    assert [t for r in reqs for t in r.tokens] == positions
    for r in reqs:
        body = orjson.loads(r.body)
        assert [o["seq"] for o in body["events"]] == r.tokens and r.count <= 50


def sorted_users(runs: list[int]) -> list[Item]:
    out, seq = [], 0
    for u, size in enumerate(runs):
        for _ in range(size):
            out.append(Item("attributes", {"external_id": f"u{u}", "seq": seq}, f"external_id:u{u}", seq))
            seq += 1
    return out


@pytest.mark.parametrize("max_bytes", [3_900_000, 700])
def test_input_sorted_by_user_gives_requests_without_shared_users(max_bytes: int) -> None:
    rng = random.Random(4)
    src = sorted_users([rng.randint(1, 9) for _ in range(400)])
    objs, keys = [it.obj for it in src], [it.user_key for it in src]
    for reqs in (
        list(pack_track(src, max_bytes=max_bytes)),
        list(pack_track(src, batching="per_array", max_bytes=max_bytes)),
        list(pack_track_array("attributes", objs, keys, range(len(src)), max_bytes=max_bytes, group_users=False)),
    ):
        assert [t for r in reqs for t in r.tokens] == list(range(len(src)))
        assert all(r.count <= 75 and len(r.body) <= max_bytes and not r.oversize for r in reqs)
        for a, b in zip(reqs, reqs[1:], strict=False):
            assert not a.user_keys() & b.user_keys()
        if max_bytes > 100_000:
            assert sum(r.count for r in reqs) / len(reqs) > 65  # requests stay nearly full
        for r in reqs:
            assert [o["seq"] for o in orjson.loads(r.body)["attributes"]] == r.tokens


def test_a_user_run_longer_than_a_request_still_respects_the_cap() -> None:
    src = sorted_users([3, 200, 2])
    reqs = list(pack_track(src))
    assert [r.count for r in reqs] == [3, 75, 75, 52]  # the long run spans requests; the tail joins u2
    assert [t for r in reqs for t in r.tokens] == list(range(205))


def test_run_is_not_moved_when_its_user_is_already_in_the_request() -> None:
    keys = ["a", "b", "a", "a"]  # "a" sits earlier in the request: moving its tail run would not help
    src = [Item("attributes", {"i": i}, k, i) for i, k in enumerate([*keys, "a", "c"])]
    assert [r.count for r in pack_track(src, max_objects=4)] == [4, 2]
    src = [Item("attributes", {"i": i}, k, i) for i, k in enumerate(["a", "b", "b", "b", "b", "c"])]
    assert [r.count for r in pack_track(src, max_objects=4)] == [1, 4, 1]


def test_column_request_items_find_and_constructor() -> None:
    objs, keys = [{"a": i} for i in range(10)], [f"k{i}" for i in range(10)]
    (one,) = list(pack_track_array("events", objs, keys, [7, 9]))
    assert orjson.loads(one.body) == {"events": [{"a": 7}, {"a": 9}]}
    assert one.items == [PackedItem("events", 0, 7, "k7"), PackedItem("events", 1, 9, "k9")]
    assert one.find("events", 1) == PackedItem("events", 1, 9, "k9")
    assert one.find("attributes", 0) is None and one.find("events", 2) is None
    assert one.count == 2 and one.keys == ["k7", "k9"] and one.user_keys() == {"k7", "k9"}
    src = [Item(a, {"n": i}, f"k{i}", i) for i, a in enumerate(["events", "attributes", "events"])]
    (mix,) = list(pack_track(src))
    assert mix.find("events", 1) == PackedItem("events", 1, 2, "k2") and mix.find("purchases", 0) is None
    assert orjson.loads(mix.body) == {"attributes": [{"n": 1}], "events": [{"n": 0}, {"n": 2}]}
    built = Request("users_track", mix.body, mix.items)
    assert built.count == 3 and built.tokens == [0, 1, 2] and built.find("attributes", 0) == mix.items[1]
    left, right = split(mix)
    assert left.tokens + right.tokens == [0, 1, 2]
