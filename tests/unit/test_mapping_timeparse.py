"""timeparse.iso: the byte-matrix path for 4-digit years gives exactly the string kernels' text."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connector.mapping.timeparse import _iso_fixed, iso


def _by_kernels(ts: pa.Array) -> list[str | None]:
    ms = pc.cast(pc.cast(ts, pa.timestamp("ms", tz="UTC"), safe=False), pa.timestamp("ms"))
    text = pc.replace_substring(pc.cast(ms, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "").to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("seed", range(8))
def test_iso_text_is_the_same_on_both_paths(seed: int) -> None:
    rng = random.Random(seed)
    wide = seed % 2 == 1  # years before 0 and after 9999 take the kernel path
    values = [
        None if rng.random() < 0.2 else rng.randrange(-(10**14) if wide else 0, 3 * 10**14 if wide else 4 * 10**12)
        for _ in range(200)
    ]
    unit = ["s", "ms", "us", "ns"][seed % 4]
    ts = pa.array(values, pa.timestamp("ms", tz="UTC")).cast(pa.timestamp(unit, tz="UTC"), safe=False)
    for arr in (ts, ts.slice(3, 150), pa.array([], pa.timestamp(unit, tz="UTC"))):
        assert iso(arr).to_pylist() == _by_kernels(arr)


def test_four_digit_years_take_the_byte_matrix() -> None:
    ts = pa.array([0, None, 1_700_000_000_123], pa.timestamp("ms", tz="UTC"))
    fixed = _iso_fixed(pc.cast(ts, pa.timestamp("ms")))
    assert fixed is not None
    assert fixed.to_pylist() == ["1970-01-01T00:00:00.000Z", None, "2023-11-14T22:13:20.123Z"]
    assert _iso_fixed(pa.array([-(10**14)], pa.timestamp("ms"))) is None  # a negative year


def _general(s: pa.Array, tz: str) -> pa.Array | None:
    import connector.mapping.timeparse as tp

    real = tp._one_shape
    tp._one_shape = lambda s: False  # type: ignore[assignment]
    try:
        return tp.arrow_iso(s, tz)
    finally:
        tp._one_shape = real


FORMS = [
    "2024-0{m}-1{d} 10:2{d}:00",
    "2024-0{m}-1{d}T10:2{d}:00Z",
    "2024-0{m}-1{d}T10:2{d}:00.12{d}+02:00",
    "2024-0{m}-1{d}T10:2{d}:00-0500",
    " 2024-0{m}-1{d} 10:2{d}:00",
    "2024-0{m}-1{d} 10:2{d}:00 ",
    "2024-0{m}-1{d}",
    "x024-0{m}-1{d} 10:2{d}:00",
]


@pytest.mark.parametrize("seed", range(10))
def test_one_shape_columns_parse_as_the_general_path_does(seed: int) -> None:
    from connector.mapping.timeparse import arrow_iso

    rng = random.Random(seed)
    forms = [rng.choice(FORMS)] if seed < 6 else rng.sample(FORMS, 2)  # one shape, or two
    cells = [rng.choice(forms).format(m=rng.randrange(1, 10), d=rng.randrange(10)) for _ in range(50)]
    for tz in ("UTC", "Europe/Paris"):
        for t in (pa.string(), pa.large_string()):
            for arr in (pa.array(cells, t), pa.array(cells, t).slice(7)):
                fast, general = arrow_iso(arr, tz), _general(arr, tz)
                assert (None if fast is None else fast.to_pylist()) == (None if general is None else general.to_pylist())
