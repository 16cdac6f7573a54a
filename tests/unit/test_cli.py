"""The `braze-connector run` / `validate` commands as a user runs them: messages, exit codes, no key leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.emulator import EmulatorServer

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from cli_invoke import invoke  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SECRET = "sk-Distinctive-7f3a9c1e-KEY"
USERS_CSV = "user_id,email,age\nu1,a@example.com,31\nu2,b@example.com,x\nu3,c@example.com,40\n"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=90,
    )


def write_pipeline(tmp_path: Path, stream: dict[str, Any] | None = None, **top: Any) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "users.csv").write_text(USERS_CSV, encoding="utf-8")
    stream = stream or {
        "name": "users",
        "source": {"path": "data/users.csv"},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "email"}, {"column": "age", "type": "integer"}],
    }
    doc: dict[str, Any] = {"name": "clitest", "streams": [stream], "report": {"max_reject_fraction": 0.5}}
    doc.update(top)
    path = tmp_path / "pipelines" / "p.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def assert_clean_error(res: Any, *needles: str) -> None:
    """Exit code 2, no exception escaped (no traceback), and the message names what is wrong."""
    code = res.returncode if isinstance(res, subprocess.CompletedProcess) else res.exit_code
    assert code == 2, res.stderr
    if not isinstance(res, subprocess.CompletedProcess):
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.stdout + res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert_clean_error(invoke("run", cwd=tmp_path), "Missing argument")
    path = write_pipeline(tmp_path)
    assert_clean_error(invoke("run", str(path), "--mode", "fast", cwd=tmp_path), "fast")
    assert_clean_error(invoke("validate", str(path), "--bogus", cwd=tmp_path), "--bogus")


def test_bad_pipeline_file_names_file_key_and_allowed_values(tmp_path: Path) -> None:
    bad = {
        "name": "users",
        "source": {"path": "data/users.csv"},
        "kind": "attribute",
        "identifier": {"external_id": "user_id"},
    }
    path = write_pipeline(tmp_path, bad)
    # As a user sees it: a real process, whose stderr would show any traceback.
    res = cli("run", str(path), cwd=tmp_path)
    assert_clean_error(res, str(path), "streams.0.kind", "'attributes'", "'events'")
    path.write_text(path.read_text() + "colour: blue\n", encoding="utf-8")
    assert_clean_error(invoke("validate", str(path), cwd=tmp_path), "colour", "unknown key")
    assert_clean_error(
        invoke("validate", str(tmp_path / "nope.yaml"), cwd=tmp_path), "nope.yaml", "not found"
    )


def test_missing_source_and_http_destination_exit_2(tmp_path: Path) -> None:
    stream = {
        "name": "users",
        "source": {"path": "data/absent.csv"},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "email"}],
    }
    assert_clean_error(invoke("validate", str(write_pipeline(tmp_path, stream)), cwd=tmp_path), "absent.csv")
    path = write_pipeline(tmp_path, destination={"url": "http://rest.example.com"})
    assert_clean_error(invoke("run", str(path), cwd=tmp_path, env={"BRAZE_API_KEY": SECRET}), "https")


GOOD_STREAM = (
    "  - name: users\n"
    "    source: {path: data/users.csv}\n"
    "    kind: attributes\n"
    "    identifier: {external_id: user_id}\n"
    "    attributes: [{column: email}]\n"
)


def _bad_stream(**replace: str) -> str:
    text = GOOD_STREAM
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


# (file text after "name: clitest\nstreams:\n", what the message must say)
MALFORMED: list[tuple[str, tuple[str, ...]]] = [
    (
        _bad_stream(**{"kind: attributes": "kind: attributes\n    kind: events"}),
        ("line 6", "'kind' is given twice", "first at line 5"),
    ),
    (GOOD_STREAM + GOOD_STREAM, ("streams:", "two streams are named 'users'")),
    (
        _bad_stream(**{"{path: data/users.csv}": "{path: data/users.csv, chunk_rows: many}"}),
        ("streams.0.source.chunk_rows", "integer", "(got 'many')"),
    ),
    (
        _bad_stream(**{"kind: attributes": "kind: attribute"}),
        ("streams.0.kind", "'live_activity'", "(got 'attribute')"),
    ),
    (
        _bad_stream(**{"{column: email}": "{column: email, type: time, timezone: Mars/Base}"}),
        ("streams.0.attributes.0.timezone", "Mars/Base", "IANA"),
    ),
    (
        _bad_stream(**{"{column: email}": "{column: email, type: time, format: '%Y-%Q'}"}),
        ("streams.0.attributes.0.format", "bad directive"),
    ),
    (
        _bad_stream(**{"{path: data/users.csv}": "{path: data/users.csv, csv: {delimiter: ';;'}}"}),
        ("streams.0.source.csv.delimiter", "one ASCII character", "';;'"),
    ),
    (
        _bad_stream(**{"{path: data/users.csv}": "{path: data/users.csv, csv: {encoding: klingon}}"}),
        ("streams.0.source.csv.encoding", "'klingon'", "utf-8"),
    ),
    (
        _bad_stream(**{"attributes: [": "expectations: [no_such_suite]\n    attributes: ["}),
        ("streams.0.expectations.0", "no suite 'no_such_suite'"),
    ),
    (_bad_stream(**{"    kind: attributes": "    kind: [attributes"}), ("not valid YAML at line", "column")),
    (
        GOOD_STREAM + "report: {dir: 'out/{date}'}\n",
        ("report.dir", "{pipeline}, {run_id} and {partition}", "'out/{date}'"),
    ),
]


@pytest.mark.parametrize(("body", "needles"), MALFORMED, ids=[n[0] for _, n in MALFORMED])
def test_malformed_pipeline_files_give_a_short_message_and_exit_2(
    tmp_path: Path, body: str, needles: tuple[str, ...]
) -> None:
    path = write_pipeline(tmp_path)  # writes data/users.csv
    path.write_text("name: clitest\nstreams:\n" + body, encoding="utf-8")
    res = invoke("validate", str(path), cwd=tmp_path)
    assert_clean_error(res, str(path), *needles)
    assert len(res.stderr.splitlines()) <= 4, res.stderr  # short: no report summary, no traceback


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    """Duplicate keys are refused, but a key brought in by `<<: *anchor` may be overridden, as YAML intends."""
    from connector.config import load_pipeline

    path = write_pipeline(tmp_path)
    second = GOOD_STREAM.replace("name: users", "name: users2").replace(
        "{path: data/users.csv}", "{<<: *src, path: data/other.csv}"
    )
    first = GOOD_STREAM.replace("{path: data/users.csv}", "&src {path: data/users.csv, chunk_rows: 2}")
    path.write_text("name: clitest\nstreams:\n" + first + second, encoding="utf-8")
    p = load_pipeline(path)
    assert [(s.source.path, s.source.chunk_rows) for s in p.streams] == [
        ("data/users.csv", 2),
        ("data/other.csv", 2),
    ]


def test_pipeline_file_that_is_not_utf8_or_a_report_dir_that_is_a_file(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    good = path.read_bytes()
    path.write_bytes(b"\xff\xfe" + good)
    res = cli("validate", str(path), cwd=tmp_path)  # a real process: a traceback would show on stderr
    assert_clean_error(res, str(path), "not UTF-8", "0xff")
    path.write_bytes(good)
    (tmp_path / "taken").write_text("a file, not a folder")
    res = invoke("validate", str(path), "--report-dir", "taken/{run_id}", cwd=tmp_path)
    assert_clean_error(res, "--report-dir", "is a file, not a folder")
    assert (tmp_path / "taken").is_file()


def test_validate_prints_the_summary_and_top_rules(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    res = invoke("validate", str(path), "--report-dir", "out/{pipeline}/{run_id}", "--quiet", cwd=tmp_path)
    assert res.exit_code == 0, res.stderr
    assert "read 3, delivered 0, rejected 1, failed 0, skipped 2" in res.stdout
    assert "users.csv, row 3, column 'age': [cast.integer]" in res.stdout
    reports = list((tmp_path / "out" / "clitest").glob("*/report.json"))
    assert len(reports) == 1 and str(reports[0].relative_to(tmp_path)) in res.stdout


def _grep_key(res: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert SECRET not in res.stdout and SECRET not in res.stderr
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f


def test_api_key_never_in_output_or_reports(emulator_factory: Any, tmp_path: Path) -> None:
    em: EmulatorServer = emulator_factory(api_keys=(SECRET,))
    path = write_pipeline(tmp_path)
    env = {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": SECRET}
    ok = cli("run", str(path), "--mode", "bulk", "--report-dir", "ok", cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "delivered 2, rejected 1" in ok.stdout
    _grep_key(ok, tmp_path / "ok")
    # A refused key is where a leak would be most likely: an error message quoting the request.
    other = emulator_factory(api_keys=("another-key",))
    env["BRAZE_REST_ENDPOINT"] = other.url
    bad = cli("run", str(path), "--mode", "bulk", "--report-dir", "bad", cwd=tmp_path, env=env)
    assert bad.returncode == 3, bad.stderr
    assert "Traceback" not in bad.stderr and "exit code 3" in bad.stderr
    _grep_key(bad, tmp_path / "bad")


def test_pre_flight_names_the_file_and_column_and_an_empty_csv_is_a_loud_warning(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    (tmp_path / "data" / "users.csv").write_text("user_id,email\nu1,a@example.com\n", encoding="utf-8")
    assert_clean_error(invoke("validate", str(path), "--quiet", cwd=tmp_path),
                       "users.csv: stream 'users' reads column 'age' (attributes.age)")  # fmt: skip
    (tmp_path / "data" / "users.csv").write_bytes(b"")
    res = invoke("validate", str(path), "--report-dir", "out", "--quiet", cwd=tmp_path)
    assert res.exit_code == 0, res.stderr
    assert "read 0," in res.stdout
    assert "warning: empty source: stream users:" in res.stdout and "is empty (0 bytes)" in res.stdout


def test_the_summary_repeats_the_warnings_a_person_must_act_on(tmp_path: Path) -> None:
    """Warnings that change what to do next are in the terminal summary, not only in the log and report.json:
    a killed last run (finish it with --resume instead), a state that could not be written."""
    from connector.cli import _summary
    from connector.report import RunReport

    report = RunReport("p", report_dir=tmp_path / "r")
    shown = ["the last run of this pipeline, 20260101T000000Z-abcdef (r0), did not finish ...",
             "incremental state s.sqlite: could not be written (the disk is full) ...",
             "delta state s.sqlite: could not be written (the disk is full) ..."]  # fmt: skip
    for w in [*shown, "a note only for the log"]:
        report.warnings.append(w)
    lines = _summary(report, {})
    assert [line for line in lines if line.startswith("  warning: ")] == [f"  warning: {w}" for w in shown]
