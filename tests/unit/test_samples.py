"""Sample data, pipelines, suites and the pipeline JSON Schema: deterministic, loadable and consistent."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from connector.config import Source, load_pipeline, pipeline_json_schema
from connector.readers import list_files, read_source

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data"
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
SUITES = sorted((ROOT / "expectations").glob("*.json"))


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("sample_generate", SAMPLES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _suite(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "expectations" / f"{name}.json").read_text(encoding="utf-8"))


def _kwargs(suite: str, etype: str, column: str) -> dict[str, Any]:
    for e in _suite(suite)["expectations"]:
        if e["type"] == etype and e["kwargs"].get("column") == column:
            return dict(e["kwargs"])
    raise AssertionError(f"{suite} has no {etype} on {column}")


def _expected_rejects() -> list[dict[str, str]]:
    with open(SAMPLES / "expected_rejects.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_all(name: str) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Rows by row number, and parse rejects by row number."""
    rows: dict[int, dict[str, Any]] = {}
    parse: dict[int, str] = {}
    for chunk in read_source(Source(path=f"sample_data/{name}", chunk_rows=256), ROOT):
        for i, row in enumerate(chunk.table.to_pylist()):
            rows[chunk.row_numbers[i]] = row
        parse.update({r.ref.row: r.rule for r in chunk.rejects})
    return rows, parse


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_matches_the_committed_files(tmp_path: Path) -> None:
    gen = _generator()
    gen.main(["--out", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([*gen.build_all(), gen.WAREHOUSE])
    for name in gen.build_all():
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), (
            f"{name} differs; rerun generate.py"
        )
    # A DuckDB file is not byte-for-byte repeatable: its rows are.
    assert _warehouse(tmp_path / gen.WAREHOUSE) == _warehouse(SAMPLES / gen.WAREHOUSE), "rerun generate.py"
    assert len(_warehouse(SAMPLES / gen.WAREHOUSE)) == len(gen.warehouse_rows())


def _warehouse(path: Path) -> list[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return [tuple(r) for r in con.execute("SELECT * FROM users ORDER BY updated_at, user_id").fetchall()]
    finally:
        con.close()


# --------------------------------------------------------------------------- pipelines, suites, schema


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_loads_and_its_sources_and_suites_exist(path: Path) -> None:
    pipeline = load_pipeline(path)
    assert pipeline.destination.url == "local"
    for stream in pipeline.streams:
        if stream.source.is_sql:
            assert stream.source.connection is not None and stream.source.connection.duckdb is not None
            assert (Path(pipeline.base_dir) / stream.source.connection.duckdb).is_file()
        else:
            assert list_files(stream.source, Path(pipeline.base_dir))
        for suite in stream.expectations:
            assert (Path(pipeline.base_dir) / pipeline.expectations_dir / f"{suite}.json").is_file()


def test_the_expected_pipelines_are_shipped() -> None:
    names = {p.stem for p in PIPELINES}
    assert {"users", "events", "purchases", "canvas_trigger", "live_activity", "quickstart"} <= names
    quick = load_pipeline(ROOT / "pipelines" / "quickstart.yaml")
    assert [s.kind for s in quick.streams] == ["attributes", "events", "purchases"]


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_suites_are_gx_1x_json_over_real_columns(path: Path) -> None:
    suite = json.loads(path.read_text(encoding="utf-8"))
    assert suite["name"] == path.stem
    assert isinstance(suite["meta"], dict)
    data = {
        "users": "users.csv",
        "events": "events.parquet",
        "purchases": "purchases.csv",
        "bench": "users.csv",
    }
    rows, _ = _read_all(data[path.stem.split("_")[0]])
    columns = set(next(iter(rows.values())))
    types = [e["type"] for e in suite["expectations"]]
    assert all(t.startswith("expect_") for t in types)
    for e in suite["expectations"]:
        if "column" in e["kwargs"]:
            assert e["kwargs"]["column"] in columns
    if path.stem == "bench_users_suite":
        assert len(types) == 5
    else:
        assert any(t.startswith("expect_table_") for t in types)
        bounds = next(
            e["kwargs"] for e in suite["expectations"] if e["type"] == "expect_table_row_count_to_be_between"
        )
        assert bounds["min_value"] <= len(rows) <= bounds["max_value"]


def test_committed_json_schema_equals_the_generated_one() -> None:
    committed = json.loads(
        (ROOT / "connector" / "schema" / "pipeline.schema.json").read_text(encoding="utf-8")
    )
    assert committed == pipeline_json_schema(), "regenerate connector/schema/pipeline.schema.json"


# --------------------------------------------------------------------------- expected rejects


def _is_float(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _is_time(v: Any) -> bool:
    try:
        datetime.fromisoformat(v)
    except (TypeError, ValueError):
        return False
    return True


def _props(row: dict[str, Any]) -> dict[str, Any] | None:
    try:
        value = json.loads(row["properties"])
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _detectors() -> dict[tuple[str, str], Any]:
    """(file, rule) -> predicate that is true exactly on the rows that rule must catch."""
    plans = set(_kwargs("users_suite", "expect_column_values_to_be_in_set", "plan")["value_set"])
    age = _kwargs("users_suite", "expect_column_values_to_be_between", "age")
    amount = _kwargs("events_suite", "expect_column_values_to_be_between", "amount")
    user_regex = re.compile(
        _kwargs("purchases_suite", "expect_column_values_to_match_regex", "user_id")["regex"]
    )
    email = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
    u, e, p, la = "users.csv", "events.parquet", "purchases.csv", "live_activities.csv"
    return {
        (u, "expect_column_values_to_not_be_null"): lambda r: r["user_id"] is None,
        (u, "email.invalid"): lambda r: r["email"] is not None and not email.match(r["email"]),
        (u, "external_id.too_long"): lambda r: r["user_id"] is not None and len(r["user_id"].encode()) > 987,
        (u, "cast.float"): lambda r: not _is_float(r["lifetime_value"]),
        (u, "cast.time"): lambda r: not _is_time(r["signup_at"]),
        (u, "expect_column_values_to_be_in_set"): lambda r: r["plan"] not in plans,
        (u, "expect_column_values_to_be_between"): lambda r: (
            not age["min_value"] <= int(r["age"]) <= age["max_value"]
        ),
        (u, "standard_field.gender"): lambda r: r["gender"] not in (None, "M", "F", "O", "N", "P"),
        (u, "string.too_long"): lambda r: any(
            isinstance(v, str) and len(v) > 255 for k, v in r.items() if k != "user_id"
        ),
        (e, "expect_column_values_to_not_be_null"): lambda r: r["user_id"] is None,
        (e, "event.name_missing"): lambda r: not r["event_name"],
        (e, "time.missing"): lambda r: r["event_time"] is None,
        (e, "cast.json"): lambda r: _props(r) is None,
        (e, "key.invalid"): lambda r: any(
            not k or k.startswith("$") or len(k) > 255 for k in _props(r) or {}
        ),
        (e, "key.reserved"): lambda r: bool({"time", "event_name"} & set(_props(r) or {})),
        (e, "expect_column_values_to_be_between"): lambda r: (
            not amount["min_value"] <= r["amount"] <= amount["max_value"]
        ),
        (e, "properties.too_many"): lambda r: len(set(_props(r) or {}) | {"amount"}) > 256,
        (p, "purchase.currency"): lambda r: not re.fullmatch(r"[A-Z]{3}", r["currency"] or ""),
        (p, "cast.float"): lambda r: not _is_float(r["price"]),
        (p, "purchase.quantity"): lambda r: not 1 <= int(r["quantity"]) <= 100,
        (p, "purchase.product_id_missing"): lambda r: r["product_id"] is None,
        (p, "cast.time"): lambda r: not _is_time(r["purchased_at"]),
        (p, "expect_column_values_to_match_regex"): lambda r: not user_regex.match(r["user_id"] or ""),
        (la, "cast.time"): lambda r: r["dismissal_date"] is not None and not _is_time(r["dismissal_date"]),
    }


def test_expected_rejects_point_at_exactly_the_bad_rows() -> None:
    expected = _expected_rejects()
    assert expected, "expected_rejects.csv is empty"
    detectors = _detectors()
    by_file: dict[str, list[dict[str, str]]] = {}
    for e in expected:
        by_file.setdefault(e["file"].removeprefix("sample_data/"), []).append(e)
    for name in (
        "users.csv",
        "events.parquet",
        "purchases.csv",
        "canvas_recipients.csv",
        "live_activities.csv",
    ):
        rows, parse = _read_all(name)
        mine = by_file.get(name, [])
        # Parse rejects: exactly what the reader reports.
        assert {(int(e["row"]), e["rule"]) for e in mine if e["stage"] == "parse"} == set(parse.items())
        # Every other rule: its detector fires on exactly the listed rows and on no other row.
        for (file, rule), hit in detectors.items():
            if file != name:
                continue
            want = {int(e["row"]) for e in mine if e["rule"] == rule and e["stage"] != "parse"}
            got = {n for n, row in rows.items() if hit(row)}
            assert got == want, f"{name} {rule}: rows {sorted(got)} break it, expected {sorted(want)}"
        covered = {(name, e["rule"]) for e in mine if e["stage"] != "parse"}
        assert covered <= set(detectors), f"{name}: rules without a detector: {covered - set(detectors)}"
        # One defect per row.
        assert len({e["row"] for e in mine}) == len(mine)


def test_expected_counts_agree_with_rejects_and_readers() -> None:
    counts = json.loads((SAMPLES / "expected_counts.json").read_text(encoding="utf-8"))
    expected = _expected_rejects()
    files = {
        "users": ["users.csv"],
        "events": ["events.parquet"],
        "purchases": ["purchases.csv"],
        "canvas_trigger": ["canvas_recipients.csv"],
        "live_activity": ["live_activities.csv"],
        "quickstart": ["users.csv", "events.parquet", "purchases.csv"],
    }
    assert set(counts) == set(files) | {"warehouse_users"}  # the warehouse's rows are checked in the run test
    for pipeline, names in files.items():
        mine = [e for e in expected if e["file"].removeprefix("sample_data/") in names]
        read = 0
        for name in names:
            rows, parse = _read_all(name)
            read += len(rows) + len(parse)
        c = counts[pipeline]
        assert c["read"] == read
        assert (
            c["rejected"]
            == len(mine)
            == sum(c["rejected_by_stage"].values())
            == sum(c["rejected_by_rule"].values())
        )
        assert c["rejected_by_stage"] == dict(Counter(e["stage"] for e in mine))
        assert c["rejected_by_rule"] == dict(Counter(e["rule"] for e in mine))
        assert c["valid"] == read - len(mine)


def test_good_rows_look_realistic() -> None:
    rows, _ = _read_all("users.csv")
    good = [r for r in rows.values() if r["user_id"] and len(r["user_id"]) == 6]
    assert len(good) > 950
    assert all(r["country"] and re.fullmatch(r"[A-Z]{2}", r["country"]) for r in good)
    assert all(date.fromisoformat(r["dob"]) < date(2012, 1, 1) for r in good)
    assert all(r["phone"] is None or re.fullmatch(r"\+[1-9][0-9]{7,14}", r["phone"]) for r in good)
    assert all(isinstance(json.loads(r["preferences"]), dict) for r in good)
    assert any(r["bio"] and "\n" in r["bio"] for r in good), "one bio spans two lines (row numbering demo)"
