"""blank_to_null's byte scan (mapping/blanks.py) never misses a cell that trimming would empty."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connector.mapping.blanks import _LEAD, _may_hold_blanks, blank_to_null


def test_every_whitespace_character_starts_with_a_flagged_byte() -> None:
    points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    arr = pa.array([chr(c) for c in points])
    trimmed_away = pc.equal(pc.utf8_trim_whitespace(arr), "").to_pylist()
    spaces = [c for c, gone in zip(points, trimmed_away, strict=True) if gone]
    assert 0x3000 in spaces and 0x1C in spaces
    assert all(_LEAD[chr(c).encode()[0]] for c in spaces)


@pytest.mark.parametrize("large", [False, True])
def test_blank_cells_become_null_and_others_stay(large: bool) -> None:
    t = pa.large_string() if large else pa.string()
    assert not _may_hold_blanks(pa.array(["a", None, "é", "日本"], t))
    for blank in ["", " ", "\u3000", "\x1f", "\t \n"]:
        arr = pa.array(["a", blank, None, " x "], t)
        assert blank_to_null(arr).to_pylist() == ["a", None, None, " x "]
        assert blank_to_null(arr.slice(1)).to_pylist() == [None, None, " x "]
    assert blank_to_null(pa.array([1.5, float("nan"), None])).to_pylist() == [1.5, None, None]


@pytest.mark.parametrize("large", [False, True])
def test_the_offsets_scan_agrees_with_trimming_with_nulls_and_slices(large: bool) -> None:
    t = pa.large_string() if large else pa.string()
    cells = ["a", None, "", " ", "é", "\u3000x", None, "b"]
    for start in range(len(cells)):
        for end in range(start, len(cells) + 1):
            arr = pa.array(cells, t).slice(start, end - start)
            trimmed = pc.equal(pc.utf8_trim_whitespace(arr), "")
            if pc.any(trimmed).as_py():
                assert _may_hold_blanks(arr), arr.to_pylist()
            expected = [None if c is None or not c.strip() else c for c in arr.to_pylist()]
            assert blank_to_null(arr).to_pylist() == expected
