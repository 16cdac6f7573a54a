"""Native (Arrow) evaluation of row-level expectations gives GX's verdicts, reasons and mostly ratios, row by row.

Each differential test runs the same suite twice over the same random chunks: once natively, once with the
native plan switched off (every expectation through GX, as before), and compares the whole outcome.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.errors import SuiteError
from connector.records import Chunk
from connector.validation import SuiteRunner
from connector.validation.patterns import PYTHON_SPACES, compile_pattern

pytestmark = pytest.mark.xdist_group("gx")  # they import GX in the worker: one worker of the two (conftest.py)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
SETTINGS = settings(
    max_examples=300 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def exp(etype: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": etype, "kwargs": {"column": "c", **kwargs}, "meta": {}}


REGEXES = [
    "^[A-Z]{2}$",
    r"\d",
    r"^[^@\s]+@[^@\s]+\.[a-z]+$",
    "a(?=b)",
    "^$",
    "(a|b)+c?",
    r"\bx",
    "é",
    "a$",
    r"\w+",
    r"(.)\1",
    r"\Aa|b$",
    r"(?<!a)b\s",
    r"[^\d]$",
    r"^\S+\s[]\s]",
    r"[^\s]$",
]
# RE2 and Python may read these differently and pandas does not notice: GX evaluates them.
GX_REGEXES = ["[0-9]{,2}5", "(?i)A", r"a\Z", "[[:alpha:]]", r"\1", "(?(1)a|b)", r"\p{L}"]
STRING_SUITE = [
    exp("expect_column_values_to_not_be_null"),
    exp("expect_column_values_to_be_null", mostly=0.1),
    exp("expect_column_values_to_be_in_set", value_set=["a", "b", "", "5", 5, 1.5]),
    exp("expect_column_values_to_not_be_in_set", value_set=["ab", "5", "é"], mostly=0.5),
    exp("expect_column_values_to_be_between", min_value=0, max_value=120),
    exp("expect_column_values_to_be_between", min_value=-1.5, strict_min=True, mostly=0.3),
    exp("expect_column_values_to_be_between", max_value=10, strict_max=True),
    exp("expect_column_value_lengths_to_be_between", min_value=1, max_value=3),
    exp("expect_column_value_lengths_to_be_between", min_value=2, strict_min=True, mostly=0.2),
    exp("expect_column_value_lengths_to_equal", value=1),
    exp("expect_column_values_to_match_regex_list", regex_list=["^a", r"\d$"], match_on="any"),
    exp("expect_column_values_to_match_regex_list", regex_list=["a", "b", "^.{2}"], match_on="all"),
    exp("expect_column_values_to_match_regex_list", regex_list=["a(?=b)", r"^x|\d$"], match_on="any"),
    *[exp("expect_column_values_to_match_regex", regex=r) for r in REGEXES],
    *[exp("expect_column_values_to_not_match_regex", regex=r, mostly=0.5) for r in REGEXES[:6]],
]
NUMBER_SUITE = [
    exp("expect_column_values_to_not_be_null"),
    exp("expect_column_values_to_be_null", mostly=0.1),
    exp("expect_column_values_to_be_in_set", value_set=[1, 2.5, -3, 0]),
    exp("expect_column_values_to_not_be_in_set", value_set=[7, 120], mostly=0.5),
    exp("expect_column_values_to_be_between", min_value=0, max_value=120),
    exp("expect_column_values_to_be_between", min_value=-1.5, strict_min=True, mostly=0.3),
    exp("expect_column_values_to_be_between", min_value=2, max_value=7.5, strict_min=True, strict_max=True),
    exp("expect_column_values_to_be_between", max_value=10, strict_max=True),
]
TIME_SUITE = [
    exp("expect_column_values_to_not_be_null"),
    exp("expect_column_values_to_be_between", min_value="2026-01-01", max_value="now+1h"),
    exp("expect_column_values_to_be_between", min_value="now-30d", strict_min=True, mostly=0.5),
    exp("expect_column_values_to_be_between", max_value="2026-06-01T00:00:00Z", strict_max=True),
]

CHARS = st.sampled_from(list("abAB15 .@-+e\n\x0bé٣_xZ"))
SPECIAL = st.sampled_from(
    ["", "5", "5.", ".5", "+5", "1e3", "inf", "-inf", "nan", " 5", "1_0", "120", "120.0", "-0", "7.5", "ab",
     "a@b.io", "12345678901234567890", "0.1", "US", "x\n", "a\n", "ü", "xx", "aab", "bb"]
)  # fmt: skip
STRINGS = st.lists(st.one_of(st.none(), SPECIAL, st.text(CHARS, max_size=6)), min_size=1, max_size=30)
INTS = st.lists(st.one_of(st.none(), st.integers(-200, 200)), min_size=1, max_size=30)
FLOATS = st.lists(
    st.one_of(
        st.none(),
        st.sampled_from([0.0, -1.5, 7.5, 120.0, 2.0, float("nan"), float("inf")]),
        st.floats(-300, 300),
    ),
    min_size=1,
    max_size=30,
)
BASE = datetime(2026, 1, 1, tzinfo=UTC)
STAMPS = st.lists(
    st.one_of(st.none(), st.integers(-400, 400).map(lambda d: BASE + timedelta(days=d, seconds=d * 37))),
    min_size=1,
    max_size=30,
)
ISO = st.lists(
    st.one_of(
        st.none(),
        st.sampled_from(["junk", "", "2026-01-01", "2026-11-22T09:00:00+01:00", "2025-12-31T23:59:59Z"]),
        STAMPS.map(lambda xs: next((x.isoformat() for x in xs if x is not None), "2026-03-01")),
    ),
    min_size=1,
    max_size=30,
)


class Pair:
    """The same suite run natively and through GX alone."""

    def __init__(self, directory: Path, expectations: list[dict[str, Any]]) -> None:
        (directory / "s.json").write_text(json.dumps({"name": "s", "expectations": expectations}))
        self.native = SuiteRunner(["s"], directory, now=lambda: NOW)
        with mock.patch("connector.validation.compile_native", lambda e, now: None):
            self.gx = SuiteRunner(["s"], directory, now=lambda: NOW)
        assert not self.native.uses_gx and self.gx.uses_gx

    def compare(self, column: pa.Array) -> None:
        n = len(column)
        rows = [3 * i + 2 for i in range(n)]
        table = pa.table({"c": column, "other": pa.array(range(n))})
        got = self.native.validate(Chunk("t.csv", table, rows))
        want = self.gx.validate(Chunk("t.csv", table, rows))
        assert not self.native.uses_gx, "a column type the native plan claims fell back to GX"
        assert [(r.ref, r.rule, r.column, r.reason) for r in got.rejects] == [
            (r.ref, r.rule, r.column, r.reason) for r in want.rejects
        ], column.to_pylist()
        assert got.keep == want.keep
        assert [(c.expectation, c.observed, c.success) for c in self.native.finish()] == [
            (c.expectation, c.observed, c.success) for c in self.gx.finish()
        ]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pair]]:
    made: dict[str, Pair] = {}
    for name, suite in (("strings", STRING_SUITE), ("numbers", NUMBER_SUITE), ("times", TIME_SUITE)):
        made[name] = Pair(tmp_path_factory.mktemp(name), suite)
    yield made


@SETTINGS
@given(values=STRINGS, large=st.booleans())
def test_string_columns_match_gx(pairs: dict[str, Pair], values: list[str | None], large: bool) -> None:
    pairs["strings"].compare(pa.array(values, pa.large_string() if large else pa.string()))


@SETTINGS
@given(
    values=st.lists(
        st.one_of(st.none(), st.from_regex(r"[0-9]{1,17}", fullmatch=True)), min_size=1, max_size=30
    )
)
def test_csv_integer_columns_match_gx(pairs: dict[str, Pair], values: list[str | None]) -> None:
    pairs["strings"].compare(pa.array(values, pa.string()))


@SETTINGS
@given(values=INTS, width=st.sampled_from([pa.int64(), pa.int32(), pa.int8()]))
def test_integer_columns_match_gx(pairs: dict[str, Pair], values: list[int | None], width: Any) -> None:
    values = [None if v is not None and width == pa.int8() and not -128 <= v <= 127 else v for v in values]
    pairs["numbers"].compare(pa.array(values, width))


@SETTINGS
@given(values=FLOATS)
def test_float_columns_match_gx(pairs: dict[str, Pair], values: list[float | None]) -> None:
    pairs["numbers"].compare(pa.array(values, pa.float64()))


@SETTINGS
@given(values=STAMPS, naive=st.booleans())
def test_timestamp_columns_match_gx(
    pairs: dict[str, Pair], values: list[datetime | None], naive: bool
) -> None:
    if naive:
        column = pa.array([v.replace(tzinfo=None) if v else None for v in values], pa.timestamp("us"))
    else:
        column = pa.array(values, pa.timestamp("us", tz="UTC"))
    pairs["times"].compare(column)


@SETTINGS
@given(values=ISO)
def test_iso_string_columns_match_gx(pairs: dict[str, Pair], values: list[str | None]) -> None:
    pairs["times"].compare(pa.array(values, pa.string()))


def test_all_null_and_dictionary_columns_match_gx(pairs: dict[str, Pair]) -> None:
    pairs["strings"].compare(pa.array([None, None], pa.string()))
    pairs["strings"].compare(pa.array(["a", None, "b", "a", "zz"]).dictionary_encode())
    pairs["numbers"].compare(pa.array([None, None, None], pa.float64()))
    pairs["numbers"].compare(pa.array([float("nan"), 1.0, None]))


def test_regex_dialects_are_chosen_as_pandas_chooses_them() -> None:
    def kind(text: str) -> tuple[str, bool, bool] | None:
        p = compile_pattern(text)
        return None if p is None else (p.re2_text, p.needs_ascii, p.needs_no_newline)

    assert kind("^[A-Z]{2}$") == ("^[A-Z]{2}$", False, True)
    assert kind(r"\d+") == (r"\d+", True, False)
    # pandas runs Python's re for \s (RE2's misses \x0b and Unicode spaces): RE2 with Python's class instead
    assert kind(r"[^@\s]\s\S$") == (f"[^@{PYTHON_SPACES}][{PYTHON_SPACES}][^{PYTHON_SPACES}]$", False, True)
    assert kind(r"[\S]") == ("", False, False)
    for python_only in ("a(?=b)", r"(.)\1", r"\u00e9", "(?<=a)b{,2}", r"\s{,2}"):
        assert kind(python_only) == ("", False, False), python_only
    for gx in [*GX_REGEXES, "("]:
        assert kind(gx) is None, gx


def test_python_spaces_is_pythons_whitespace_class_in_re2() -> None:
    import pyarrow.compute as pc

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    in_re2 = pc.match_substring_regex(pa.array(chars), f"^[{PYTHON_SPACES}]$").to_pylist()
    assert [c for c, hit in zip(chars, in_re2, strict=True) if hit] == [
        c for c in chars if re.match(r"\s", c)
    ]


@pytest.mark.parametrize("regex", GX_REGEXES)
def test_regexes_the_dialects_may_read_apart_go_to_gx(tmp_path: Path, regex: str) -> None:
    (tmp_path / "s.json").write_text(
        json.dumps({"name": "s", "expectations": [exp("expect_column_values_to_match_regex", regex=regex)]})
    )
    r = SuiteRunner(["s"], tmp_path)
    assert r.uses_gx
    try:
        result = r.validate(
            Chunk("t.csv", pa.table({"c": ["5", "a", "A", "1a", "é", None]}), [2, 3, 4, 5, 6, 7])
        )
    except SuiteError as exc:  # a pattern pyarrow cannot compile fails in GX as before
        assert "could not be evaluated" in str(exc)
    else:
        assert len(result.keep) == 6


def test_shipped_pipelines_validate_without_importing_great_expectations(tmp_path: Path) -> None:
    """Every pipeline in pipelines/ with a suite runs `validate` over its sample data; GX is never imported."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from connector import load_pipeline, run_pipeline
        checked = 0
        for path in sorted(Path({str(ROOT / "pipelines")!r}).glob("*.yaml")):
            pipeline = load_pipeline(path, env={{"BRAZE_API_KEY": "k"}})
            if not any(s.expectations for s in pipeline.streams):
                continue
            report = run_pipeline(pipeline, validate_only=True, report_dir={str(tmp_path)!r} + "/" + path.stem,
                                  env={{"BRAZE_API_KEY": "k"}}, raise_on_failure=False)
            checked += 1
        assert checked >= 3, checked
        assert "great_expectations" not in sys.modules, "GX was imported"
        print("ok", checked)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


