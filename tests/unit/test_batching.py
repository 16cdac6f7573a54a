"""batching: combined / per-array packing, byte caps, order, index mapping, canvas, split."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson
import pytest

from connector.delivery.batching import (
    ENDPOINT_PATHS,
    Item,
    Request,
    objects_cap,
    pack_canvas,
    pack_single,
    pack_track,
    split,
)

ARRAYS = ("attributes", "events", "purchases")


def items(n: int, seed: int = 1, users: int = 10) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        array = rng.choice(ARRAYS)
        uid = f"u{rng.randrange(users)}"
        out.append(
            Item(
                array, {"external_id": uid, "seq": i, "pad": "x" * rng.randrange(50)}, f"external_id:{uid}", i
            )
        )
    return out


def objects_of(req: Request) -> list[tuple[int, dict]]:
    """(token, object at (array, index) in the body) for every packed item, checking the mapping."""
    body = orjson.loads(req.body)
    return [(p.token, body[p.array][p.index]) for p in req.items]


def test_combined_at_most_75_in_total_and_index_maps_to_the_object() -> None:
    src = items(1000)
    reqs = list(pack_track(iter(src), batching="combined"))
    assert all(len(r.items) <= 75 for r in reqs)
    assert sum(len(r.items) for r in reqs) == 1000
    assert len(reqs) == -(-1000 // 75)
    for r in reqs:
        assert r.endpoint == "users_track" and not r.oversize
        for token, obj in objects_of(r):
            assert obj["seq"] == token  # (array, index) leads back to the exact source object


def test_per_array_at_most_75_in_each_array_and_more_than_75_in_total() -> None:
    reqs = list(pack_track(items(1000), batching="per_array"))
    assert max(len(r.items) for r in reqs) > 75
    for r in reqs:
        body = orjson.loads(r.body)
        assert all(len(body.get(a, [])) <= 75 for a in ARRAYS)
        assert set(body) <= set(ARRAYS)
        for token, obj in objects_of(r):
            assert obj["seq"] == token


def test_combined50_at_most_50_in_total_for_mau_contracts() -> None:
    reqs = list(pack_track(items(1000), batching="combined50"))
    assert max(len(r.items) for r in reqs) == 50 and sum(len(r.items) for r in reqs) == 1000
    assert [t for r in reqs for t, _ in objects_of(r)] == list(range(1000))
    assert objects_cap("combined50", 75) == 50 and objects_cap("combined50", 20) == 20
    assert objects_cap("combined", 75) == 75 and objects_cap("per_array", 75) == 75


@pytest.mark.parametrize("batching", ["combined", "per_array", "combined50"])
def test_source_order_kept_across_and_within_requests(batching: str) -> None:
    reqs = list(pack_track(items(600), batching=batching))  # type: ignore[arg-type]
    tokens = [p.token for r in reqs for p in r.items]
    assert tokens == list(range(600))
    for r in reqs:  # within one array, objects appear in source order
        body = orjson.loads(r.body)
        for a in ARRAYS:
            seqs = [o["seq"] for o in body.get(a, [])]
            assert seqs == sorted(seqs)


def test_byte_cap_is_exact() -> None:
    src = items(500, seed=3)
    for cap in (1024, 2000, 5000):
        reqs = list(pack_track(src, max_bytes=cap))
        assert all(len(r.body) <= cap for r in reqs)
        assert [p.token for r in reqs for p in r.items] == list(range(500))
    # a tight cap fills requests: adding the next object would have crossed it
    reqs = list(pack_track(src, max_bytes=2000))
    assert sum(len(r.body) for r in reqs) / len(reqs) > 1500


def test_oversize_object_is_yielded_alone_and_flagged() -> None:
    small = [Item("attributes", {"external_id": f"u{i}"}, f"u{i}", i) for i in range(3)]
    big = Item("events", {"external_id": "big", "p": "x" * 3000}, "big", 99)
    reqs = list(pack_track([small[0], big, small[1], small[2]], max_bytes=2048))
    assert [([p.token for p in r.items], r.oversize) for r in reqs] == [
        ([0], False),
        ([99], True),
        ([1, 2], False),
    ]


def test_pack_track_streams() -> None:
    consumed = 0

    def gen() -> Iterator[Item]:
        nonlocal consumed
        for it in items(10_000):
            consumed += 1
            yield it

    first = next(pack_track(gen()))
    assert len(first.items) == 75 and consumed <= 76


def test_canvas_50_recipients_with_canvas_id() -> None:
    src = [Item("recipients", {"external_user_id": f"u{i}"}, f"external_id:u{i}", i) for i in range(120)]
    reqs = list(pack_canvas(src, "cv-1", extra={"broadcast": False}))
    assert [len(r.items) for r in reqs] == [50, 50, 20]
    for r in reqs:
        body = orjson.loads(r.body)
        assert body["canvas_id"] == "cv-1" and body["broadcast"] is False
        assert r.endpoint == "canvas_trigger_send"
        for token, obj in objects_of(r):
            assert obj["external_user_id"] == f"u{token}"


def test_pack_single_bodies() -> None:
    src = [
        Item("events", {"external_id": "a", "name": "e"}, "a", 1),
        Item("attributes", {"external_id": "b"}, "b", 2),
    ]
    reqs = list(pack_single("users_track_sync", src))
    assert [orjson.loads(r.body) for r in reqs] == [{"events": [src[0].obj]}, {"attributes": [src[1].obj]}]
    live = Item("live_activity", {"app_id": "x", "activity_id": "a1", "content_state": {}}, "a1", 3)
    (req,) = pack_single("live_activity_update", [live])
    assert orjson.loads(req.body) == live.obj and req.items[0].token == 3
    with pytest.raises(ValueError):
        list(pack_single("users_track", src))


def test_split_halves_and_remaps_indices() -> None:
    (req,) = list(pack_track(items(75)))
    left, right = split(req)
    assert len(left.items) == 37 and len(right.items) == 38
    assert [p.token for p in left.items + right.items] == [p.token for p in req.items]
    for half in (left, right):
        for token, obj in objects_of(half):
            assert obj["seq"] == token
    (canvas,) = list(
        pack_canvas([Item("recipients", {"external_user_id": f"u{i}"}, f"u{i}", i) for i in range(5)], "c")
    )
    a, b = split(canvas)
    assert orjson.loads(a.body)["canvas_id"] == "c" and len(orjson.loads(b.body)["recipients"]) == 3
    with pytest.raises(ValueError, match="single object"):
        split(split(a)[0])


def test_endpoint_paths() -> None:
    assert ENDPOINT_PATHS["users_track"] == "/users/track"
    assert ENDPOINT_PATHS["live_activity_update"] == "/messages/live_activity/update"
