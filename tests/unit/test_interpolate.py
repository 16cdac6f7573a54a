"""${VAR} and ${VAR:-default} in pipeline files: filled from the environment, errors name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connector.config import load_pipeline
from connector.config.interpolate import interpolate
from connector.errors import ConfigError


def test_values_are_filled_and_keys_left_alone() -> None:
    data = {"a": "${X}/in", "b": ["${Y:-dflt}", 3, None, True], "${X}": "k", "c": {"d": "cost $$5 ${X}${X}"}}
    out = interpolate(data, {"X": "x1"}, "p.yaml")
    assert out == {"a": "x1/in", "b": ["dflt", 3, None, True], "${X}": "k", "c": {"d": "cost $5 x1x1"}}


def test_default_applies_when_unset_or_empty_like_the_shell() -> None:
    assert interpolate("${V:-d}", {"V": ""}, "p") == "d"
    assert interpolate("${V:-}", {}, "p") == ""
    assert interpolate("${V}", {"V": ""}, "p") == ""  # set but empty, no default: empty
    assert interpolate("${V:-a:-b}", {}, "p") == "a:-b"
    assert interpolate("plain $HOME text", {}, "p") == "plain $HOME text"  # only ${...} is a variable


def test_a_missing_variable_names_the_file_and_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        interpolate({"streams": [{"source": {"path": "${DATA_DIR}/u.csv"}}]}, {}, "pipelines/p.yaml")
    msg = str(e.value)
    assert msg.startswith("pipelines/p.yaml: streams.0.source.path: environment variable DATA_DIR is not set")
    assert "${DATA_DIR:-default}" in msg


def test_a_malformed_reference_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'\$\{1X\}' is not a variable"):
        interpolate({"name": "${1X}"}, {}, "p.yaml")


def test_load_pipeline_fills_paths_and_numbers(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "u.csv").write_text("user_id\nu1\n", encoding="utf-8")
    doc = {
        "name": "${NAME:-users}",
        "report": {"max_reject_fraction": "${MAX_REJECTS:-0.1}"},
        "streams": [{"name": "u", "source": {"path": "${DATA_DIR}/u.csv", "chunk_rows": "${CHUNK:-500}"},
                     "kind": "attributes", "identifier": {"external_id": "user_id"}, "attributes": [{"to": "src", "value": "${SRC:-etl}"}]}],
    }  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    p = load_pipeline(path, env={"DATA_DIR": "data", "CHUNK": "200"})
    assert p.name == "users" and p.report.max_reject_fraction == 0.1
    assert p.streams[0].source.path == "data/u.csv" and p.streams[0].source.chunk_rows == 200
    with pytest.raises(ConfigError, match=r"p\.yaml: streams\.0\.source\.path: environment variable DATA_DIR"):
        load_pipeline(path, env={})


def test_aliased_nodes_stay_shared() -> None:
    shared = {"path": "${D:-x}/f.csv"}
    out = interpolate({"a": shared, "b": shared}, {}, "p.yaml")
    assert out["a"] is out["b"] and out["a"] == {"path": "x/f.csv"}
