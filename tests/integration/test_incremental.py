"""Incremental cursors end to end (PostgreSQL, DuckDB, CSV) against the emulator: ties, failures, a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sql_helpers import duck_exec, pg_exec
from test_pipeline_run import project

from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = {"max_attempts": 1, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_elapsed_s": 5}


def ticks_stream(chunk_rows: int = 3, table: str = "ticks", conn: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "ticks",
        "source": {"sql": f"SELECT 'u' || id AS user_id, id, v, updated_at FROM {table}",
                   "connection": conn or {"url_env": "PG_URL"}, "key": "id", "chunk_rows": chunk_rows},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "v", "type": "integer"}],
        "incremental": {"cursor": "updated_at"},
    }  # fmt: skip


def sent(em: Any, since: int = 0) -> Counter[str]:
    """external_id -> how many times the emulator applied an attributes object for it."""
    out: Counter[str] = Counter()
    for entry in em.ledger(since):
        for a in entry["applied"]:
            out[a["identifier"]["external_id"]] += 1
    return out


def last_seq(em: Any) -> int:
    entries = em.ledger()
    return int(entries[-1]["seq"]) if entries else 0


def run(pipeline: Any, em: Any, tmp_path: Path, name: str, pg: str = "", **kw: Any) -> dict[str, Any]:
    env = {"PG_URL": pg, "BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}
    run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / name, env=env, raise_on_failure=False, **kw)
    return dict(json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8")))


def test_cursor_ties_across_chunks_and_runs(postgres_url: str, emulator: Any, tmp_path: Path) -> None:
    t1, t2, t3 = ("timestamptz '2024-05-01 10:00:00+00'", "timestamptz '2024-05-01 11:00:00+00'",
                  "timestamptz '2024-05-01 12:00:00+00'")  # fmt: skip
    pg_exec(
        postgres_url,
        "DROP TABLE IF EXISTS ticks",
        "CREATE TABLE ticks (id int PRIMARY KEY, v int, updated_at timestamptz)",
        # Five rows share t2, split across chunks of 3; one row has no cursor value.
        f"INSERT INTO ticks VALUES (1, 1, {t1}), (2, 1, {t1}), (3, 1, {t2}), (4, 1, {t2}), (5, 1, {t2}), "
        f"(6, 1, {t2}), (7, 1, {t2}), (8, 1, NULL)",
    )
    pipeline = project(tmp_path, [ticks_stream()], state={"path": str(tmp_path / "state.sqlite")})
    first = run(pipeline, emulator, tmp_path, "r1", postgres_url)
    assert first["rows"]["delivered"] == 8 and set(sent(emulator)) == {f"u{i}" for i in range(1, 9)}

    mark = last_seq(emulator)
    again = run(pipeline, emulator, tmp_path, "r2", postgres_url)
    assert again["rows"]["read"] == 0 and sent(emulator, mark) == Counter()  # the tie at t2 is not resent

    # A late row at exactly the watermark, a new row, and an old row that changed.
    pg_exec(postgres_url, f"INSERT INTO ticks VALUES (9, 1, {t2}), (10, 1, {t3})",
            f"UPDATE ticks SET v = 2, updated_at = {t3} WHERE id = 1")  # fmt: skip
    third = run(pipeline, emulator, tmp_path, "r3", postgres_url)
    assert third["rows"]["delivered"] == 3
    assert sent(emulator, mark) == Counter({"u9": 1, "u10": 1, "u1": 1})
    assert emulator.user("external_id", "u1")["attributes"]["v"] == 2

    full = run(pipeline, emulator, tmp_path, "r4", postgres_url, full=True)
    assert full["rows"]["delivered"] == 10  # --full reads everything again (NULL cursor included)


def test_a_failed_run_then_a_rerun_sends_exactly_what_did_not_go_through(
    postgres_url: str, emulator_factory: Any, tmp_path: Path
) -> None:
    pg_exec(
        postgres_url,
        "DROP TABLE IF EXISTS ticks2",
        "CREATE TABLE ticks2 (id int PRIMARY KEY, v int, updated_at timestamptz)",
        "INSERT INTO ticks2 SELECT g, 1, timestamptz '2024-01-01' + (g / 4) * interval '1 minute' "
        "FROM generate_series(1, 400) g",
    )
    pipeline = project(
        tmp_path, [ticks_stream(50, "ticks2")], state={"path": str(tmp_path / "state.sqlite")},
        write={"retry": FAST_RETRY, "max_objects_per_request": 10, "concurrency": 4},
    )  # fmt: skip
    faulty = emulator_factory(faults={"503": 0.3}, seed=7)
    first = run(pipeline, faulty, tmp_path, "r1", postgres_url)
    failed = {row.split(",")[0] for row in (tmp_path / "r1" / "failed.csv").read_text().splitlines()[1:]}
    assert first["rows"]["failed"] == len(failed) > 0 and first["rows"]["delivered"] == 400 - len(failed)
    assert set(sent(faulty)) == {f"u{i}" for i in range(1, 401)} - failed

    clean = emulator_factory()
    second = run(pipeline, clean, tmp_path, "r2", postgres_url)
    assert second["rows"]["failed"] == 0
    assert sent(clean) == Counter(dict.fromkeys(failed, 1))  # nothing lost, nothing resent
    third = run(pipeline, clean, tmp_path, "r3", postgres_url)
    assert third["rows"]["read"] == 0


def test_a_killed_run_then_a_rerun_loses_nothing_and_resends_at_most_what_was_in_flight(
    postgres_url: str, emulator_factory: Any, tmp_path: Path
) -> None:
    n, per_request, workers = 3000, 10, 2
    pg_exec(
        postgres_url,
        "DROP TABLE IF EXISTS ticks3",
        "CREATE TABLE ticks3 (id int PRIMARY KEY, v int, updated_at timestamptz)",
        f"INSERT INTO ticks3 SELECT g, 1, timestamptz '2024-01-01' + (g / 3) * interval '1 second' "
        f"FROM generate_series(1, {n}) g",
    )
    pipeline = project(
        tmp_path, [ticks_stream(100, "ticks3")], state={"path": str(tmp_path / "state.sqlite")},
        write={"max_objects_per_request": per_request, "concurrency": workers, "transport": "requests"},
    )  # fmt: skip
    em = emulator_factory(latency_ms=15)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PG_URL": postgres_url, "BRAZE_REST_ENDPOINT": em.url,
           "BRAZE_API_KEY": "test-key"}  # fmt: skip
    cmd = [sys.executable, "-m", "connector", "run", str(tmp_path / "pipelines" / "t.yaml"), "--mode", "bulk",
           "--quiet", "--report-dir", str(tmp_path / "killed")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sum(sent(em).values()) < 600 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # One snapshot of the ledger for both: a request the killed process had sent may still be applied after
    # it (the emulator answers after its latency), and must then count after `mark`, not be lost between.
    snapshot = em.ledger()
    mark = int(snapshot[-1]["seq"]) if snapshot else 0
    before = Counter(a["identifier"]["external_id"] for entry in snapshot for a in entry["applied"])
    assert 600 <= sum(before.values()) < n, "the run should have been killed part way"

    rerun = run(pipeline, em, tmp_path, "r2", postgres_url)
    assert rerun["rows"]["failed"] == 0
    total = sent(em)
    assert set(total) == {f"u{i}" for i in range(1, n + 1)}  # nothing lost
    twice = [u for u, c in total.items() if c > 1]
    # Only what was applied but not yet recorded when the process died can be sent again: at most the
    # requests in flight (one per worker) plus the one whose answer was being settled.
    assert len(twice) <= (workers + 1) * per_request, twice
    assert all(c <= 2 for c in total.values())
    assert sum(sent(em, mark).values()) == n - sum(before.values()) + len(twice)


def test_duckdb_and_csv_sources_read_incrementally(emulator: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    duck_exec(db, "CREATE TABLE ticks (id INTEGER PRIMARY KEY, v INTEGER, updated_at TIMESTAMP)",
              "INSERT INTO ticks VALUES (1, 1, '2024-01-01 00:00:00'), (2, 1, '2024-01-01 00:00:00')")  # fmt: skip
    (tmp_path / "data").mkdir(exist_ok=True)
    csv_path = tmp_path / "data" / "ticks.csv"
    csv_path.write_text("user_id,v,updated_at\nc1,1,2024-01-01T00:00:00Z\nc2,1,2024-01-01T01:00:00+01:00\n")
    files = {
        "name": "csv",
        "source": {"path": "data/ticks.csv"},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "v", "type": "integer"}],
        "incremental": {"cursor": "updated_at"},
    }
    pipeline = project(tmp_path, [ticks_stream(1, conn={"duckdb": str(db)}), files],
                            state={"path": str(tmp_path / "state.sqlite")})  # fmt: skip
    first = run(pipeline, emulator, tmp_path, "r1")
    assert first["rows"]["delivered"] == 4
    duck_exec(db, "INSERT INTO ticks VALUES (3, 1, '2024-01-01 00:00:00')")  # a late row at the watermark
    with csv_path.open("a") as f:
        f.write("c3,1,2023-12-31T23:30:00Z\nc4,1,2024-01-01T02:00:00Z\n")  # c3 is under the watermark
    mark = last_seq(emulator)
    second = run(pipeline, emulator, tmp_path, "r2")
    assert sent(emulator, mark) == Counter({"u3": 1, "c4": 1})
    assert second["rows"]["delivered"] == 2


def test_a_stopped_sql_run_says_run_again_and_refuses_resume(emulator: Any, tmp_path: Path) -> None:
    """A query keeps no row positions (a moved watermark or new rows shift them): the journal's row numbers
    would name other rows, so a pipeline reading SQL is run again, never resumed (found by a trial: a resumed
    incremental run skipped thousands of rows it took for sent, and exited 0)."""
    from connector.delivery.resume import ResumeSet
    from connector.errors import ConfigError
    from connector.stop import StopToken

    db = tmp_path / "w.duckdb"
    duck_exec(db, "CREATE TABLE ticks AS SELECT i AS id, 1 AS v, TIMESTAMP '2024-01-01' + i * INTERVAL 1 MINUTE "
              "AS updated_at FROM range(1, 201) t(i)")  # fmt: skip
    pipeline = project(tmp_path, [ticks_stream(50, conn={"duckdb": str(db)})], state={"path": str(tmp_path / "s.sqlite")})
    stop = StopToken()
    stop.request("stopped by the test")  # before the first chunk: nothing is sent
    stopped = run(pipeline, emulator, tmp_path, "r1", stop=stop)
    said = " ".join(str(w) for w in stopped["warnings"])
    assert stopped["exit_code"] == 4 and "run the pipeline again" in said and "--resume" not in said
    with pytest.raises(ConfigError, match=r"stream\(s\) ticks read an SQL source.*run the pipeline again"):
        run(pipeline, emulator, tmp_path, "r1", resume=ResumeSet(tmp_path / "r1"))
    again = run(pipeline, emulator, tmp_path, "r2")  # the advice works: everything not confirmed goes
    assert again["exit_code"] == 0 and again["rows"]["delivered"] == 200 and len(sent(emulator)) == 200


def test_every_advice_for_an_sql_run_is_to_run_it_again(emulator_factory: Any, tmp_path: Path) -> None:
    """Rows of unknown outcome, rows not sent after the key was refused, failed.csv: the CLI tells an SQL run
    to run again, never --retry-failed, --include-unknown or --resume, which cannot re-read a query (a trial
    found the unknown-outcome advice naming them); and running again does send those rows."""
    from cli_invoke import invoke

    from connector.readers.failed import SQL_RUN_AGAIN

    db = tmp_path / "w.duckdb"
    duck_exec(db, "CREATE TABLE ticks AS SELECT i AS id, 1 AS v, TIMESTAMP '2024-01-01' + i * INTERVAL 1 MINUTE "
              "AS updated_at FROM range(1, 21) t(i)")  # fmt: skip
    stream = {**ticks_stream(10, conn={"duckdb": str(db)}), "kind": "events",
              "event": {"name": {"value": "tick"}, "time": "updated_at"}}  # fmt: skip
    del stream["attributes"]
    project(tmp_path, [stream], state={"path": str(tmp_path / "s.sqlite")},
            write={"retry": FAST_RETRY, "on_ambiguous": "fail", "max_objects_per_request": 5})  # fmt: skip

    def cli(em: Any, out: str, key: str = "test-key") -> Any:
        return invoke("run", "pipelines/t.yaml", "-q", "--mode", "bulk", "--report-dir", str(tmp_path / out),
                      cwd=tmp_path, env={"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": key})  # fmt: skip

    def no_row_commands(text: str) -> bool:
        return not any(flag in text for flag in ("--retry-failed", "--include-unknown", "--resume"))

    dropped = cli(emulator_factory(faults={"drop": 1.0}), "r1")  # sent, then the connection dropped: unknown
    assert dropped.exit_code == 1, dropped.output
    assert "unknown: 20 failed row(s) may or may not have been applied" in dropped.stdout
    assert f"check a few in Braze; a new run sends them again (events, purchases and inc may count twice): " \
           f"{SQL_RUN_AGAIN}" in dropped.stdout
    assert f"failed: {tmp_path / 'r1' / 'failed.csv'} (a list to read" in dropped.stdout
    assert no_row_commands(dropped.output), dropped.output
    up = emulator_factory()
    refused = cli(up, "r2", key="wrong-key")  # exit 3: the rows not sent are listed
    assert refused.exit_code == 3 and f"once the cause is fixed, {SQL_RUN_AGAIN}" in refused.stderr, refused.output
    assert no_row_commands(refused.output + json.dumps(json.loads((tmp_path / "r2" / "report.json").read_text())))
    again = cli(up, "r3")  # the advice works: the rows not confirmed go
    assert again.exit_code == 0 and "failed:" not in again.stdout, again.output
    assert sent(up) == Counter({f"u{i}": 1 for i in range(1, 21)}) and not (tmp_path / "r3" / "failed.csv").exists()


def test_a_query_without_a_column_the_stream_reads_is_refused_before_reading(emulator: Any, tmp_path: Path) -> None:
    """A mapped column or the cursor missing from the query's result: one message naming the column and what
    reads it, before any row is read or sent (found by a trial: the whole table was read first, and a missing
    cursor surfaced as the database's own error)."""
    from connector.errors import SourceError

    db = tmp_path / "w.duckdb"
    duck_exec(db, "CREATE TABLE ticks (id INTEGER, v INTEGER, updated_at TIMESTAMP)", "INSERT INTO ticks VALUES (1, 1, NULL)")
    no_v = ticks_stream(1, conn={"duckdb": str(db)})
    no_v["source"]["sql"] = "SELECT 'u' || id AS user_id, id, updated_at FROM ticks"
    no_cursor = ticks_stream(1, conn={"duckdb": str(db)})
    no_cursor["source"]["sql"] = "SELECT 'u' || id AS user_id, id, v FROM ticks"
    for stream, column, what in ((no_v, "v", "attributes"), (no_cursor, "updated_at", "incremental.cursor")):
        (tmp_path / column).mkdir()
        pipeline = project(tmp_path / column, [stream], state={"path": str(tmp_path / column / "s.sqlite")})
        with pytest.raises(SourceError, match=rf"reads column '{column}' \({what}.*which the query does not return"):
            run(pipeline, emulator, tmp_path / column, "r")
        assert not (tmp_path / column / "r" / "report.json").exists()
    assert last_seq(emulator) == 0


def test_a_watermark_store_that_fails_mid_run_changes_no_outcome_and_loses_nothing(
    postgres_url: str, emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state's disk fills after a few watermark writes: every row Braze took stays delivered (exit 0, the
    accounting adds up), one warning says what happened, and the next run sends again what the stored
    watermark did not cover: nothing is lost."""
    import sqlite3

    from connector.delta.marks import SqliteMarks

    pg_exec(
        postgres_url,
        "DROP TABLE IF EXISTS ticks_full",
        "CREATE TABLE ticks_full (id int PRIMARY KEY, v int, updated_at timestamptz)",
        "INSERT INTO ticks_full SELECT g, 1, timestamptz '2024-01-01' + (g / 4) * interval '1 minute' "
        "FROM generate_series(1, 400) g",
    )
    pipeline = project(tmp_path, [ticks_stream(50, "ticks_full")], state={"path": str(tmp_path / "state.sqlite")},
                       write={"max_objects_per_request": 10, "concurrency": 4})  # fmt: skip
    real_add, real_put, calls = SqliteMarks.add_done, SqliteMarks.put, Counter[str]()

    def full(name: str, real: Any) -> Any:
        def write(self: SqliteMarks, *args: Any) -> None:
            calls[name] += 1
            if calls[name] > 3:
                raise sqlite3.OperationalError("database or disk is full")
            real(self, *args)

        return write

    monkeypatch.setattr(SqliteMarks, "add_done", full("add_done", real_add))
    monkeypatch.setattr(SqliteMarks, "put", full("put", real_put))
    em = emulator_factory()
    first = run(pipeline, em, tmp_path, "r1", postgres_url)
    assert first["exit_code"] == 0 and first["invariant_ok"] is True
    assert first["rows"]["delivered"] == 400 and first["rows"]["failed"] == 0
    [w] = [w for w in first["warnings"] if w.startswith("incremental state")]
    assert "could not be written (the disk is full)" in w and "sends again" in w
    assert sum(calls.values()) <= 8  # the first failure ended the writes: no retry storm
    monkeypatch.undo()
    before = last_seq(em)
    second = run(pipeline, em, tmp_path, "r2", postgres_url)
    assert second["exit_code"] == 0 and second["rows"]["failed"] == 0
    again = sent(em, before)
    assert 0 < sum(again.values()) < 400  # what the stored watermark did not cover, sent once more
    assert set(sent(em)) == {f"u{i}" for i in range(1, 401)}
    third = run(pipeline, em, tmp_path, "r3", postgres_url)
    assert third["rows"]["read"] == 0
