"""Delta sync's fast path end to end (delta/rowprint.py): unchanged rows are skipped before they are
validated or mapped, from a file and from PostgreSQL; a changed cell in any column the mapping or the suite
reads is sent; a change of mapping or suite falls back to the object comparison for one run; a killed run's
re-run sends exactly what was not confirmed; the counts add up in every run. With either state backend
(`backend`: the local file, or PostgreSQL, whose pipeline rows each test names apart)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sql_helpers import pg_exec, pg_rows
from test_pipeline_run import env_for, report_json

from connector import mapping
from connector.config import load_pipeline
from connector.delta import DeltaState
from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
SKIP = "unchanged since the last delivered run (delta)"
CSV = "user_id,email,first_name,age,plan\n" + "".join(
    f"u{i},u{i}@example.com,N{i},{20 + i},{'pro' if i % 2 else 'free'}\n" for i in range(8)
)
SUITE = {"name": "rows", "expectations": [
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "plan", "value_set": ["free", "pro", "max"]}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "age", "min_value": 0, "max_value": 150}},
]}  # fmt: skip


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts rows taken by the fast path and rows that reached mapping."""
    seen = {"fast": 0, "mapped": 0}
    unchanged_rows, map_chunk = DeltaState.unchanged_rows, mapping.map_chunk

    def counting_fast(self: DeltaState, *a: Any, **kw: Any) -> Any:
        out = unchanged_rows(self, *a, **kw)
        seen["fast"] += int(out.sum())
        return out

    def counting_map(stream: Any, chunk: Any, *a: Any, **kw: Any) -> Any:
        seen["mapped"] += len(chunk)
        return map_chunk(stream, chunk, *a, **kw)

    monkeypatch.setattr(DeltaState, "unchanged_rows", counting_fast)
    monkeypatch.setattr(mapping, "map_chunk", counting_map)  # stages.py imports it from there as it maps
    yield seen