def test_an_uncovered_expectation_imports_gx_and_still_works(tmp_path: Path) -> None:
    suite = {
        "name": "s",
        "expectations": [
            exp("expect_column_values_to_be_in_set", value_set=["a", "b"]),
            exp("expect_column_values_to_be_in_set", value_set=["a"], row_condition='c != "b"',
                condition_parser="pandas"),
            exp("expect_column_median_to_be_between", column="other", min_value=0, max_value=1),
        ],
    }  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(suite))
    # In-process: this module's group ("gx") imports GX in this worker anyway, so a fresh interpreter (~2.5 s
    # of CPU, most of it GX's import) adds nothing but the import; that GX is set up for the uncovered
    # expectations is the evaluator SuiteRunner builds at start. That the shipped pipelines never import GX
    # needs the fresh process: test_shipped_pipelines_validate_without_importing_great_expectations.
    r = SuiteRunner(["s"], tmp_path)
    assert r._gx_built, "no GX evaluator was built for the expectations the native plan does not cover"
    assert "great_expectations" in sys.modules
    table = pa.table({"c": ["a", "b", "z", None], "other": [0, 1, 1, 1]})
    result = r.validate(Chunk("t.csv", table, [2, 3, 4, 5]))
    rejects = str([(x.ref.row, x.rule, x.reason) for x in result.rejects])
    # 'b' passes the native check and the GX one skips it (row_condition); 'z' fails both
    assert rejects == (
        "[(4, 'expect_column_values_to_be_in_set', "
        "\"column 'c': value 'z' not in set ['a','b']; column 'c': value 'z' not in set ['a']\")]"
    )


