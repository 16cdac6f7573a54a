"""Requests grouped by user (delivery/bins.py, pack_track_array's group_users): every object once, each
user's order within and across requests, a recurring user in one request when it fits, request counts
near ceil(objects / cap), chains of requests linked by split users bounded."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest

from connector.delivery.batching import pack_track_array
from connector.delivery.bins import MAX_CHAIN, plan_bins
from connector.records import EncodedObjects


def chain_depth(bins: list[list[int]], keys: list[str]) -> list[int]:
    """For each request, the longest run of earlier requests it waits on through shared users, itself counted
    (what schedule.OrderedQueue enforces)."""
    last: dict[str, int] = {}
    depth: list[int] = []
    for i, b in enumerate(bins):
        users = {keys[p] for p in b}
        depth.append(1 + max((depth[last[u]] for u in users if u in last), default=0))
        last.update(dict.fromkeys(users, i))
    return depth


def check_plan(bins: list[list[int]], keys: list[str], positions: list[int], cap: int) -> None:
    """Every position once; at most `cap` per request, ascending; each user's positions in source order
    across the requests."""
    flat = [p for b in bins for p in b]
    assert sorted(flat) == sorted(positions) and len(flat) == len(positions)
    assert all(0 < len(b) <= cap and b == sorted(b) for b in bins)
    seen: dict[str, int] = {}
    for b in bins:
        for p in b:
            assert seen.get(keys[p], -1) < p  # a user's later object never before an earlier one
            seen[keys[p]] = p


def requests_per_user(bins: list[list[int]], keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in bins:
        for u in {keys[p] for p in b}:
            out[u] = out.get(u, 0) + 1
    return out


def shuffled(sizes: list[int], seed: int) -> list[str]:
    keys = [f"u{u}" for u, s in enumerate(sizes) for _ in range(s)]
    random.Random(seed).shuffle(keys)
    return keys


def test_distinct_users_have_no_plan_and_keep_source_order() -> None:
    keys = [f"u{i}" for i in range(300)]
    assert plan_bins(keys, range(300), 75) is None
    objs = [{"external_id": k, "i": i} for i, k in enumerate(keys)]
    grouped = list(pack_track_array("events", objs, keys, range(300)))
    plain = list(pack_track_array("events", objs, keys, range(300), group_users=False))
    assert [(r.body, r.tokens) for r in grouped] == [(r.body, r.tokens) for r in plain]


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_keep_every_object_once_and_each_users_order(seed: int) -> None:
    rng = random.Random(seed)
    cap = rng.choice([2, 3, 25, 50, 75])
    sizes = [rng.choice([1, 1, 1, 2, 3, rng.randint(1, 2 * cap), rng.randint(1, 300)]) for _ in range(rng.randint(2, 400))]
    keys = shuffled(sizes, seed)
    positions = sorted(rng.sample(range(len(keys)), rng.randint(len(keys) // 2, len(keys))))
    plan = plan_bins(keys, positions, cap)
    if plan is None:
        assert len({keys[p] for p in positions}) == len(positions)
        return
    check_plan(plan, keys, positions, cap)
    # A user whose objects fit a request is in at most two (split once, only to fill a request); a split
    # chain is at most MAX_CHAIN requests long unless a user longer than a request makes it.
    counts = {u: sum(1 for p in positions if keys[p] == u) for u in {keys[p] for p in positions}}
    spread = requests_per_user(plan, keys)
    assert all(spread[u] <= 2 for u, c in counts.items() if c <= cap)
    assert all(spread[u] <= math.ceil(c / cap) + 1 for u, c in counts.items())
    if max(counts.values()) <= cap:
        assert max(chain_depth(plan, keys)) <= MAX_CHAIN


@pytest.mark.parametrize("seed", range(4))
def test_users_recurring_within_a_chunk_sit_in_one_request_and_requests_stay_full(seed: int) -> None:
    """1 to 10 objects a user, shuffled (events of recurring users): the minimum number of requests, every
    user in exactly one, no request waiting on another."""
    rng = random.Random(seed)
    keys = shuffled([rng.randint(1, 10) for _ in range(2000)], seed)
    plan = plan_bins(keys, range(len(keys)), 75)
    assert plan is not None
    check_plan(plan, keys, list(range(len(keys))), 75)
    assert len(plan) == math.ceil(len(keys) / 75)
    assert set(requests_per_user(plan, keys).values()) == {1}
    assert max(chain_depth(plan, keys)) == 1


def test_the_readme_trial_shape_reaches_the_minimum_with_short_chains() -> None:
    """750 events of 50 users (15 each, interleaved) at 25 a request: source order gives 30 requests chained
    15 deep, grouping without splits 50; the plan gives 30 with chains of at most MAX_CHAIN."""
    keys = [f"u{i % 50}" for i in range(750)]
    plan = plan_bins(keys, range(750), 25)
    assert plan is not None
    check_plan(plan, keys, list(range(750)), 25)
    assert len(plan) == 30 and max(chain_depth(plan, keys)) == MAX_CHAIN == 3
    source = [list(range(i, i + 25)) for i in range(0, 750, 25)]
    assert max(chain_depth(source, keys)) == 15
    whole = plan_bins(keys, range(750), 25, max_chain=1)  # never split a run that fits a request
    assert whole is not None and len(whole) == 50 and set(requests_per_user(whole, keys).values()) == {1}


def test_medium_runs_stay_near_the_minimum() -> None:
    """20-60 objects a user: whole runs alone would leave rooms no run fits; splits bounded to chains of 3."""
    rng = random.Random(3)
    keys = shuffled([rng.randint(20, 60) for _ in range(300)], 3)
    plan = plan_bins(keys, range(len(keys)), 75)
    assert plan is not None
    assert len(plan) <= math.ceil(len(keys) / 75) * 1.02 + 1
    assert max(chain_depth(plan, keys)) <= MAX_CHAIN


def test_a_user_longer_than_a_request_opens_one_then_fills_its_own() -> None:
    keys = ["a"] * 3 + ["big"] * 200 + ["b"] * 2 + ["c"]
    plan = plan_bins(keys, range(len(keys)), 75)
    assert plan is not None
    check_plan(plan, keys, list(range(len(keys))), 75)
    users = [sorted({keys[p] for p in b}) for b in plan]
    # a (3) opens the first request, b and c fill it, and no whole run fits its last 69 places: the big
    # user's first 69 objects take them; its rest (131) opens the next request with 131 % 75 = 56 of them,
    # and a whole request of its own follows. 3 requests = ceil(206 / 75), the big user in ceil(200 / 75).
    assert [len(b) for b in plan] == [75, 56, 75]
    assert users == [["a", "b", "big", "c"], ["big"], ["big"]]
    assert plan[0] == list(range(0, 72)) + [203, 204, 205] and plan[1] == list(range(72, 128))


def test_a_user_longer_than_a_request_is_split_to_fill_a_room_only_when_that_costs_it_no_request() -> None:
    # 150 objects take 2 requests; filling a's room of 65 with 65 of them would leave 85: 3 requests.
    keys = ["a"] * 10 + ["big"] * 150
    plan = plan_bins(keys, range(len(keys)), 75)
    assert plan is not None
    check_plan(plan, keys, list(range(len(keys))), 75)
    assert [len(b) for b in plan] == [10, 75, 75] and requests_per_user(plan, keys)["big"] == 2
    # with a small run left, that one fills the room instead
    keys = ["a"] * 10 + ["big"] * 150 + ["c"] * 70
    plan = plan_bins(keys, range(len(keys)), 75)
    assert plan is not None
    check_plan(plan, keys, list(range(len(keys))), 75)
    assert requests_per_user(plan, keys) == {"a": 1, "big": 2, "c": 2} and len(plan) == 4


def test_positions_are_tokens_and_bodies_follow_the_plan() -> None:
    """A per-object error names (array, index): find() gives back the token of the object at that index."""
    keys = shuffled([3, 1, 7, 2, 1, 5] * 30, 8)
    objs = [{"external_id": k, "seq": i} for i, k in enumerate(keys)]
    reqs = list(pack_track_array("events", objs, keys, range(len(keys)), max_objects=20))
    assert sorted(t for r in reqs for t in r.tokens) == list(range(len(keys)))
    assert len(reqs) == math.ceil(len(keys) / 20)
    for r in reqs:
        body = orjson.loads(r.body)["events"]
        assert [o["seq"] for o in body] == r.tokens and r.keys == [keys[t] for t in r.tokens]
        for index, o in enumerate(body):
            item = r.find("events", index)
            assert item is not None and item.token == o["seq"] and item.user_key == keys[o["seq"]]


@pytest.mark.parametrize("max_bytes", [3_900_000, 900])
def test_byte_cap_cuts_a_planned_request_and_keeps_each_users_order(max_bytes: int) -> None:
    keys = shuffled([rng_size for rng_size in [4, 9, 1, 2] * 40], 5)
    objs = [{"external_id": k, "seq": i, "pad": "x" * (i % 7 * 20)} for i, k in enumerate(keys)]
    reqs = list(pack_track_array("attributes", objs, keys, range(len(keys)), max_bytes=max_bytes))
    assert all(len(r.body) <= max_bytes and not r.oversize and r.count <= 75 for r in reqs)
    check_plan([list(r.tokens) for r in reqs], keys, list(range(len(keys))), 75)
    if max_bytes == 900:
        assert len(reqs) > math.ceil(len(keys) / 75)


def test_encoded_objects_give_the_bodies_of_dicts() -> None:
    keys = shuffled([1, 2, 3, 40, 90] * 20, 2)
    objs: list[dict[str, Any]] = [{"external_id": k, "seq": i, "name": "é" * (i % 5)} for i, k in enumerate(keys)]
    parts = [orjson.dumps(o) + b"," for o in objs]
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    encoded = EncodedObjects(b"".join(parts), offsets)
    positions = [j for j in range(len(keys)) if j % 11]
    for max_bytes in (3_900_000, 1500):
        a = list(pack_track_array("events", objs, keys, positions, max_bytes=max_bytes))
        b = list(pack_track_array("events", encoded, keys, positions, max_bytes=max_bytes))
        assert [(r.body, r.tokens, r.keys, r.oversize) for r in a] == [(r.body, r.tokens, r.keys, r.oversize) for r in b]


def test_one_object_per_request_keeps_each_users_order() -> None:
    keys = [f"u{i % 4}" for i in range(20)]
    plan = plan_bins(keys, range(20), 1)
    assert plan is not None
    check_plan(plan, keys, list(range(20)), 1)
