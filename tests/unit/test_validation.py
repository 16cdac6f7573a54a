"""SuiteRunner: row-level rejects from GX map expectations, table-level checks merged across chunks."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.errors import SuiteError
from connector.records import Chunk
from connector.validation import ChunkValidation, SuiteRunner, TableCheck

pytestmark = pytest.mark.xdist_group("gx")  # they import GX in the worker: one worker of the two (conftest.py)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "expectations"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def write_suite(directory: Path, name: str, expectations: list[dict[str, Any]]) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations, "meta": {}}))
    return path


def exp(etype: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": etype, "kwargs": kwargs, "meta": {}}


def chunk(columns: dict[str, list[Any]], rows: list[int] | None = None, file: str = "users.csv") -> Chunk:
    table = pa.table(columns)
    return Chunk(file, table, rows if rows is not None else [i + 2 for i in range(table.num_rows)])


def runner(tmp_path: Path, *expectations: dict[str, Any], now: datetime = NOW) -> SuiteRunner:
    write_suite(tmp_path, "s", list(expectations))
    return SuiteRunner(["s"], tmp_path, now=lambda: now)


def check(checks: list[TableCheck], etype: str) -> TableCheck:
    (found,) = [c for c in checks if c.expectation == etype]
    return found


def timestamps(*iso: str | None) -> pa.Array:
    return pa.array(
        [None if s is None else datetime.fromisoformat(s) for s in iso], type=pa.timestamp("us", tz="UTC")
    )


USERS = {
    "user_id": ["u1", "u2", None, "u4", "a-very-long-user-id", "u6"],
    "age": ["30", "200", "41", "x", "25", "-1"],
    "plan": ["free", "platinum", "pro", None, "team", "free"],
    "email": ["a@b.com", "bad", "c@d.io", "e@f.com", "g@h.com", "i@j.com"],
}
# Non-contiguous source rows (as after parse rejects) so positions must be mapped, not reused.
USER_ROWS = [2, 3, 5, 6, 9, 10]


def test_fixture_suite_rejects_each_kind_with_row_numbers() -> None:
    r = SuiteRunner(["rows"], FIXTURES)
    assert r.columns == {"user_id", "age", "plan", "email"}
    result = r.validate(chunk(USERS, USER_ROWS))
    assert isinstance(result, ChunkValidation)
    assert result.keep == [True, False, False, True, False, False]
    by_row = {x.ref.row: x for x in result.rejects}
    assert sorted(by_row) == [3, 5, 9, 10]
    assert all(x.stage == "expectation" for x in result.rejects)
    assert by_row[5].rule == "expect_column_values_to_not_be_null"
    assert by_row[5].column == "user_id"
    assert by_row[9].rule == "expect_column_value_lengths_to_be_between"
    assert "'a-very-long-user-id'" in by_row[9].reason and "length not between 2 and 12" in by_row[9].reason
    assert by_row[10].rule == "expect_column_values_to_be_between"
    assert by_row[10].reason == "column 'age': value '-1' not between 0 and 120"
    assert by_row[3].values == {"user_id": "u2", "age": "200", "plan": "platinum", "email": "bad"}


def test_row_failing_several_expectations_is_rejected_once_with_all_reasons() -> None:
    r = SuiteRunner(["rows"], FIXTURES)
    (row3,) = [x for x in r.validate(chunk(USERS, USER_ROWS)).rejects if x.ref.row == 3]
    assert row3.rule == "expect_column_values_to_be_between"
    assert row3.reason.split("; ") == [
        "column 'age': value '200' not between 0 and 120",
        "column 'plan': value 'platinum' not in set ['free','pro','team']",
        "column 'email': value 'bad' does not match regex '^[^@\\\\s]+@[^@\\\\s]+\\\\.[a-z]+$'",
    ]
    assert "users.csv, row 3, column 'age'" in row3.message()


def test_non_numeric_cell_is_left_to_the_mapper_and_numeric_columns_work(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_values_to_be_between", column="age", min_value=0, max_value=120))
    assert r.validate(chunk({"age": ["5", "x", None, "121"]})).keep == [True, True, True, False]
    assert r.validate(chunk({"age": [5, 130, None, 7]})).keep == [True, False, True, True]


@pytest.mark.parametrize(
    "column",
    [
        timestamps(
            "2025-05-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00", None, "2026-11-22T12:00:00+00:00"
        ),
        pa.array([datetime(2025, 5, 1), datetime(2026, 5, 1), None, datetime(2026, 11, 22, 12)]),
        pa.array(["2025-05-01T00:00:00Z", "2026-05-01T02:00:00+02:00", "junk", "2026-11-22T12:00:00Z"]),
    ],
    ids=["utc", "naive", "csv"],
)
def test_between_with_datetime_bounds_compares_timestamps(tmp_path: Path, column: pa.Array) -> None:
    r = runner(
        tmp_path,
        exp("expect_column_values_to_be_between", column="ts", min_value="2026-01-01", max_value="now+1h"),
    )
    result = r.validate(chunk({"ts": column}))
    assert result.keep == [False, True, True, False]
    assert result.rejects[0].reason.startswith("column 'ts': value '2025-05-01")
    assert result.rejects[0].reason.endswith("not between '2026-01-01' and 'now+1h'")


def test_between_with_bounds_that_are_not_times_is_a_suite_error(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="expect_column_values_to_be_between: invalid kwargs: .*min_value"):
        runner(tmp_path, exp("expect_column_values_to_be_between", column="c", min_value="b", max_value="d"))


@pytest.mark.parametrize(
    ("expectation", "values", "bad", "reason"),
    [
        (
            exp("expect_column_values_to_not_be_in_set", column="c", value_set=["x"]),
            ["a", "x", None],
            [1],
            "column 'c': value 'x' is in forbidden set ['x']",
        ),
        (
            exp("expect_column_values_to_not_match_regex", column="c", regex="^test"),
            ["test1", "ok", "tester"],
            [0, 2],
            "column 'c': value 'test1' matches forbidden regex '^test'",
        ),
        (
            exp("expect_column_value_lengths_to_equal", column="c", value=2),
            ["ab", "abc", "cd"],
            [1],
            "column 'c': value 'abc' has length other than 2",
        ),
        (
            exp("expect_column_values_to_be_between", column="c", min_value=0, strict_min=True),
            [0, 1, -3],
            [0, 2],
            "column 'c': value 0 not > 0",
        ),
    ],
)
def test_more_map_expectations(
    tmp_path: Path, expectation: dict[str, Any], values: list[Any], bad: list[int], reason: str
) -> None:
    result = runner(tmp_path, expectation).validate(chunk({"c": values}, [10, 20, 30]))
    assert [x.ref.row for x in result.rejects] == [[10, 20, 30][i] for i in bad]
    assert result.rejects[0].reason == reason
    assert result.rejects[0].rule == expectation["type"]


def test_long_values_are_truncated_in_reasons(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_values_to_be_in_set", column="c", value_set=["a"]))
    (reject,) = r.validate(chunk({"c": ["z" * 500]})).rejects
    assert len(reject.reason) < 150 and reject.reason.endswith("zzz... not in set ['a']")


def test_multi_chunk_stream_maps_each_chunk_to_its_own_rows() -> None:
    r = SuiteRunner(["rows", "table"], FIXTURES, now=lambda: NOW)
    first = r.validate(chunk({**USERS, "updated_at": ["2026-11-21T12:00:00Z"] * 6}, USER_ROWS))
    second = r.validate(
        chunk(
            {
                "user_id": ["u7", "u8"],
                "age": ["20", "20"],
                "plan": ["pro", "gold"],
                "email": ["k@l.com", "m@n.com"],
                "updated_at": ["2026-11-22T07:30:00Z", None],
            },
            [11, 12],
        )
    )
    assert [x.ref.row for x in first.rejects] == [3, 5, 9, 10]
    assert [x.ref.row for x in second.rejects] == [12]
    assert second.keep == [True, False]
    checks = r.finish()
    assert check(checks, "expect_table_row_count_to_be_between").observed == 8
    assert check(checks, "expect_column_max_to_be_between").observed == "2026-11-22T07:30:00+00:00"


def test_the_table_pass_reports_what_validate_reports_without_building_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stages.py's first pass for the table checks (table_pass): the same table checks as validate (row
    count, max, `mostly` ratios of map expectations), the same errors, and no Rejected built (it discards them)."""
    import connector.validation as validation

    chunks = [
        chunk({**USERS, "updated_at": ["2026-11-21T12:00:00Z"] * 6}, USER_ROWS),
        chunk({"user_id": ["u7", None], "age": ["20", "20"], "plan": ["pro", "gold"], "email": ["k@l.com", "x"],
               "updated_at": ["2026-11-22T07:30:00Z", None]}, [11, 12]),
    ]  # fmt: skip
    mostly = exp("expect_column_values_to_not_be_null", column="user_id", mostly=0.9)
    write_suite(tmp_path, "mostly", [mostly])
    built: list[object] = []
    real = validation.Rejected
    monkeypatch.setattr(validation, "Rejected", lambda *a, **k: built.append(1) or real(*a, **k))
    for names, folder in (["rows", "table"], FIXTURES), (["mostly"], tmp_path):
        full = SuiteRunner(names, folder, now=lambda: NOW)
        rejected = sum(len(full.validate(c).rejects) for c in chunks)
        assert rejected > 0 and len(built) == rejected
        built.clear()
        first = SuiteRunner(names, folder, now=lambda: NOW)
        for c in chunks:
            first.table_pass(c)
        assert built == []
        assert first.finish() == full.finish()
    with pytest.raises(SuiteError, match="needs column 'plan'"):
        SuiteRunner(["rows"], FIXTURES).table_pass(chunk({"user_id": ["u1"], "age": ["1"], "email": ["a@b.c"]}))


