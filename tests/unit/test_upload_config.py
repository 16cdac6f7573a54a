"""config/upload.py (flags -> pipeline), readers/infer.py (column types) and dump_pipeline (the written file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector.config import Source, dump_pipeline, load_pipeline
from connector.config.upload import MapSpec, UploadSpec, build_upload, parse_map
from connector.errors import ConfigError
from connector.readers.infer import infer_types, string_type

COLUMNS = {"id": "auto", "email": "auto", "age": "integer", "a:b": "auto", "dob": "date", "seen": "date"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("age", MapSpec("age", None, None)),
        ("age:float", MapSpec("age", "float", None)),
        ("age=years", MapSpec("age", None, "years")),
        ("age:string=years", MapSpec("age", "string", "years")),
        ("a:b", MapSpec("a:b", None, None)),  # a column whose name holds ':'
        ("a:b:integer=n", MapSpec("a:b", "integer", "n")),
    ],
)
def test_parse_map(text: str, expected: MapSpec) -> None:
    assert parse_map(text, COLUMNS) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--map '': expected COL[:TYPE][=ATTR]"),
        ("age=", "--map 'age=': expected COL[:TYPE][=ATTR]"),
        (
            "age:nope",
            "--map 'age:nope': unknown type 'nope'; use one of string, integer, float, boolean, time",
        ),
        ("agee", "--map 'agee': no column 'agee' in the file; columns: id, email, age"),
    ],
)
def test_parse_map_errors_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_map(text, COLUMNS)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def spec(**kw: Any) -> UploadSpec:
    base: dict[str, Any] = {"file": Path("/data/u.csv"), "kind": "attributes", "id_column": "id",
                            "workdir": Path("/work/here")}  # fmt: skip
    return UploadSpec(**{**base, **kw})


def test_every_column_but_the_identifier_with_dob_a_date_and_other_dates_times() -> None:
    p = build_upload(spec(), COLUMNS)
    s = p.streams[0]
    assert s.source.path == "/data/u.csv" and s.identifier is not None and s.identifier.kind == "external_id"
    assert [(a.column, a.type) for a in s.attributes] == [
        ("email", "auto"), ("age", "integer"), ("a:b", "auto"), ("dob", "date"), ("seen", "time")
    ]  # fmt: skip
    assert p.report.dir == "/work/here/reports/{pipeline}/{run_id}" and p.name == "upload-u"
    assert p.state.path == "/work/here/state/{pipeline}.sqlite" and p.destination.url == "local"


def test_user_alias_and_date_formats_and_maps() -> None:
    p = build_upload(spec(id_type="user_alias", alias_label_column="email", maps=("seen=last_seen",),
                          date_formats=("%d.%m.%Y", "%b %d, %Y")), COLUMNS)  # fmt: skip
    s = p.streams[0]
    assert s.identifier is not None and s.identifier.user_alias is not None
    assert s.identifier.user_alias.label.column == "email"
    (a,) = s.attributes
    assert (a.column, a.target, a.type, a.format) == ("seen", "last_seen", "time", ["%d.%m.%Y", "%b %d, %Y"])


def test_purchases_default_to_columns_named_like_the_fields() -> None:
    cols = {"uid": "auto", "product_id": "auto", "price": "float", "currency": "auto", "quantity": "integer",
            "time": "time", "colour": "auto"}  # fmt: skip
    p = build_upload(spec(kind="purchases", id_column="uid"), cols)
    m = p.streams[0].purchase
    assert m is not None and m.quantity is not None
    assert (m.product_id.column, m.price.column, m.currency.column, m.time.column) == (
        "product_id",
        "price",
        "currency",
        "time",
    )
    assert list(m.properties.columns) == ["colour"]
    with pytest.raises(ConfigError, match=r"^--kind purchases needs --price-column COLUMN"):
        build_upload(spec(kind="purchases", id_column="uid"), {k: v for k, v in cols.items() if k != "price"})
    with pytest.raises(ConfigError, match=r"^--event-name does not apply to --kind purchases$"):
        build_upload(spec(kind="purchases", id_column="uid", event_name="x"), cols)


def test_events_with_a_constant_name_and_a_json_properties_column() -> None:
    cols = {"uid": "auto", "at": "time", "properties": "object", "n": "integer"}
    p = build_upload(spec(kind="events", id_column="uid", event_name="signup", time_column="at"), cols)
    m = p.streams[0].event
    assert m is not None and m.name.value == "signup" and m.time.column == "at" and m.time.type == "time"
    assert m.properties.json_column == "properties" and list(m.properties.columns) == ["n"]
    with pytest.raises(ConfigError, match="not both"):
        build_upload(
            spec(kind="events", id_column="uid", event_name="a", name_column="n", time_column="at"), cols
        )


def test_the_written_file_loads_back_to_the_same_pipeline(tmp_path: Path) -> None:
    p = build_upload(spec(kind="events", id_column="uid", event_name="paid ${HOME} $5 $$", time_column="at",
                          endpoint="https://rest.iad-01.braze.com", api_key_env="MY_KEY",
                          date_formats=("%d/%m/%Y",)),
                     {"uid": "auto", "at": "time", "properties": "object"})  # fmt: skip
    path = tmp_path / "run1" / "pipeline.yaml"
    path.parent.mkdir()
    text = dump_pipeline(p, "a header\nline two")
    assert text.startswith("# a header\n# line two\nname: upload-u\n") and "base_dir" not in text
    assert "api_key_env: MY_KEY" in text
    path.write_text(text, encoding="utf-8")
    again = load_pipeline(path)
    assert again.model_dump(exclude={"base_dir"}) == p.model_dump(exclude={"base_dir"})
    assert again.streams[0].event is not None and again.streams[0].event.name.value == "paid ${HOME} $5 $$"


def test_string_columns_take_the_type_95_percent_of_their_cells_fit() -> None:
    assert string_type(pa.array(["1", "2", "-3", None, " "])) == "integer"
    assert string_type(pa.array(["02134", "10001"])) == "auto"  # a leading zero: a code, not a number
    assert string_type(pa.array(["+14155550100", "+14155550101"])) == "auto"
    assert string_type(pa.array(["1", "2.5", "1e3"])) == "float"
    assert string_type(pa.array(["true", "No", "YES"])) == "boolean"
    assert string_type(pa.array(["2023-01-02", "2023-01-03"])) == "date"
    assert string_type(pa.array(["2023-01-02T00:00:00Z", "2023-01-03", "07/09/2023"])) == "time"
    assert string_type(pa.array(['{"a": 1}'])) == "object"
    assert string_type(pa.array([str(i) for i in range(19)] + ["x"])) == "integer"  # 19 of 20: 95 %
    assert string_type(pa.array([str(i) for i in range(9)] + ["x"])) == "auto"  # 9 of 10
    assert string_type(pa.array([None, None], type=pa.string())) == "auto"
    mixed = pa.array(["10.03.2022", "Jun 16, 2022"])
    assert (
        string_type(mixed) == "auto" and string_type(mixed, date_formats=("%d.%m.%Y", "%b %d, %Y")) == "time"
    )
    assert string_type(mixed, date_formats=("%d.%m.%Y",)) == "auto"  # half the cells only


def test_infer_types_of_csv_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,n,when\nu1,1,2023-01-02T00:00:00Z\nu2,2,\n", encoding="utf-8")
    assert infer_types(Source(path="a.csv"), tmp_path) == {"id": "auto", "n": "integer", "when": "time"}
    table = pa.table({"id": ["u1"], "n": pa.array([1], pa.int32()), "x": [1.5], "ok": [True],
                      "s": ['{"k": 1}'], "tags": [["a"]]})  # fmt: skip
    pq.write_table(table, tmp_path / "b.parquet")
    assert infer_types(Source(path="b.parquet"), tmp_path) == {
        "id": "auto", "n": "integer", "x": "float", "ok": "boolean", "s": "object", "tags": "array"
    }  # fmt: skip


def test_the_next_step_line_follows_the_reports_stop_not_its_exit_code(tmp_path: Path) -> None:
    from connector.report import RunReport
    from connector.upload_cli import next_step

    path = tmp_path / "pipeline.yaml"
    not_stopped = RunReport("upload-x", report_dir=tmp_path / "a")
    not_stopped.finish(4)  # an exit code of 4 from elsewhere is not a stop: nothing is left to finish
    assert not not_stopped.stopped and next_step(not_stopped, path, dry_run=False)[1].endswith("# repeats this upload")
    assert next_step(not_stopped, path, dry_run=True)[1].endswith("(this was a dry run)")
    stopped = RunReport("upload-x", report_dir=tmp_path / "b")
    stopped.set_stopped("stopped by SIGTERM", immediate=True, exit_code=143)
    stopped.finish(143)
    lines = next_step(stopped, path, dry_run=False)
    assert stopped.stopped and lines[0] == f"  pipeline file: {path}"
    assert lines[1] == f"    braze-connector run {path} --resume {tmp_path / 'b'}   # finishes this upload"
    assert stopped.to_dict()["stop"] == {"reason": "stopped by SIGTERM", "how": "at once", "exit_code": 143}
