"""pack_track_array over EncodedObjects (delivery/encoded.py) gives exactly the requests of the dict path:
same bodies, tokens, user keys and oversize flags, with user runs, byte caps, oversize objects and
non-contiguous positions."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from connector.delivery.batching import pack_track_array
from connector.records import EncodedObjects


def encode(objs: list[dict[str, Any]]) -> EncodedObjects:
    parts = [orjson.dumps(o) + b"," for o in objs]
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    return EncodedObjects(b"".join(parts), offsets)


def shape(objects: Any, keys: list[str], positions: Any, **caps: int) -> list[tuple[Any, ...]]:
    return [
        (r.body, list(r.tokens), list(r.keys), r.oversize, [(i.array, i.index) for i in r.items])
        for r in pack_track_array("events", objects, keys, positions, **caps)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_encoded_packing_equals_dict_packing(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 74, 75, 76, 500])
    per_user = rng.choice([1, 3, 40])
    objs = [
        {"external_id": f"u{i // per_user}", "i": i, "pad": "é" * (5000 if rng.random() < 0.02 else rng.randrange(200))}
        for i in range(n)
    ]
    keys = [f"external_id:{o['external_id']}" for o in objs]
    enc = encode(objs)
    for caps in ({}, {"max_objects": 10, "max_bytes": 3_000}, {"max_objects": 50, "max_bytes": 1_200}):
        assert shape(enc, keys, range(n), **caps) == shape(objs, keys, range(n), **caps)
        picked = sorted(rng.sample(range(n), n // 2))
        assert shape(enc, keys, picked, **caps) == shape(objs, keys, picked, **caps)
        tail = range(n // 3, n)
        assert shape(enc, keys, tail, **caps) == shape(objs, keys, tail, **caps)


def test_an_object_over_the_cap_alone_is_its_own_oversize_request() -> None:
    objs = [{"external_id": "a"}, {"external_id": "b", "pad": "x" * 500}, {"external_id": "c"}]
    reqs = list(pack_track_array("attributes", encode(objs), ["a", "b", "c"], range(3), max_bytes=200))
    assert [(list(r.tokens), r.oversize) for r in reqs] == [([0], False), ([1], True), ([2], False)]
    assert orjson.loads(reqs[1].body) == {"attributes": [objs[1]]}
