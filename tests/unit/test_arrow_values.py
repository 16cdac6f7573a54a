"""arrow_values: the arrays, scalars and numpy views pyarrow's own calls give, built without importing pandas."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from connector import arrow_values


@pytest.fixture(autouse=True)
def buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builders, as in a process without pandas (pytest's has it: `array` would be pa.array itself)."""
    monkeypatch.setattr(arrow_values, "_pandas_loaded", lambda: False)

CASES: list[tuple[list[Any], pa.DataType]] = [
    (["a", None, "é€😀", "", "x" * 300], pa.string()),
    (["a", None, "b"], pa.large_string()),
    ([], pa.string()),
    ([None, None], pa.large_string()),
    ([1, None, -(2**63), 2**63 - 1, 0], pa.int64()),
    ([1.5, None, float("nan"), float("inf"), -0.0], pa.float64()),
    ([True, None, False, True, True, False, False, True, True, False], pa.bool_()),
    ([], pa.bool_()),
]

# Values the buffers do not take as pa.array does: each goes to pa.array, which converts or raises as usual.
FALLBACKS: list[tuple[list[Any], pa.DataType]] = [
    ([b"bytes", "str"], pa.string()),
    ([1, 2.0], pa.float64()),  # ints in a float column
    ([1, True], pa.int64()),
    ([2**64], pa.int64()),
    ([np.int64(3)], pa.int64()),
    (["a"], pa.int32()),  # a type without a builder
]


@pytest.mark.parametrize(("values", "t"), CASES + FALLBACKS)
def test_array_is_pa_array(values: list[Any], t: pa.DataType) -> None:
    try:
        expected = pa.array(values, type=t)
    except (pa.ArrowException, OverflowError, TypeError) as e:
        with pytest.raises(type(e)):
            arrow_values.array(values, t)
        return
    got = arrow_values.array(values, t)
    got.validate(full=True)
    assert got.type == expected.type and got.null_count == expected.null_count
    assert _cells(got) == _cells(expected)


def _cells(arr: pa.Array) -> list[str]:
    return [repr(v) for v in arr.to_pylist()]  # nan == nan here, as -0.0 != 0.0


@pytest.mark.parametrize("seed", range(6))
def test_random_lists_and_slices(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 300)
    make = {
        pa.string(): lambda: "".join(rng.choice("ab\x00é😀 ") for _ in range(rng.randrange(6))),
        pa.int64(): lambda: rng.randrange(-(2**63), 2**63),
        pa.float64(): lambda: rng.uniform(-1e300, 1e300),
        pa.bool_(): lambda: rng.random() < 0.5,
    }
    for t, one in make.items():
        values = [None if rng.random() < 0.2 else one() for _ in range(n)]
        got = arrow_values.array(values, t)
        assert got.equals(pa.array(values, type=t))
        if n > 3:
            assert got.slice(3).equals(pa.array(values, type=t).slice(3))
            assert (
                arrow_values.to_numpy(got.slice(3).drop_null()).tolist()
                == pa.array(values[3:], type=t).drop_null().to_numpy(zero_copy_only=False).tolist()
            )


@pytest.mark.parametrize(
    ("value", "t"),
    [("x", None), (3, None), (2**63, None), (-1.5, None), (True, None), (None, None), ("x", pa.large_string()),
     (None, pa.bool_()), (0.0, pa.float64()), (7, pa.int64()), (7, pa.int32())],
)  # fmt: skip
def test_scalar_is_pa_scalar(value: Any, t: pa.DataType | None) -> None:
    try:
        expected = pa.scalar(value, type=t)
    except (pa.ArrowException, OverflowError) as e:
        with pytest.raises(type(e)):
            arrow_values.scalar(value, t)
        return
    got = arrow_values.scalar(value, t)
    assert got.type == expected.type and got.equals(expected)


@pytest.mark.parametrize(
    "arr",
    [pa.array([True, False, True] * 7)[2:17], pa.array([1, 2, 3], pa.int32())[1:], pa.array([1.5, 2.5]),
     pa.array([], pa.bool_()), pa.array([1, None]), pa.chunked_array([pa.array([True]), pa.array([False])]),
     pa.array(["a", "b"])],
)  # fmt: skip
def test_to_numpy_is_to_numpy(arr: Any) -> None:
    got, expected = (
        arrow_values.to_numpy(arr),
        arr.to_numpy(**({} if isinstance(arr, pa.ChunkedArray) else {"zero_copy_only": False})),
    )
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "values", [np.array([3, 1, 2]), np.array([True, False, True]), np.array([0.5], np.float32)]
)
def test_from_numpy_is_pa_array(values: np.ndarray) -> None:
    assert arrow_values.from_numpy(values).equals(pa.array(values))
    assert arrow_values.from_numpy(values[1:]).equals(pa.array(values[1:]))


def test_none_of_it_imports_pandas() -> None:
    """What this module is for: pyarrow's own calls import pandas, these do not."""
    code = (
        "import sys, numpy as np, pyarrow as pa, pyarrow.compute as pc\n"
        "from connector import arrow_values as av\n"
        "s = av.array(['a', None], pa.string()); i = av.array([1, None], pa.int64())\n"
        "b = av.array([True], pa.bool_()); f = av.array([0.5], pa.float64())\n"
        "pc.equal(s, av.scalar('a')); pc.fill_null(i, av.scalar(0)); pc.if_else(b, av.null(pa.int64()), av.scalar(1))\n"
        "av.to_numpy(pc.is_valid(s)); av.to_numpy(f); av.from_numpy(np.arange(3)); av.from_numpy(np.ones(2, bool))\n"
        "print('pandas' in sys.modules)\n"
        "pa.array([1])\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]  # and pyarrow's pa.array does (so this test would see it)
