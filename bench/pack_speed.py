"""Micro-bench: objects/s of batching.pack_track and Writer._pack (dry-run writer) on users-like objects.

    python bench/pack_speed.py [--objects 200000] [--sorted-users]

Objects look like the mapped users table (external_id, first_name, email, country, plan, age,
lifetime_value, signup_at). Reports the best of 3 runs of each path; `pack_encoded` packs the same objects
pre-encoded as JSON (records.EncodedObjects, what mapping's column path hands the writer).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from connector.delivery import batching  # noqa: E402

PLANS = ("free", "pro", "team", "enterprise")
COUNTRIES = ("US", "FR", "DE", "GB", "JP", "BR")


def objects(n: int, per_user: int = 1) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random(5)
    objs: list[dict[str, Any]] = []
    keys: list[str] = []
    for i in range(n):
        uid = f"u{i // per_user}"
        objs.append(
            {
                "external_id": uid,
                "first_name": rng.choice(("Ada", "Grace", "Linus", "Alan")),
                "email": f"{uid}@example.com",
                "country": rng.choice(COUNTRIES),
                "plan": rng.choice(PLANS),
                "age": rng.randrange(18, 90),
                "lifetime_value": round(rng.random() * 1000, 2),
                "signup_at": "2021-03-04T05:06:07.000Z",
            }
        )
        keys.append(f"external_id:{uid}")
    return objs, keys


def best(fn: Any, runs: int = 3) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - t0)
    return min(times), count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=200_000)
    ap.add_argument("--per-user", type=int, default=1, help="consecutive objects per user (sorted input)")
    args = ap.parse_args()
    objs, keys = objects(args.objects, args.per_user)
    n = len(objs)

    def track() -> int:
        items = (batching.Item("attributes", objs[j], keys[j], j) for j in range(n))
        return sum(1 for _ in batching.pack_track(items))

    def writer_pack() -> int:
        from types import SimpleNamespace

        from connector.delivery.writer import Writer

        w = Writer.__new__(Writer)
        w.write = SimpleNamespace(
            batching="combined", max_objects_per_request=75, max_request_bytes=3_900_000
        )
        mapped = SimpleNamespace(objects=objs, user_keys=keys, kind="attributes")
        batch = SimpleNamespace(mapped=mapped, endpoint="users_track", canvas_id=None)
        reqs = 0
        for req in w._pack(batch, range(n)):  # type: ignore[arg-type]
            req.user_keys()  # what submit() hands to the queue
            reqs += 1
        return reqs

    from connector.records import EncodedObjects

    parts = [orjson.dumps(o) + b"," for o in objs]
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    encoded = EncodedObjects(b"".join(parts), offsets)

    def encoded_pack() -> int:
        return sum(1 for _ in batching.pack_track_array("attributes", encoded, keys, range(n)))

    for name, fn in (("pack_track", track), ("writer._pack", writer_pack), ("pack_encoded", encoded_pack)):
        secs, reqs = best(fn)
        print(f"{name:14s} {n / secs:>12,.0f} objects/s  ({secs * 1e6 / n:.2f} us/object, {reqs:,} requests)")


if __name__ == "__main__":
    main()