@pytest.fixture(params=["file", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The state's backend, as the environment a run gets: nothing (the local file) or STATE_PG_URL."""
    if request.param == "file":
        return {}
    return {"STATE_PG_URL": request.getfixturevalue("postgres_url")}


def write(tmp_path: Path, stream: dict[str, Any], suite: dict[str, Any] = SUITE,
          backend: dict[str, str] | None = None) -> Path:  # fmt: skip
    """The pipeline (its state in PostgreSQL when `backend` names it, under a name of this test's own)."""
    for folder in ("pipelines", "expectations", "data"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "expectations" / "rows.json").write_text(json.dumps(suite), encoding="utf-8")
    doc: dict[str, Any] = {"name": "t", "streams": [stream], "report": {"max_reject_fraction": 0.9}}
    if backend:
        doc.update(name=f"t{zlib.crc32(str(tmp_path).encode())}", state={"url_env": "STATE_PG_URL"})
    path = tmp_path / "pipelines" / "t.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def file_stream(**over: Any) -> dict[str, Any]:
    return {"name": "users", "source": {"path": "data/users.csv"}, "kind": "attributes", "delta": True,
            "identifier": {"external_id": "user_id"}, "expectations": ["rows"],
            "attributes": [{"column": "email"}, {"column": "first_name"}, {"column": "age", "type": "integer"}],
            **over}  # fmt: skip


def run(path: Path, env: dict[str, str], out: Path, spy: dict[str, int]) -> dict[str, Any]:
    spy.update(fast=0, mapped=0)
    doc = report_json(run_pipeline(load_pipeline(path), mode="bulk", report_dir=out, env=env))
    r = doc["rows"]
    assert doc["invariant_ok"] and r["read"] == r["delivered"] + r["rejected"] + r["failed"] + r["skipped"], r
    return doc


def test_unchanged_rows_skip_validation_and_mapping_and_changed_cells_are_sent(
    emulator: Any, tmp_path: Path, spy: dict[str, int], backend: dict[str, str]
) -> None:
    path = write(tmp_path, file_stream(), backend=backend)
    csv = tmp_path / "data" / "users.csv"
    csv.write_text(CSV + "u9,u9@example.com,N9,20,gold\n", encoding="utf-8")  # u9: rejected by the suite
    env = {**env_for(emulator), **backend}
    first = run(path, env, tmp_path / "r1", spy)
    assert first["rows"]["delivered"] == 8 and first["rows"]["rejected"] == 1 and spy["fast"] == 0

    second = run(path, env, tmp_path / "r2", spy)
    assert second["rows"]["skipped"] == 8 and second["skipped"]["by_reason"] == {SKIP: 8}
    assert second["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": 8}
    assert second["rows"]["rejected"] == 1  # never confirmed: validated again, and rejected again
    assert spy == {"fast": 8, "mapped": 0}

    # A mapped column (age of u1), and a column only the suite reads (plan of u2: still valid, not sent).
    text = CSV.replace("u1,u1@example.com,N1,21,pro", "u1,u1@example.com,N1,22,pro")
    text = text.replace("u2,u2@example.com,N2,22,free", "u2,u2@example.com,N2,22,max")
    csv.write_text(text + "u9,u9@example.com,N9,20,pro\n", encoding="utf-8")  # u9 fixed: sent, as added
    third = run(path, env, tmp_path / "r3", spy)
    assert spy["fast"] == 6 and spy["mapped"] == 3
    assert third["streams"][0]["delta"] == {"added": 1, "changed": 1, "unchanged": 7}
    assert third["rows"]["delivered"] == 2 and emulator.user("external_id", "u1")["attributes"]["age"] == 22

    fourth = run(path, env, tmp_path / "r4", spy)  # u2's new print was attached to its record
    assert spy == {"fast": 9, "mapped": 0} and fourth["rows"]["skipped"] == 9


@pytest.mark.parametrize("change", ["mapping", "suite"])
def test_a_change_of_mapping_or_suite_falls_back_for_one_run(
    change: str, emulator: Any, tmp_path: Path, spy: dict[str, int], backend: dict[str, str]
) -> None:
    path = write(tmp_path, file_stream(), backend=backend)
    (tmp_path / "data" / "users.csv").write_text(CSV, encoding="utf-8")
    env = {**env_for(emulator), **backend}
    run(path, env, tmp_path / "r1", spy)
    run(path, env, tmp_path / "r2", spy)
    assert spy["fast"] == 8
    if change == "mapping":  # the same objects for these rows, but a mapping that is not the same
        write(tmp_path, file_stream(attributes=[{"column": "email"}, {"column": "first_name", "on_empty": "null"},
                                                {"column": "age", "type": "integer"}]), backend=backend)  # fmt: skip
    else:
        write(tmp_path, file_stream(), {**SUITE, "expectations": [*SUITE["expectations"], {
            "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}}]}, backend)  # fmt: skip
    third = run(path, env, tmp_path / "r3", spy)
    assert spy == {"fast": 0, "mapped": 8}  # every row took the object comparison ...
    assert third["streams"][0]["delta"] == {
        "added": 0,
        "changed": 0,
        "unchanged": 8,
    }  # ... which sent nothing
    run(path, env, tmp_path / "r4", spy)
    assert spy == {"fast": 8, "mapped": 0}  # and attached the new prints


def test_table_level_checks_and_operations_keep_the_slow_path(
    emulator: Any, tmp_path: Path, spy: dict[str, int], backend: dict[str, str]
) -> None:
    suite = {"name": "rows", "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]}  # fmt: skip
    path = write(tmp_path, file_stream(), suite, backend)
    (tmp_path / "data" / "users.csv").write_text(CSV, encoding="utf-8")
    env = {**env_for(emulator), **backend}
    run(path, env, tmp_path / "r1", spy)
    second = run(path, env, tmp_path / "r2", spy)
    assert spy == {"fast": 0, "mapped": 8} and second["rows"]["skipped"] == 8
    assert second["table_checks"][0]["success"] is True  # it saw every row

    ops = file_stream(expectations=[], attributes=[{"column": "email"}, {"column": "age", "op": "inc"}])
    path = write(tmp_path, ops, backend=backend)
    run(path, env, tmp_path / "r3", spy)
    again = run(path, env, tmp_path / "r4", spy)
    assert spy["fast"] == 0 and again["rows"]["delivered"] == 8  # operations are always sent


def test_a_postgresql_source_takes_the_fast_path(
    postgres_url: str, emulator: Any, tmp_path: Path, spy: dict[str, int], backend: dict[str, str]
) -> None:
    table = f"rp_users_{zlib.crc32(str(tmp_path).encode())}"  # one per test: the server is the session's
    pg_exec(postgres_url, f"DROP TABLE IF EXISTS {table}",
            f"CREATE TABLE {table} AS SELECT 'u' || g AS user_id, 'u' || g || '@example.com' AS email, 20 + g AS age, "
            "g * 1.5 AS ltv, timestamptz '2024-01-01' + g * interval '1 hour' AS seen_at, "
            "(ARRAY['free','pro'])[1 + g % 2] AS plan FROM generate_series(1, 120) AS g")  # fmt: skip
    stream = {"name": "users", "kind": "attributes", "delta": True, "expectations": ["rows"],
              "source": {"table": f"public.{table}", "connection": {"url_env": "PG_URL"}, "chunk_rows": 50},
              "identifier": {"external_id": "user_id"},
              "attributes": [{"column": "email"}, {"column": "age"}, {"column": "ltv"},
                             {"column": "seen_at", "type": "time"}]}  # fmt: skip
    path = write(tmp_path, stream, backend=backend)
    env = {**env_for(emulator), "PG_URL": postgres_url, **backend}
    assert run(path, env, tmp_path / "r1", spy)["rows"]["delivered"] == 120
    second = run(path, env, tmp_path / "r2", spy)
    assert spy == {"fast": 120, "mapped": 0} and second["rows"]["skipped"] == 120
    pg_exec(postgres_url, f"UPDATE {table} SET seen_at = seen_at + interval '1 second' WHERE user_id = 'u7'",
            f"UPDATE {table} SET plan = 'max' WHERE user_id = 'u8'",  # read by the suite only
            f"UPDATE {table} SET ltv = NULL WHERE user_id = 'u9'")  # fmt: skip
    third = run(path, env, tmp_path / "r3", spy)
    assert spy == {"fast": 117, "mapped": 3}
    assert third["streams"][0]["delta"] == {
        "added": 0,
        "changed": 1,
        "unchanged": 119,
    }  # u9's null is not sent
    assert emulator.user("external_id", "u7")["attributes"]["seen_at"] == "2024-01-01T07:00:01.000Z"


def test_a_killed_run_is_followed_by_one_that_sends_exactly_what_was_not_confirmed(
    tmp_path: Path, backend: dict[str, str]
) -> None:
    state = backend.get("STATE_PG_URL", str(tmp_path / "s.sqlite"))
    pipeline = f"killed{zlib.crc32(str(tmp_path).encode())}"
    worker = Path(__file__).with_name("rowprint_worker.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, str(worker), state, pipeline], env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == -9, p.stderr[-2000:]
    killed = json.loads(p.stdout)
    assert killed["fast"] == list(range(50, 100))  # unchanged since run 1
    assert killed["sent"] == list(range(50)) + list(range(100, 200))

    sys.path.insert(0, str(worker.parent))
    from rowprint_worker import decide, open_state

    again = open_state(state, pipeline)
    fast, sent = decide(again, list(range(200)), changed=range(50))
    again.close()
    assert fast == list(range(50, 150))  # confirmed, in run 1 or before the kill
    assert sorted(int(k.split(":u")[1]) for k in sent) == list(range(50)) + list(range(150, 200))  # in flight


def test_two_processes_sharing_a_postgresql_state_each_take_the_fast_path(postgres_url: str) -> None:
    """Two partitions of one pipeline, each with users of its own, confirm and then decide them again at
    once: each takes its unchanged users, sends its changed ones, and sees nothing of the other's."""
    worker = Path(__file__).with_name("rowprint_worker.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(worker), postgres_url, "rp-shared", str(first), "400"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for first in (0, 400)]  # fmt: skip
    outs = [p.communicate(timeout=150) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    for first, (out, _) in zip((0, 400), outs, strict=True):
        assert json.loads(out) == {"fast": list(range(first + 200, first + 400)), "sent": list(range(first, first + 200))}
    rows = pg_rows(postgres_url, "SELECT count(*), count(print) FROM braze_connector_delta WHERE pipeline = 'rp-shared'")
    assert rows == [(800, 800)]  # every record with the print of the row it was confirmed for


def test_mirror_mode_sees_the_rows_the_fast_path_takes(
    emulator: Any, tmp_path: Path, spy: dict[str, int]
) -> None:
    from test_mirror import USERS, mirror_project
    from test_mirror import run as mirror_run

    p = mirror_project(tmp_path, "report")
    mirror_run(p, emulator, tmp_path / "r1")
    spy.update(fast=0, mapped=0)
    same = mirror_run(p, emulator, tmp_path / "r2")
    assert spy["fast"] == len(USERS) and same["removed"]["users"]["removed"] == 0
    assert same["removed"]["users"]["known"] == len(USERS)
    csv = tmp_path / "data" / "users.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    csv.write_text(lines[0] + "".join(lines[3:]), encoding="utf-8")  # two users gone, the others as they were
    spy.update(fast=0, mapped=0)
    gone = mirror_run(p, emulator, tmp_path / "r3")
    assert spy["fast"] == len(USERS) - 2 and gone["removed"]["users"]["removed"] == 2


def test_the_prints_memo_spares_the_hashing_and_never_decides(
    emulator: Any, tmp_path: Path, spy: dict[str, int], backend: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """delta/memo.py: an unchanged chunk's prints come back from the memo (no row hashed again); a damaged memo
    is made again; a memo whose state was emptied meanwhile decides nothing (the state does)."""
    from connector.delta import rowprint

    made = {"prints": 0}
    prints = rowprint.RowPrint.prints

    def counting(self: rowprint.RowPrint, table: Any) -> Any:
        made["prints"] += 1
        return prints(self, table)

    monkeypatch.setattr(rowprint.RowPrint, "prints", counting)
    path = write(tmp_path, file_stream(), backend=backend)
    (tmp_path / "data" / "users.csv").write_text(CSV, encoding="utf-8")
    env = {**env_for(emulator), **backend}
    run(path, env, tmp_path / "r1", spy)
    assert made["prints"] == 1
    memo = [p for p in tmp_path.rglob("*.prints") if p.is_dir()]
    assert len(memo) == 1 and len(list(memo[0].iterdir())) == 1
    for i in (2, 3):
        again = run(path, env, tmp_path / f"r{i}", spy)
        assert again["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": 8} and spy["fast"] == 8
    assert made["prints"] == 1  # the first run's prints, remembered
    (entry,) = memo[0].iterdir()
    data = bytearray(entry.read_bytes())
    data[20] ^= 0xFF
    entry.write_bytes(bytes(data))
    damaged = run(path, env, tmp_path / "r4", spy)
    assert damaged["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": 8} and made["prints"] == 2
    if backend:
        pg_exec(backend["STATE_PG_URL"], f"DELETE FROM braze_connector_delta WHERE pipeline = '{load_pipeline(path).name}'")
    else:
        for f in tmp_path.rglob("*.sqlite*"):
            if f.is_file():  # the state file and its WAL; not the memo beside them
                f.unlink()
    emptied = run(path, env, tmp_path / "r5", spy)  # the memo still knows every chunk; the state knows nobody
    assert emptied["rows"]["delivered"] == 8 and emptied["streams"][0]["delta"] == {"added": 8, "changed": 0, "unchanged": 0}
