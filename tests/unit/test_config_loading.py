"""Hostile pipeline files: alias bombs, recursive aliases, deep nesting, names that would escape their folders."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from connector.config import Pipeline, load_pipeline
from connector.config.paths import fill_template
from connector.delta import check_partitioned_state, state_path
from connector.errors import ConfigError
from connector.report.paths import report_dir_for
from connector.runlock import lock_files

STREAM = (
    "streams:\n  - name: s\n    source: {path: x.csv}\n    kind: attributes\n"
    "    identifier: {external_id: id}\n    attributes:\n      - to: x\n        value:\n"
)


def _bomb(levels: int = 9) -> str:
    lines = ["          - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"          - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "name: bomb\n" + STREAM + "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(_bomb(9), encoding="utf-8")  # 9**9 = 387M values once expanded
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_pipeline(f)
    assert time.perf_counter() - t0 < 30  # it used to hang at 100 % CPU; generous bound
    assert str(err.value).startswith(f"{f}: the YAML expands to over 100,000 values")
    assert "alias" in str(err.value)


def test_small_aliases_and_merges_still_work(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text(_bomb(2).replace("name: bomb", "name: ok"), encoding="utf-8")  # 9 + 81 + 729 values
    p = load_pipeline(f)
    assert len(p.streams[0].attributes[0].value[2]) == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nstreams: &s [*s]\n", "refers to a block that contains it"),
        ("name: x\nstreams: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
    ],
)
def test_recursive_and_deep_yaml_is_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_pipeline(f)


def _pipeline(name: str, **top: object) -> Pipeline:
    stream = {"name": "s", "source": {"path": "x.csv"}, "kind": "attributes",
              "identifier": {"external_id": "id"}, "attributes": [{"column": "a"}]}  # fmt: skip
    return Pipeline.model_validate({"name": name, "streams": [stream], **top})


@pytest.mark.parametrize("name", ["../../../x", "a/b", "..", ".hidden", "-x", "a b", "x\x00", "é", "x" * 101, ""])
def test_pipeline_names_are_restricted_to_a_path_safe_set(name: str) -> None:
    with pytest.raises(ValueError, match="it names the report and state files"):
        _pipeline(name)


def test_a_bad_name_in_a_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"name": "../../../x", "streams": []}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"- line 1: name: name '\.\./\.\./\.\./x' is not allowed"):
        load_pipeline(f)


@pytest.mark.parametrize("name", ["users", "users_v2", "crm-daily.2024", "A1"])
def test_ordinary_names_pass(name: str) -> None:
    assert _pipeline(name).name == name


def test_derived_paths_stay_inside_their_root(tmp_path: Path) -> None:
    p = _pipeline("users", base_dir=str(tmp_path))
    assert report_dir_for(p, None, "R1") == tmp_path / "reports" / "users" / "R1"  # beside the pipeline file, like state
    assert state_path(p) == tmp_path / "state" / "users.sqlite"
    # A name built without validation (model_construct skips it) is still caught where paths are made.
    evil = p.model_copy(update={"name": "../../../x"})
    with pytest.raises(ConfigError, match="outside"):
        report_dir_for(evil, None, "R1")
    with pytest.raises(ConfigError, match="outside"):
        state_path(evil)
    with pytest.raises(ConfigError, match="outside"):
        fill_template("out/run-{run_id}", "--report-dir", {"run_id": "x/../../../etc"})
    assert fill_template("{run_id}", "--report-dir", {"run_id": "R1"}) == Path("R1")
    assert fill_template("/abs/reports", "report.dir", {"run_id": "R1"}) == Path("/abs/reports")


def test_a_partition_has_a_state_file_and_lock_of_its_own(tmp_path: Path) -> None:
    stream = {"name": "s", "source": {"path": "x.csv"}, "kind": "attributes", "delta": True,
              "identifier": {"external_id": "id"}, "attributes": [{"column": "a"}]}  # fmt: skip
    p = Pipeline.model_validate({"name": "users", "streams": [stream], "base_dir": str(tmp_path),
                                 "state": {"path": "state/{pipeline}.{partition}.sqlite"}})  # fmt: skip
    assert state_path(p, "p2of4") == tmp_path / "state" / "users.p2of4.sqlite"
    assert state_path(p) == tmp_path / "state" / "users.all.sqlite"  # an unpartitioned run
    assert tmp_path / "state" / "users.p2of4.sqlite.lock" in lock_files(p, None, "p2of4")
    check_partitioned_state(p, "p2of4")  # fine: a file per partition
    shared = p.model_copy(update={"state": p.state.model_copy(update={"path": "state/{pipeline}.sqlite"})})
    check_partitioned_state(shared, None)  # unpartitioned: fine
    with pytest.raises(ConfigError, match=r"stream\(s\) s keep state .*put \{partition\} in state.path"):
        check_partitioned_state(shared, "p1of2")
    stateless = _pipeline("users", base_dir=str(tmp_path))
    check_partitioned_state(stateless, "p1of2")  # no stream keeps state: nothing to share


def test_schema_errors_name_the_line_of_the_key(tmp_path: Path) -> None:
    """Each problem the models find names the line of the key in the file (or of its mapping when the key is
    missing), so a long pipeline file's mistake is found without counting list items."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: demo\n"  # 1
        "extra: &d {a: 1}\n"  # 2: unknown key
        "streams:\n"  # 3
        "  - name: s\n"  # 4
        "    source:\n"  # 5
        "      path: x.csv\n"  # 6
        "      chunk_rows: lots\n"  # 7: not an integer
        "    kind: attributes\n"  # 8
        "    identifier: {external_id: id}\n"  # 9
        "    attributes:\n"  # 10
        "      - column: email\n"  # 11
        "        to: email\n"  # 12
        "        colour: red\n",  # 13: unknown key
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    text = str(err.value)
    assert "line 2: extra: unknown key" in text
    assert "line 7: streams.0.source.chunk_rows:" in text
    assert "line 13: streams.0.attributes.0.colour: unknown key" in text


def test_an_unquoted_placeholder_in_a_flow_mapping_is_told_to_be_quoted(tmp_path: Path) -> None:
    """`state: {path: state/{pipeline}.sqlite}` is YAML's nested mapping, not a path: the parser's error gets
    a hint; the same quoted loads."""
    f = tmp_path / "p.yaml"
    f.write_text("name: q\n" + STREAM + "state: {path: state/{pipeline}.sqlite}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(f)
    said = str(err.value)
    assert said.startswith(f"{f}: not valid YAML at line 10") and "must be quoted" in said, said
    valid = STREAM.replace("value:\n", "value: 1\n")
    f.write_text("name: q\n" + valid + 'state: {path: "state/{pipeline}.sqlite"}\n', encoding="utf-8")
    assert load_pipeline(f).state.path == "state/{pipeline}.sqlite"
    f.write_text("name: q\n" + STREAM.replace("kind: attributes", "kind: [attributes"), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(f)
    assert "not valid YAML" in str(err.value) and "must be quoted" not in str(err.value)