def test_row_count_across_chunks(tmp_path: Path) -> None:
    r = runner(
        tmp_path,
        exp("expect_table_row_count_to_be_between", min_value=5, max_value=6),
        exp("expect_table_row_count_to_equal", value=7),
    )
    for n in (3, 2):
        assert r.validate(chunk({"a": list(range(n))})).rejects == []
    checks = r.finish()
    between = check(checks, "expect_table_row_count_to_be_between")
    assert (between.success, between.observed, between.column) == (True, 5, None)
    equal = check(checks, "expect_table_row_count_to_equal")
    assert (equal.success, equal.observed) == (False, 5)
    assert "5 rows, expected exactly 7" in equal.detail


def test_uniqueness_across_chunks_counts_duplicates_without_rejecting_rows(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_values_to_be_unique", column="id"))
    a = r.validate(chunk({"id": ["u1", "u2", "u3", None]}))
    b = r.validate(chunk({"id": ["u4", "u1", None, "u2"]}))
    c = r.validate(chunk({"id": ["u1", "u5"]}))
    assert a.rejects == b.rejects == c.rejects == []
    assert all(a.keep + b.keep + c.keep)
    (unique,) = r.finish()
    assert unique.success is False
    assert unique.observed == 3  # u1 twice more, u2 once more; nulls are not duplicates
    assert "3 duplicate rows (2 values occur more than once) in 8 non-null values" in unique.detail


def test_uniqueness_passes_on_distinct_values(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_values_to_be_unique", column="id"))
    r.validate(chunk({"id": [1, 2, 3]}))
    r.validate(chunk({"id": [4, 5, None, None]}))
    (unique,) = r.finish()
    assert (unique.success, unique.observed) == (True, 0)


def test_uniqueness_spills_hashes_to_disk_and_counts_like_in_memory() -> None:
    """Past spill_at hashes the store moves them to partition files: RAM stays bounded, counts stay exact."""
    import numpy as np

    from connector.validation.aggregates import HashSpill

    rng = np.random.default_rng(5)
    chunks = [
        rng.integers(0, 60_000, 2_000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) for _ in range(40)
    ]
    spill, memory = HashSpill(spill_at=5_000), HashSpill(spill_at=10**9)
    peak = 0
    for c in chunks:
        spill.add(c)
        memory.add(c)
        peak = max(peak, spill._buffered)
    assert spill.spilled > 0 and peak < 5_000 + 2_000
    folder = Path(spill._dir.name) if spill._dir is not None else None
    every = np.concatenate(chunks)
    _, counts = np.unique(every, return_counts=True)
    expected = (len(every), int((counts - 1).sum()), int((counts > 1).sum()))
    assert spill.duplicates() == memory.duplicates() == expected
    assert expected[1] > 0
    assert folder is not None and not folder.exists()  # the temporary files are gone once counted


def test_uniqueness_through_the_runner_when_hashes_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.validation import aggregates

    monkeypatch.setattr(aggregates.HashSpill, "SPILL_AT", 3)
    r = runner(tmp_path, exp("expect_column_values_to_be_unique", column="id"))
    r.validate(chunk({"id": ["u1", "u2", "u3", None]}))
    r.validate(chunk({"id": ["u4", "u1", None, "u2"]}))
    r.validate(chunk({"id": ["u1", "u5"]}))
    (unique,) = r.finish()
    assert (unique.success, unique.observed) == (False, 3)
    assert "3 duplicate rows (2 values occur more than once) in 8 non-null values" in unique.detail


@pytest.mark.parametrize(("newest", "fresh"), [("2026-11-21T09:00:00", True), ("2026-11-21T07:00:00", False)])
def test_freshness_max_with_relative_bound(tmp_path: Path, newest: str, fresh: bool) -> None:
    r = runner(tmp_path, exp("expect_column_max_to_be_between", column="ts", min_value="now-24h"))
    r.validate(chunk({"ts": timestamps("2026-11-01T00:00:00+00:00", None)}))
    r.validate(chunk({"ts": timestamps(newest + "+00:00", "2026-11-10T00:00:00+00:00")}))
    (freshness,) = r.finish()
    assert freshness.success is fresh
    assert freshness.observed == newest + "+00:00"
    assert freshness.column == "ts"


def test_freshness_on_string_column_with_iso_bounds(tmp_path: Path) -> None:
    r = runner(
        tmp_path,
        exp(
            "expect_column_max_to_be_between", column="ts", min_value="2026-11-20T00:00:00Z", max_value="now"
        ),
        exp("expect_column_min_to_be_between", column="ts", min_value="2026-01-01"),
    )
    r.validate(chunk({"ts": ["2026-11-20T10:00:00+02:00", "not a time", None]}))
    r.validate(chunk({"ts": ["2025-12-31T23:00:00-02:00"]}))
    checks = r.finish()
    assert check(checks, "expect_column_max_to_be_between").success is True
    low = check(checks, "expect_column_min_to_be_between")
    assert (low.success, low.observed) == (True, "2026-01-01T01:00:00+00:00")


def test_future_rows_fail_max_now(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_max_to_be_between", column="ts", max_value="now+1h"))
    r.validate(chunk({"ts": timestamps("2026-11-22T09:30:00+00:00")}))
    assert r.finish()[0].success is False


def test_min_and_max_merge_numbers(tmp_path: Path) -> None:
    r = runner(
        tmp_path,
        exp("expect_column_min_to_be_between", column="n", min_value=0),
        exp("expect_column_max_to_be_between", column="n", max_value=100),
    )
    r.validate(chunk({"n": ["5", "50"]}))
    r.validate(chunk({"n": ["-2", "101"]}))
    checks = r.finish()
    assert (check(checks, "expect_column_min_to_be_between").observed, checks[0].success) == (-2, False)
    assert (check(checks, "expect_column_max_to_be_between").observed, checks[1].success) == (101, False)


def test_mean_merges_sums_and_counts_not_means(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_mean_to_be_between", column="x", min_value=2.5, max_value=3.5))
    r.validate(chunk({"x": [1.0, 1.0, 1.0, None]}))
    r.validate(chunk({"x": [9.0]}))
    (mean,) = r.finish()
    # The mean of the chunk means would be 5.0; the stream's mean is 12 / 4.
    assert (mean.observed, mean.success) == (3.0, True)


def test_other_aggregates_run_per_chunk_and_are_anded(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_median_to_be_between", column="x", min_value=0, max_value=10))
    assert r.validate(chunk({"x": [1, 2, 3]})).rejects == []
    r.validate(chunk({"x": [50, 60, 70]}))
    r.validate(chunk({"x": [4, 5]}))
    (median,) = r.finish()
    assert median.success is False
    assert median.observed == 60
    assert "failed in 1 of 3 chunks" in median.detail


def test_table_wide_gx_expectations_see_every_column(tmp_path: Path) -> None:
    r = runner(
        tmp_path,
        exp("expect_table_columns_to_match_set", column_set=["a", "b"], exact_match=True),
        exp("expect_column_values_to_be_between", column="a", min_value=0, max_value=5),
    )
    assert r.validate(chunk({"a": ["1", "9"], "b": [2, 3]})).keep == [True, False]
    assert check(r.finish(), "expect_table_columns_to_match_set").success is True
    r.validate(chunk({"a": [1], "b": [2], "c": [3]}))
    assert check(r.finish(), "expect_table_columns_to_match_set").success is False


def test_mostly_rejects_rows_and_reports_the_stream_ratio(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_values_to_be_in_set", column="c", value_set=["a"], mostly=0.7))
    assert len(r.validate(chunk({"c": ["a", "a", "b", None]})).rejects) == 1
    assert len(r.validate(chunk({"c": ["a", "b"]})).rejects) == 1
    (ratio,) = r.finish()
    assert ratio.success is False  # 3 of 5 non-null values pass: 0.6 < 0.7
    assert ratio.observed == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "expectation suite 's' not found"),
        ("{not json", "is not valid JSON (line 1"),
        ('{"name": "s"}', "must be a GX 1.x suite object with an 'expectations' list"),
        (
            json.dumps(
                {
                    "expectations": [
                        exp("expect_column_values_to_be_in_set", column="c", value_set=[1]),
                        exp("expect_column_to_be_lovely", column="c"),
                    ]
                }
            ),
            "expectation #2: unknown expectation type 'expect_column_to_be_lovely'",
        ),
        (
            json.dumps({"expectations": [exp("expect_column_values_to_be_in_set", column="c")]}),
            "expectation #1 expect_column_values_to_be_in_set: invalid kwargs: ",
        ),
        (
            json.dumps(
                {"expectations": [exp("expect_column_max_to_be_between", column="c", min_value="now-3w")]}
            ),
            "min_value 'now-3w' is not 'now', 'now-<N><s|m|h|d>'",
        ),
        (
            json.dumps({"expectations": [{"kwargs": {}}]}),
            "expectation #1: each expectation must be an object",
        ),
        (
            json.dumps(
                {"expectations": [exp("expect_column_min_to_be_between", column="c", min_value="soon")]}
            ),
            "min_value 'soon' is not a number, an ISO-8601 datetime",
        ),
    ],
)
def test_bad_suites_raise_suite_error_naming_file_and_expectation(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "s.json").write_text(content)
    with pytest.raises(SuiteError) as info:
        SuiteRunner(["s"], tmp_path)
    assert message in str(info.value)
    assert str(tmp_path / "s.json") in str(info.value)
    assert "Traceback" not in str(info.value)


def test_missing_column_in_source_is_a_suite_error(tmp_path: Path) -> None:
    r = runner(tmp_path, exp("expect_column_values_to_not_be_null", column="email"))
    with pytest.raises(SuiteError, match="needs column 'email', which users.csv does not have"):
        r.validate(chunk({"mail": ["a@b.c"]}))


def test_nothing_is_printed_or_logged(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    r = SuiteRunner(["rows", "table"], FIXTURES, now=lambda: NOW)
    r.validate(chunk({**USERS, "updated_at": ["2026-11-22T07:00:00Z"] * 6}, USER_ROWS))
    r.validate(chunk({k: v[:2] for k, v in {**USERS, "updated_at": ["x"] * 6}.items()}))
    r.finish()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert [rec.getMessage() for rec in caplog.records if rec.name.startswith("great_expectations")] == []


def test_empty_names_is_a_cheap_no_op(tmp_path: Path) -> None:
    r = SuiteRunner([], tmp_path / "does-not-exist")
    assert r.columns == set()
    result = r.validate(chunk({"a": [1, 2, 3]}))
    assert (result.keep, result.rejects) == ([True, True, True], [])
    assert r.finish() == []
    code = (
        "import sys; from pathlib import Path; from connector.validation import SuiteRunner; "
        "SuiteRunner([], Path('.')); assert 'great_expectations' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture(scope="module")
def plan_runner(tmp_path_factory: pytest.TempPathFactory) -> SuiteRunner:
    d = tmp_path_factory.mktemp("suites")
    write_suite(
        d, "plans", [exp("expect_column_values_to_be_in_set", column="plan", value_set=["free", "pro"])]
    )
    return SuiteRunner(["plans"], d)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["free", "pro", "team", "", None]), min_size=1, max_size=40))
def test_in_set_rejects_exactly_the_rows_outside_the_set(
    plan_runner: SuiteRunner, plans: list[str | None]
) -> None:
    rows = [3 * i + 7 for i in range(len(plans))]
    result = plan_runner.validate(chunk({"plan": plans}, rows))
    expected = [r for r, p in zip(rows, plans, strict=True) if p is not None and p not in ("free", "pro")]
    assert [x.ref.row for x in result.rejects] == expected
    assert result.keep == [r not in expected for r in rows]


def test_random_stream_matches_an_independent_oracle(tmp_path: Path) -> None:
    """Rejects, uniqueness, mean and row count over many chunks agree with plain Python over the whole table."""
    scale = 50 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 1
    rng = random.Random(11)
    n_chunks, size = 4 * scale, 1500
    r = runner(
        tmp_path,
        exp("expect_column_values_to_be_in_set", column="plan", value_set=["free", "pro"]),
        exp("expect_column_values_to_be_between", column="age", min_value=18, max_value=90),
        exp("expect_column_values_to_be_unique", column="id"),
        exp("expect_column_mean_to_be_between", column="age", min_value=0, max_value=200),
        exp("expect_table_row_count_to_equal", value=n_chunks * size),
    )
    ids: list[str] = []
    ages: list[int] = []
    row = 2
    for _ in range(n_chunks):
        plan = [rng.choice(["free", "pro", "team", None]) for _ in range(size)]
        age = [rng.randint(0, 120) for _ in range(size)]
        uid = [f"u{rng.randint(0, 40 * size * n_chunks)}" for _ in range(size)]
        rows = list(range(row, row + size))
        row += size + 1
        result = r.validate(chunk({"id": uid, "age": [str(a) for a in age], "plan": plan}, rows))
        bad = [
            n
            for n, p, a in zip(rows, plan, age, strict=True)
            if (p is not None and p not in ("free", "pro")) or not 18 <= a <= 90
        ]
        assert [x.ref.row for x in result.rejects] == bad
        ids += uid
        ages += age
    checks = r.finish()
    surplus = len(ids) - len(set(ids))
    assert check(checks, "expect_column_values_to_be_unique").observed == surplus
    assert check(checks, "expect_column_values_to_be_unique").success is (surplus == 0)
    assert check(checks, "expect_column_mean_to_be_between").observed == pytest.approx(sum(ages) / len(ages))
    assert check(checks, "expect_table_row_count_to_equal").success is True


def test_compiled_suite_matches_gx_batch_validate_chunk_after_chunk() -> None:
    """The suite compiled once (plan.py) gives, chunk after chunk, what GX's own batch.validate gives."""
    import great_expectations as gx
    import pandas as pd

    from connector.validation.plan import RESULT_FORMAT, CompiledSuite
    from connector.validation.suites import quiet

    with quiet():
        context = gx.get_context(mode="ephemeral")
        whole = (
            context.data_sources.add_pandas("p")
            .add_dataframe_asset("a")
            .add_batch_definition_whole_dataframe("w")
        )
        suite = gx.ExpectationSuite(name="mix")
        for expectation in (
            gx.expectations.ExpectColumnValuesToNotBeNull(column="s"),
            gx.expectations.ExpectColumnValuesToBeInSet(column="s", value_set=["a", "b"], mostly=0.5),
            gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=10),
            gx.expectations.ExpectColumnValuesToMatchRegex(column="s", regex="^a"),
            gx.expectations.ExpectColumnMedianToBeBetween(column="x", min_value=0, max_value=5),
            gx.expectations.ExpectTableColumnCountToEqual(value=2),
        ):
            suite.add_expectation(expectation)
        suite = context.suites.add(suite)
    compiled = CompiledSuite(context, whole, suite)
    frames = [
        pd.DataFrame({"s": ["a", "z", None, "b"], "x": [1.0, 20.0, 3.0, None]}),
        pd.DataFrame({"s": ["c"] * 5, "x": [-1.0] * 5}),  # every row fails after a mixed chunk
        pd.DataFrame({"s": ["a", "a"], "x": [2.0, 3.0]}),  # then a clean, shorter chunk
        pd.DataFrame({"s": ["q", "a", "a"], "x": [1.0, 2.0, 3.0], "extra": [0, 0, 0]}),
    ]
    keys = ("unexpected_index_list", "element_count", "missing_count", "unexpected_count", "observed_value")
    for df in frames:
        with quiet():
            batch = whole.get_batch(batch_parameters={"dataframe": df})
            expected = batch.validate(suite, result_format=RESULT_FORMAT)
        by_id = {r.expectation_config.id: r for r in expected.results}
        for e, got in zip(suite.expectations, compiled.run(df), strict=True):
            want = by_id[e.id]
            assert got.error is None
            assert got.success == want.success, e.expectation_type
            assert {k: got.result.get(k) for k in keys} == {k: want.result.get(k) for k in keys}


def test_gx_evaluation_error_is_a_suite_error_naming_the_expectation(tmp_path: Path) -> None:
    r = runner(
        tmp_path,
        exp("expect_column_values_to_not_be_null", column="s"),
        exp("expect_column_median_to_be_between", column="s", min_value=1),
    )
    with pytest.raises(
        SuiteError, match=r"expectation #2 expect_column_median_to_be_between could not be evaluated"
    ):
        r.validate(chunk({"s": ["a", None]}))


def test_compiled_runner_keeps_chunks_apart(tmp_path: Path) -> None:
    """A chunk full of failures, then a clean one, then a short one: no result of one chunk leaks into the next."""
    r = runner(
        tmp_path,
        exp("expect_column_values_to_be_in_set", column="plan", value_set=["free"]),
        exp("expect_column_values_to_be_between", column="age", min_value=0, max_value=9),
    )
    assert r.validate(chunk({"plan": ["x"] * 6, "age": ["50"] * 6})).keep == [False] * 6
    assert r.validate(chunk({"plan": ["free"] * 8, "age": ["1"] * 8})).rejects == []
    short = r.validate(chunk({"plan": ["free", "y"], "age": ["3", "4"]}, rows=[40, 41]))
    assert [(x.ref.row, x.rule) for x in short.rejects] == [(41, "expect_column_values_to_be_in_set")]
