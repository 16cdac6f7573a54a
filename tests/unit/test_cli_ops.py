"""The command line as operators meet it: --version, -h, shell completion, --log-format/--log-level, and
report folders that are never overwritten."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_invoke import invoke

from connector.version import __version__

pytestmark = pytest.mark.timeout(120)

CSV = "user_id,age\nu1,31\nu2,x\nu3,40\n"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "_BRAZE"))}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=90)  # fmt: skip


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Callable[..., Path]:
    def make(**report: object) -> Path:
        return make_project(name="ops", csv=CSV, attributes=[{"column": "age", "type": "integer"}],
                            max_reject_fraction=0.5, **report)  # fmt: skip

    return make


def test_version_and_short_help(tmp_path: Path) -> None:
    res = cli("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"braze-connector {__version__}"
    res = cli("-h", cwd=tmp_path)
    assert res.returncode == 0 and "Usage: braze-connector" in res.stdout and "--install-completion" in res.stdout
    res = cli("run", "-h", cwd=tmp_path)
    assert res.returncode == 0 and "--log-format" in res.stdout and "--overwrite" in res.stdout


def test_shell_completion_completes_commands_and_options(tmp_path: Path) -> None:
    # Typer detects the shell from the process tree (none under a scheduler); with detection off it takes the
    # shell named on the command line, as a user in any shell can.
    res = cli("--show-completion", "bash", cwd=tmp_path, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert res.returncode == 0 and "_BRAZE_CONNECTOR_COMPLETE=complete_bash" in res.stdout
    env = {"_BRAZE_CONNECTOR_COMPLETE": "complete_bash", "COMP_WORDS": "braze-connector va", "COMP_CWORD": "1"}
    res = cli(cwd=tmp_path, env=env)
    assert res.stdout.split() == ["validate"], res.stdout + res.stderr
    env.update(COMP_WORDS="braze-connector run p.yaml --log-f", COMP_CWORD="3")
    assert cli(cwd=tmp_path, env=env).stdout.split() == ["--log-format"]


def test_json_logs_with_the_run_context(tmp_path: Path, project: Callable[..., Path]) -> None:
    path = project()
    res = cli("validate", str(path), "--log-format", "json", "--report-dir", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    docs = [json.loads(line) for line in res.stderr.splitlines()]  # every stderr line is a JSON object
    run_id = json.loads((tmp_path / "out" / "report.json").read_text())["run_id"]
    assert {d["run_id"] for d in docs} == {run_id} and {d["pipeline"] for d in docs} == {"ops"}
    assert {"ts", "level", "logger", "run_id", "pipeline", "stream", "message"} <= set(docs[0])
    reading = next(d for d in docs if d["message"].startswith("reading "))
    assert reading["stream"] == "users" and reading["level"] == "info"
    written = next(d for d in docs if d["message"].startswith("report written"))
    assert written["counters"] == {"read": 3, "delivered": 0, "rejected": 1, "failed": 0, "skipped": 2,
                                   "valid": 2, "possibly_duplicated": 0, "exit_code": 0}  # fmt: skip
    assert res.stdout.startswith("validate ops")  # the summary stays plain text on stdout


def test_log_level_and_text_timestamps(tmp_path: Path, project: Callable[..., Path]) -> None:
    path = project()
    quiet = cli("validate", str(path), "--log-level", "warning", "--report-dir", "a", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = cli("validate", str(path), "--report-dir", "b", cwd=tmp_path,
               env={"BRAZE_CONNECTOR_LOG_LEVEL": "debug"})  # fmt: skip
    lines = loud.stderr.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ ", ln) for ln in lines), lines
    assert any(" DEBUG " in ln for ln in lines)
    bad = invoke("validate", str(path), "--log-level", "loud", cwd=tmp_path)  # refused before any logging
    assert bad.exit_code == 2 and "loud" in bad.stderr


def test_a_report_folder_holding_a_run_is_never_overwritten(tmp_path: Path, project: Callable[..., Path]) -> None:
    path = project()
    first = cli("validate", str(path), "--report-dir", "out", cwd=tmp_path)
    assert first.returncode == 0
    before = (tmp_path / "out" / "report.json").read_bytes()
    second = cli("validate", str(path), "--report-dir", "out", cwd=tmp_path)
    assert second.returncode == 0
    assert (tmp_path / "out" / "report.json").read_bytes() == before
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("out-")]
    run_id = json.loads((moved / "report.json").read_text())["run_id"]
    assert moved.name == f"out-{run_id}" and f"out-{run_id}/report.json" in second.stdout
    assert "already holds a run" in second.stderr
    third = cli("validate", str(path), "--report-dir", "out", "--overwrite", cwd=tmp_path)
    assert third.returncode == 0 and (tmp_path / "out" / "report.json").read_bytes() != before
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("out")]) == 2


def test_report_dir_resolves_against_the_pipeline_file(tmp_path: Path, project: Callable[..., Path]) -> None:
    path = project(dir="reports/{pipeline}/{run_id}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = invoke("validate", str(path), cwd=elsewhere)
    assert res.exit_code == 0, res.stderr
    assert list((tmp_path / "reports" / "ops").glob("*/report.json"))
    assert not (elsewhere / "reports").exists()
