"""pg_store._Index: the snapshot's sorted arrays plus this store's writes in a small index of their own, folded
in batches."""

from __future__ import annotations

import numpy as np
import pytest

from connector.delta import pg_store
from connector.delta.keyindex import KeyIndex

I8 = np.int64


def arr(*values: int) -> np.ndarray:
    return np.array(values, I8)


def test_writes_answer_before_and_after_they_are_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "_FOLD", 3)
    index = pg_store._Index(KeyIndex([(arr(10, 20, 30), arr(1, 2, 3), arr(1, 1, 1))]))
    index.put(arr(20, 40), arr(22, 4), arr(0, 9))  # 20 changed (no print), 40 new (print 9): recent
    index.put(arr(10), arr(0))  # 10 forgotten
    assert index.recent.count() == 0  # three keys: folded into the arrays
    index.put(arr(30), arr(0))
    for _ in range(2):  # 30 forgotten in recent, then after folding
        d, known, s = index.find(arr(10, 20, 30, 40, 50))
        assert known.tolist() == [False, True, False, True, False]
        assert d[known].tolist() == [22, 4] and s.tolist() == [0, 0, 0, 9, 0]
        index.fold()
    assert index.count() == 2


def test_a_store_without_a_snapshot_starts_empty() -> None:
    index = pg_store._Index()
    assert index.count() == 0 and not index.find(arr(1))[1].any()
    index.put(arr(1), arr(5))
    assert index.find(arr(1))[0].tolist() == [5] and index.count() == 1
