"""Delta and incremental streams run as `--partition K/2` processes at once, against the emulator (issue 15).

Each partition keeps its state in a file of its own (`state.path` with {partition}): the state lock admits
one run per file, an incremental watermark belongs to the rows its run read (one partition's would skip
the other's rows). A pipeline whose state file is shared is refused, saying so.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke
from test_incremental import last_seq
from test_incremental import sent as applied  # external_id -> attributes objects applied

from connector.delta.stores import SqliteStore

pytestmark = pytest.mark.timeout(300)
USERS = 300
SCORE_FILES = ("jan.csv", "feb.csv", "mar.csv", "north.csv")  # two in each of 2 partitions (CRC-32 of the name)


def write_sources(root: Path, changed: frozenset[int] = frozenset(), stamp: str = "2024-05-01T10:00:00") -> None:
    """profiles.csv (one file: split by identifier) and scores/ (four files: split by file). A score's
    cursor is a second of one minute, so every file spans the whole range."""
    (root / "profiles.csv").write_text(
        "user_id,plan\n" + "".join(f"u{i:04d},{'gold' if i in changed else f'p{i % 3}'}\n" for i in range(USERS))
    )
    (root / "scores").mkdir(exist_ok=True)
    for f in range(4):
        lines = ["user_id,score,updated"]
        for i in range(f, USERS, 4):
            when = "2024-06-01T00:00:00" if i in changed else f"{stamp[:-2]}{i % 60:02d}"
            lines.append(f"s{i:04d},{i + (1000 if i in changed else 0)},{when}")
        (root / "scores" / SCORE_FILES[f]).write_text("\n".join(lines) + "\n")


def write_pipeline(root: Path, url: str, state: str, name: str = "parts_delta") -> Path:
    """`state`: state.path, or `url_env: VAR` for the state in PostgreSQL."""
    path = root / "p.yaml"
    state_yaml = f"{{{state}}}" if state.startswith("url_env:") else f'{{path: "{state}"}}'
    path.write_text(f"""
name: {name}
destination: {{url: {url}, api_key_env: TEST_BRAZE_KEY}}
write: {{mode: bulk, transport: requests, concurrency: 4, max_objects_per_request: 10}}
report: {{dir: "{root}/reports/{{run_id}}"}}
state: {state_yaml}
streams:
  - name: profiles
    source: {{path: profiles.csv}}
    kind: attributes
    identifier: {{external_id: user_id}}
    attributes: [{{column: plan}}]
    delta: true
  - name: scores
    source: {{path: "scores/*.csv"}}
    kind: attributes
    identifier: {{external_id: user_id}}
    attributes: [{{column: score, type: integer}}]
    incremental: {{cursor: updated}}
