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


# Cells of timeparse._ISO_SHAPE: valid, and out of range in each field (Arrow and pandas both refuse those).
ISO_CELLS = [
    "2023-02-30", "2023-02-29", "2024-02-29", "1900-02-29", "2000-02-29", "2023-13-01", "2023-00-10",
    "2023-04-31", "2023-01-00", "0000-01-01", "0001-01-01", "1500-06-15", "2999-12-31", "3000-12-31",
    "3001-01-01", "9999-12-31", "2023-01-01T24:00", "2023-01-01T23:60", "2023-01-01 23:59:60",
    "2023-01-01T23:59:59.999999", "2023-01-01 10:20", "2023-01-01T10:20:30.1", "2023-01-01T10:20:30.123456",
    "1969-12-31T23:59:59.9995", "1969-12-31T23:59:59.999999Z", "1601-03-04T05:06:07.000001-08:00",
    "2023-01-01T10:20Z", "2023-01-01T10:20:30Z", "2023-01-01 10:20:30.5Z", "2023-01-01T10:20:30+01",
    "2023-01-01T10:20:30+0130", "2023-01-01T10:20:30-05:30", "2023-01-01T10:20:30+14:00",
    "2023-01-01T10:20:30+23:59", "2023-01-01T10:20:30+24:00", "2023-01-01T10:20:30+12:60",
    "2023-01-01T10:20:30-99", "2023-02-30T10:20:30Z", "2023-06-31 01:02:03+02:00", "2023-01-01T00:00:00-00:00",
    " 2023-03-04T05:06:07Z", "2023-03-04 ", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
]  # fmt: skip


def _by_pandas(
    monkeypatch: pytest.MonkeyPatch, arr: pa.Array, tz: str
) -> tuple[list[object], dict[int, tuple[str, str]]]:
    from connector.mapping import casts

    with monkeypatch.context() as m:
        m.setattr(casts, "arrow_iso_cells", lambda s, tz: None)  # the general parser (pandas) decides
        res = casts.cast_array(arr, "time", tz=tz)
    return res.values, res.errors


@pytest.mark.parametrize("seed", range(12))
def test_arrow_iso_cells_gives_what_the_general_parser_gives(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """A column arrow_iso refuses (a cell out of range, or zoned and plain cells mixed) is read by Arrow cell
    by cell: the same values and the same rejects as pandas' ISO8601 and Braze's formats give."""
    from connector.mapping.casts import cast_array
    from connector.mapping.timeparse import arrow_iso, arrow_iso_cells

    rng = random.Random(seed)
    cells = (
        list(ISO_CELLS)
        if seed == 0
        else [rng.choice([*ISO_CELLS, None]) for _ in range(rng.randrange(2, 80))]
    )
    if seed > 0 and rng.random() < 0.5:
        cells.append(rng.choice(["2023-02-30", "2023-01-01T10:20:30"]))  # plain among zoned, or out of range
    tzs = ["UTC"] if seed % 3 else ["UTC", "Europe/Paris"]
    for tz in tzs:
        for t in (pa.string(), pa.large_string()):
            arr = pa.array(cells, t)
            for a in (arr, arr.slice(1)):
                if arrow_iso(pc.utf8_trim_whitespace(a), tz) is not None:
                    continue  # the fast path reads it whole
                if tz == "UTC":
                    assert arrow_iso_cells(a, tz) is not None, "this column should not need pandas"
                got = cast_array(a, "time", tz=tz)
                assert (got.values, got.errors) == _by_pandas(monkeypatch, a, tz)


def test_arrow_iso_cells_leaves_other_shapes_and_zones_to_the_general_parser() -> None:
    from connector.mapping.timeparse import arrow_iso_cells

    assert arrow_iso_cells(pa.array(["2023-02-30", "07/09/2023"]), "UTC") is None  # Braze's MM/DD/YYYY
    assert (
        arrow_iso_cells(pa.array(["2023-02-30", "2023-01-01T10:20:30.1234567Z"]), "UTC") is None
    )  # 7 digits
    assert (
        arrow_iso_cells(pa.array(["2023-02-30", "2023-03-26T02:30:00"]), "Europe/Paris") is None
    )  # plain, not UTC
    out = arrow_iso_cells(pa.array(["2023-02-30T10:00Z", None, "2023-03-26T02:30:00Z"]), "Europe/Paris")
    assert out is not None  # zoned cells only: the zone plays no part
    assert out.to_pylist()[:2] == [None, None] and out[2].value == 1679797800 * 10**6
    assert arrow_iso_cells(pa.array(["2023-02-30"] * 65 + ["2023-01-01"]), "UTC") is None  # over 64 refused
