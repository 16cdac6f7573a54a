"""The delta state's index in memory (delta/keyindex.py), checked against a dict: random sequences of entries
applied, merged, found and renamed, with few distinct hashes so that keys are often confirmed again and
forgotten, and with small merge thresholds so that entries wait and merge at every point."""

from __future__ import annotations

import random

import numpy as np
import pytest

from connector.delta import keyindex
from connector.delta.keyindex import KeyIndex

Model = dict[int, tuple[int, int]]  # hash -> (digest, name) of every known key


def entries(rnd: random.Random, pool: list[int], n: int, names: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n entries on hashes from the pool, a third of them forgetting (name 0); hashes may repeat in one part."""
    h = np.array([rnd.choice(pool) for _ in range(n)], np.int64)
    r = np.zeros(n, np.int64)
    for j in range(n):
        if rnd.random() > 0.33:
            names[0] += 1
            r[j] = names[0]
    d = np.where(r != 0, np.array([rnd.randint(1, 2**62) for _ in range(n)], np.int64), 0)
    return h, d, r


def applied(model: Model, h: np.ndarray, d: np.ndarray, r: np.ndarray) -> None:
    """What applying entries does to the model: in order, the later wins, name 0 forgets."""
    for hh, dd, rr in zip(h.tolist(), d.tolist(), r.tolist(), strict=True):
        if rr:
            model[hh] = (dd, rr)
        else:
            model.pop(hh, None)


def check(index: KeyIndex, model: Model, pool: list[int]) -> None:
    asked = np.array(pool + [7, -7], np.int64)  # every hash the run used, and two it never did
    d, r = index.find(asked)
    want = [model.get(h, (0, 0)) for h in asked.tolist()]
    assert list(zip(d.tolist(), r.tolist(), strict=True)) == want
    assert index.count() == len(model)
    assert sorted(index.rows().tolist()) == sorted(n for _, n in model.values())
    assert bool(np.all(index.h[1:] > index.h[:-1])) and bool(np.all(index.r != 0))  # sorted, each once, all known


def pool_of(rnd: random.Random, size: int) -> list[int]:
    """Distinct hashes spread over the whole int64 range (negative ones too: they sort first)."""
    return rnd.sample(range(-(2**63), 2**63 - 1, 2**40 + 13), size)


@pytest.mark.parametrize("seed", range(12))
def test_random_applies_merges_finds_and_renames_agree_with_a_dict(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(seed)
    monkeypatch.setattr(keyindex, "_RECENT", rnd.choice([1, 5, 40, 100_000]))
    monkeypatch.setattr(keyindex, "_FEW", rnd.choice([0, 16, 10**9]))  # never, sometimes, always without a merge
    pool = pool_of(rnd, rnd.choice([3, 20, 300]))
    names = [0]
    model: Model = {}
    first = [entries(rnd, pool, rnd.randint(0, 30), names) for _ in range(rnd.randint(0, 3))]
    index = KeyIndex(first)
    for part in first:
        applied(model, *part)
    for _ in range(150):
        step = rnd.random()
        if step < 0.55:
            part = entries(rnd, pool, rnd.choice([0, 1, 2, 10, 60]), names)
            index.apply(*part)
            applied(model, *part)
        elif step < 0.65:
            index.merge()
        elif step < 0.75:  # a compaction's rewrite: new names for every key, some forgotten (record gone)
            rows = index.rows().copy()
            renamed = np.where(np.array([rnd.random() < 0.1 for _ in rows], bool), 0, rows + 10**12)
            index.rename(renamed)
            by_name = dict(zip(rows.tolist(), renamed.tolist(), strict=True))
            model = {h: (d, by_name[n]) for h, (d, n) in model.items() if by_name[n]}
        else:
            check(index, model, pool)
    check(index, model, pool)


@pytest.mark.parametrize("seed", range(6))
def test_an_index_read_from_one_snapshot_row_answers_like_the_rows_it_replaced(seed: int) -> None:
    """A stream's index written again as one row (stores.py) reads back as the same index, taken as it is."""
    rnd = random.Random(100 + seed)
    pool = pool_of(rnd, 200)
    names = [0]
    parts = [entries(rnd, pool, rnd.randint(1, 80), names) for _ in range(rnd.randint(1, 8))]
    model: Model = {}
    for part in parts:
        applied(model, *part)
    whole = KeyIndex(parts)
    again = KeyIndex([(whole.h.copy(), whole.d.copy(), whole.r.copy())])
    for index in (whole, again):
        check(index, model, pool)
    part = entries(rnd, pool, 50, names)  # the arrays taken as they were stay writable
    again.apply(*part)
    applied(model, *part)
    check(again, model, pool)


def test_a_lone_row_that_is_not_a_snapshot_is_still_sorted_and_deduplicated() -> None:
    h = np.array([5, 3, 5, 9, 1], np.int64)
    d = np.array([1, 2, 3, 4, 0], np.int64)
    r = np.array([11, 12, 13, 14, 0], np.int64)  # 5 twice (the later wins), 1 forgotten
    index = KeyIndex([(h, d, r)])
    found = index.find(np.array([1, 3, 5, 9, 4], np.int64))
    assert found[0].tolist() == [0, 2, 3, 4, 0] and found[1].tolist() == [0, 12, 13, 14, 0] and index.count() == 3


def test_an_index_read_as_one_row_is_kept_as_read_until_a_merge_writes_it() -> None:
    """One compacted index row (sorted, each hash once) is kept as the file's read-only blobs, not copied;
    confirming a known key again, forgetting one or adding one later still works (copied then)."""

    def blob(values: list[int]) -> np.ndarray:
        return np.frombuffer(np.array(values, np.int64).tobytes(), np.int64)  # read-only, as logfile reads it

    h, d, r, s = blob([10, 20, 30]), blob([1, 2, 3]), blob([5, 6, 7]), blob([0, 9, 0])
    index = KeyIndex([(h, d, r, s)])
    assert index.h is h and not index.d.flags.writeable
    assert index.sources(np.array([20, 30, 40], np.int64)).tolist() == [9, 0, 0]
    index.apply(np.array([20, 10, 25], np.int64), np.array([8, 0, 4], np.int64), np.array([11, 0, 12], np.int64))
    assert index.find(np.array([10, 20, 25, 30], np.int64))[1].tolist() == [0, 11, 12, 7]
    assert index.find(np.array([20], np.int64))[0].tolist() == [8]
    assert h.tolist() == [10, 20, 30] and d.tolist() == [1, 2, 3]  # the blobs themselves are untouched


@pytest.mark.parametrize("names", [[12, 13], [0, 0]], ids=["new keys", "unknown keys forgotten"])
def test_a_merge_that_touches_no_key_read_leaves_the_read_only_arrays_alone(names: list[int]) -> None:
    """Entries naming no key the index read (new keys, or keys forgotten that it never knew: a run's failed
    requests) merge without writing into the read-only arrays (an empty assignment raises there too: a user's
    trial saw the PostgreSQL state's local copy not written for it)."""
    blob = [np.frombuffer(np.array(v, np.int64).tobytes(), np.int64) for v in ([10, 20, 30], [1, 2, 3], [5, 6, 7])]
    index = KeyIndex([(*blob, None)])
    index.apply(np.array([15, 25], np.int64), np.array([8, 9], np.int64) * (np.array(names) != 0),
                np.array(names, np.int64))  # fmt: skip
    index.merge()
    assert index.count() == 3 + sum(n != 0 for n in names)
    assert index.find(np.array([10, 15, 25, 30], np.int64))[1].tolist() == [5, *names, 7]
