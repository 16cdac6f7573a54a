"""mapping/numbers.py: on the bytes it allows, Arrow's parser accepts exactly what casts.py's patterns
accept, with the same values; other columns are left to the general path."""

from __future__ import annotations

import itertools
import re

import pyarrow as pa

from connector.mapping.casts import _FLOAT_RE, _INT_RE, cast_array
from connector.mapping.numbers import plain_numbers


def _every(alphabet: str, longest: int) -> list[str]:
    return ["".join(t) for n in range(1, longest + 1) for t in itertools.product(alphabet, repeat=n)]


def test_arrow_accepts_what_the_patterns_accept() -> None:
    for kind, pattern, alphabet, longest in (("float", _FLOAT_RE, "01.-+eE", 5), ("integer", _INT_RE, "019-", 6)):
        texts = _every(alphabet, longest)
        matched = [bool(re.match(pattern, t)) for t in texts]
        parsed = [plain_numbers(pa.array([t]), kind) for t in texts]
        assert [p is not None for p in parsed] == matched
        for t, p in zip(texts, parsed, strict=True):
            if p is not None:
                assert p.to_pylist() == [int(t) if kind == "integer" else float(t)]


def test_columns_outside_the_plain_bytes_take_the_general_path() -> None:
    assert plain_numbers(pa.array(["1", "0x1F"]), "integer") is None
    assert plain_numbers(pa.array(["1", " 2"]), "integer") is None
    assert plain_numbers(pa.array(["1.5", "inf"]), "float") is None
    assert plain_numbers(pa.array(["1", "2-"]), "integer") is None  # Arrow refuses a cell
    assert plain_numbers(pa.array(["12", None, "-3"]), "integer").to_pylist() == [12, None, -3]
    cast = cast_array(pa.array(["1", "x", " 7 ", "0x1F", None]), "integer")
    assert cast.values == [1, None, 7, None, None] and sorted(cast.errors) == [1, 3]
    floats = cast_array(pa.array(["1e400", "2.5", "-.5"]), "float")
    assert floats.values == [None, 2.5, -0.5] and list(floats.errors) == [0]