""")
    return path


def run_together(pipeline: Path, n: int = 2, **env_vars: str) -> list[dict[str, Any]]:
    """`run --partition K/n` for every K at once; their reports (exit codes checked)."""
    env = {**os.environ, "TEST_BRAZE_KEY": "test-key", **env_vars}
    procs = [subprocess.Popen([sys.executable, "-m", "connector", "run", str(pipeline), "--partition", f"{k}/{n}",
                               "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(1, n + 1)]  # fmt: skip
    outs = [(p, *p.communicate(timeout=240)) for p in procs]
    for p, out, err in outs:
        assert p.returncode == 0, out + err[-3000:]
    reports = sorted((pipeline.parent / "reports").glob("*/report.json"), key=lambda f: f.stat().st_mtime)
    return [json.loads(f.read_text()) for f in reports[-n:]]


def run_in_turn(pipeline: Path, n: int = 2, **env_vars: str) -> list[dict[str, Any]]:
    """`run --partition K/n` for every K, one after another, by the CLI in-process (tests/cli_invoke.py); their
    reports. For the rounds after the first: what they check is each partition's own state (a re-run skips, a
    changed row goes), which one run at a time exercises as well; run_together's first round keeps the
    processes at once (the state lock, PostgreSQL's concurrent writes), without an interpreter start per run."""
    for k in range(1, n + 1):
        res = invoke("run", str(pipeline), "--partition", f"{k}/{n}", "--quiet", cwd=pipeline.parent,
                     env={"TEST_BRAZE_KEY": "test-key", **env_vars})  # fmt: skip
        assert res.exit_code == 0, res.stdout + res.stderr[-3000:]
    reports = sorted((pipeline.parent / "reports").glob("*/report.json"), key=lambda f: f.stat().st_mtime)
    return [json.loads(f.read_text()) for f in reports[-n:]]


def rows(reports: list[dict[str, Any]], key: str) -> int:
    return sum(int(r["rows"][key]) for r in reports)


def test_delta_and_incremental_partitions_run_together_with_a_state_file_each(emulator: Any, tmp_path: Path) -> None:
    write_sources(tmp_path)
    pipeline = write_pipeline(tmp_path, emulator.url, "state/{pipeline}.{partition}.sqlite")

    first = run_together(pipeline)
    everyone = {f"u{i:04d}" for i in range(USERS)} | {f"s{i:04d}" for i in range(USERS)}
    got = applied(emulator)
    assert set(got) == everyone and set(got.values()) == {1}  # nothing lost, nothing sent twice
    assert rows(first, "read") == rows(first, "delivered") == 2 * USERS
    assert all(r["invariant_ok"] for r in first)

    # The state: one file per partition; their users are disjoint and together everyone.
    files = sorted((tmp_path / "state").glob("parts_delta.p*of2.sqlite"))
    assert [f.name for f in files] == ["parts_delta.p1of2.sqlite", "parts_delta.p2of2.sqlite"]
    keys = []
    for f in files:
        store = SqliteStore(f, read_only=True)
        keys.append(set(store.keys("profiles")))  # confirmed only
        store.close()
        with sqlite3.connect(f) as db:
            # each partition's own watermark: past its own files' cursors (every row confirmed)
            assert [w[:2] for w in db.execute("SELECT * FROM watermark")] == [("scores", "updated")]
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == USERS

    # The two reports merge into one whose counts add up and which names both state files.
    dirs = [str(Path(r["files"]["report_json"]).parent) for r in first]
    res = invoke("report", "merge", *dirs, "--out", str(tmp_path / "merged"), cwd=tmp_path)  # in-process: no start
    assert res.exit_code == 0, res.stdout + res.stderr[-3000:]
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert merged["rows"]["read"] == merged["rows"]["delivered"] == 2 * USERS and merged["invariant_ok"]
    assert merged["delta"]["state_files"] == [str(f) for f in files]

    # A re-run sends nothing: delta skips the profiles, the watermarks skip the scores.
    seq = last_seq(emulator)
    again = run_in_turn(pipeline)
    assert applied(emulator, seq) == Counter()
    assert rows(again, "delivered") == 0 and rows(again, "read") == rows(again, "skipped")

    # Changed rows go, and only they.
    changed = frozenset({3, 77, 150, 299})
    write_sources(tmp_path, changed)
    seq = last_seq(emulator)
    third = run_in_turn(pipeline)
    assert applied(emulator, seq) == Counter({f"{p}{i:04d}": 1 for i in changed for p in "us"})
    assert rows(third, "delivered") == 2 * len(changed)


def test_partitions_share_a_postgresql_state_with_a_watermark_each(emulator: Any, tmp_path: Path,
                                                                   postgres_url: str) -> None:  # fmt: skip
    """With the state in PostgreSQL no {partition} is needed: delta records are per user (partitions hold
    disjoint users) and each partition's watermark is its own row of the database's watermark table."""
    write_sources(tmp_path)
    pipeline = write_pipeline(tmp_path, emulator.url, "url_env: STATE_PG_URL", name=f"pg_parts_{tmp_path.name}")
    first = run_together(pipeline, STATE_PG_URL=postgres_url)
    assert set(applied(emulator).values()) == {1} and len(applied(emulator)) == 2 * USERS
    assert not list(tmp_path.rglob("*.sqlite"))
    seq = last_seq(emulator)
    again = run_in_turn(pipeline, STATE_PG_URL=postgres_url)
    assert applied(emulator, seq) == Counter() and rows(again, "delivered") == 0
    changed = frozenset({3, 77, 150, 299})
    write_sources(tmp_path, changed)
    seq = last_seq(emulator)
    run_in_turn(pipeline, STATE_PG_URL=postgres_url)
    assert applied(emulator, seq) == Counter({f"{p}{i:04d}": 1 for i in changed for p in "us"})
    assert all(r["invariant_ok"] for r in first)


def test_partitions_sharing_one_state_file_are_refused_saying_what_to_do(emulator: Any, tmp_path: Path) -> None:
    write_sources(tmp_path)
    pipeline = write_pipeline(tmp_path, emulator.url, "state/{pipeline}.sqlite")
    # One run at a time: the CLI in-process (tests/cli_invoke.py), a separate process is not the point here.
    res = invoke("run", str(pipeline), "--partition", "1/2", cwd=tmp_path, env={"TEST_BRAZE_KEY": "test-key"})
    assert res.exit_code == 2
    said = " ".join((res.stdout + res.stderr).split())
    assert "p.yaml" in said and "profiles" in said and "{partition}" in said and "state.path" in said
    assert "Traceback" not in said and isinstance(res.exception, SystemExit)  # a clean exit, no exception
    assert applied(emulator) == Counter()  # refused before anything was sent
    # Unpartitioned, the same file is fine.
    res = invoke("run", str(pipeline), "--quiet", cwd=tmp_path, env={"TEST_BRAZE_KEY": "test-key"})
    assert res.exit_code == 0, res.stdout + res.stderr[-3000:]
    assert len(applied(emulator)) == 2 * USERS


def test_a_partition_is_resumed_only_as_that_partition(emulator: Any, tmp_path: Path) -> None:
    """Resumed without --partition (or as another), partition 1/2 read every row again and sent partition
    2's rows too (measured: 50 -> 100 users applied); it is refused before anything is sent."""
    write_sources(tmp_path)
    pipeline = write_pipeline(tmp_path, emulator.url, "state/{pipeline}.{partition}.sqlite")

    def run(*args: str) -> Any:  # the CLI in-process: one run at a time, a separate process is not the point
        return invoke("run", str(pipeline), "--quiet", *args, cwd=tmp_path, env={"TEST_BRAZE_KEY": "test-key"})

    assert run("--partition", "1/2").exit_code == 0
    run_dir = next((tmp_path / "reports").glob("*-p1of2"))
    before = applied(emulator)
    for wrong in ([], ["--partition", "2/2"], ["--partition", "1/4"]):
        res = run("--resume", str(run_dir), *wrong)
        assert res.exit_code == 2, res.stdout + res.stderr
        assert "was partition 1/2; resume it with --partition 1/2" in res.stderr
    assert applied(emulator) == before
    res = run("--resume", str(run_dir), "--partition", "1/2")
    assert res.exit_code == 0, res.stdout + res.stderr[-3000:]
    assert applied(emulator) == before  # every row of the partition was delivered already