def test_gx_is_set_up_once_and_evaluates_equal_expectations_of_two_suites(tmp_path: Path) -> None:
    for name in ("zz", "aa"):  # suites listed out of name order
        suite = [
            exp("expect_column_values_to_not_be_null"),
            exp("expect_column_median_to_be_between", min_value=0),
        ]
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "expectations": suite}))
    r = SuiteRunner(["zz", "aa"], tmp_path)
    for rows in ([1, 2], [3, None, 5]):
        r.validate(Chunk("t.csv", pa.table({"c": pa.array(rows, pa.int64())}), list(range(len(rows)))))
    assert len(r._gx_built) == 1
    medians = [c for c in r.finish() if c.expectation == "expect_column_median_to_be_between"]
    assert [c.success for c in medians] == [True, True]  # equal expectations of two suites both evaluated


def test_the_log_says_when_and_why_gx_is_imported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector.validation")
    (tmp_path / "native.json").write_text(
        json.dumps({"expectations": [exp("expect_column_values_to_not_be_null")]})
    )
    (tmp_path / "gx.json").write_text(
        json.dumps({"expectations": [exp("expect_column_values_to_be_of_type", type_="str")]})
    )
    SuiteRunner(["native"], tmp_path)
    assert not [r for r in caplog.records if "Great Expectations" in r.getMessage()]
    SuiteRunner(["gx"], tmp_path)
    (line,) = [r.getMessage() for r in caplog.records if "Great Expectations" in r.getMessage()]
    assert line.startswith("1 expectation(s) evaluated by Great Expectations, imported now")
    assert "expectation #1 expect_column_values_to_be_of_type" in line
