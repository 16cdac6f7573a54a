"""Mirror mode end to end against the emulator (real HTTP): users gone from the source are reported or deleted."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_invoke import invoke
from test_pipeline_run import env_for, report_json
from test_pipeline_stop import stop_when

from connector import StopToken
from connector.config import Pipeline, load_pipeline
from connector.delta.stores import SqliteStore
from connector.emulator import EmulatorServer
from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(120)

USERS = [f"user_{c}" for c in "ABCDEFGHIJ"]


def write_users(root: Path, users: list[str], *, extra: str = "") -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = ["user_id,plan,age"] + [f"{u},gold,{20 + i}" for i, u in enumerate(users)]
    (root / "data" / "users.csv").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


def mirror_project(root: Path, on_removed: str | None, users: list[str] = USERS, state: str | None = None,
                   **stream: Any) -> Pipeline:  # fmt: skip
    write_users(root, users)
    s: dict[str, Any] = {"name": "users", "source": {"path": "data/users.csv"}, "kind": "attributes", "delta": True,
                         "identifier": {"external_id": "user_id"},
                         "attributes": [{"column": "plan"}, {"column": "age", "type": "integer"}], **stream}  # fmt: skip
    if on_removed is not None:
        s["on_removed"] = on_removed
    # aiohttp on a thread of this process: the default bulk transport's HTTP code without its child process,
    # which is not what these tests are about (test_transport_process.py, test_http_child_lifetime.py test it)
    doc: dict[str, Any] = {"name": "m", "streams": [s], "report": {"max_reject_fraction": 0.5},
                           "write": {"transport": "aiohttp"}}  # fmt: skip
    if state is not None:
        doc["state"] = {"path": state}
    (root / "pipelines").mkdir(exist_ok=True)
    path = root / "pipelines" / "m.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_pipeline(path)


def run(p: Pipeline, em: EmulatorServer, out: Path, **kw: Any) -> dict[str, Any]:
    return report_json(run_pipeline(p, mode="bulk", report_dir=out, env=env_for(em), raise_on_failure=False, **kw))


def state_keys(root: Path) -> set[str]:
    store = SqliteStore(root / "state" / "m.sqlite", read_only=True)
    try:
        return set(store.keys("users"))
    finally:
        store.close()


def removed_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    with open(doc["files"]["removed"], encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def deletes(em: EmulatorServer) -> list[dict[str, Any]]:
    return [e for e in em.ledger() if e["endpoint"] == "/users/delete"]


def without(*gone: str) -> list[str]:
    return [u for u in USERS if u.removeprefix("user_") not in gone]


def test_report_counts_and_lists_the_removed_users_and_deletes_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = mirror_project(tmp_path, None)  # a delta attributes stream reports by default
    first = run(p, emulator, tmp_path / "r1")
    assert first["rows"]["delivered"] == 10 and first["removed"]["users"]["removed"] == 0
    write_users(tmp_path, without("C", "D"))
    doc = run(p, emulator, tmp_path / "r2")
    assert doc["exit_code"] == 0 and doc["invariant_ok"] is True
    m = doc["removed"]["users"]
    assert (m["on_removed"], m["decided"], m["known"], m["removed"], m["deleted"]) == ("report", True, 10, 2, 0)
    assert [(r["_stream"], r["_identifier"], r["_outcome"]) for r in removed_rows(doc)] == [
        ("users", "external_id:user_C", "reported"), ("users", "external_id:user_D", "reported")]  # fmt: skip
    assert any(w.startswith("removed users: stream users: 2 of 10") for w in doc["warnings"])
    assert deletes(emulator) == []
    assert emulator.user("external_id", "user_C") is not None
    assert state_keys(tmp_path) == {f"external_id:{u}" for u in USERS}  # reported again next time
    html = Path(doc["files"]["report_html"]).read_text(encoding="utf-8")
    assert "<h2>Removed users</h2>" in html
    assert "user_C" not in html and "user_C" not in json.dumps(doc)  # counts only; removed.csv has the ids
    assert "2 reported (on_removed: report), none deleted" in html


def test_the_summary_says_reported_users_were_not_deleted(emulator: EmulatorServer, tmp_path: Path) -> None:
    mirror_project(tmp_path, "report")
    args = ("run", "pipelines/m.yaml", "--mode", "bulk", "-q")
    assert invoke(*args, "--report-dir", "r1", cwd=tmp_path, env=env_for(emulator)).exit_code == 0
    write_users(tmp_path, without("C", "D"))
    second = invoke(*args, "--report-dir", "r2", cwd=tmp_path, env=env_for(emulator))
    assert second.exit_code == 0
    assert "removed users (users, 10 known): 2 reported (on_removed: report), none deleted" in second.stdout


def test_a_first_run_on_an_empty_state_counts_the_users_it_confirmed_and_removes_none(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    p = mirror_project(tmp_path, "delete", users=without("J"))
    first = run(p, emulator, tmp_path / "r1")
    m = first["removed"]["users"]
    assert (m["decided"], m["known"], m["removed"], m["deleted"], m["file"]) == (True, 9, 0, 0, None)
    write_users(tmp_path, without("A"))  # the next run compares: A is gone, J is new
    m = run(p, emulator, tmp_path / "r2")["removed"]["users"]
    assert (m["decided"], m["known"], m["removed"], m["deleted"]) == (True, 10, 1, 1)
    assert state_keys(tmp_path) == {f"external_id:{u}" for u in without("A")}
    m = run(p, emulator, tmp_path / "r3")["removed"]["users"]  # unchanged: every known user read again
    assert (m["decided"], m["known"], m["removed"], m["deleted"]) == (True, 9, 0, 0)
    write_users(tmp_path, without("A", "B", "J") + ["user_B"])  # B read twice, J gone
    m = run(p, emulator, tmp_path / "r4")["removed"]["users"]
    assert (m["decided"], m["known"], m["removed"], m["deleted"], m["refused"]) == (True, 9, 1, 0, True)  # 1 > 9 x 0.1


def test_delete_removes_them_from_braze_and_the_state_and_a_third_run_deletes_nothing(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.2)
    run(p, emulator, tmp_path / "r1")
    write_users(tmp_path, without("C", "D"))
    doc = run(p, emulator, tmp_path / "r2")
    assert doc["exit_code"] == 0 and doc["invariant_ok"] is True
    m = doc["removed"]["users"]
    assert (m["known"], m["removed"], m["deleted"], m["delete_failed"], m["refused"]) == (10, 2, 2, 0, False)
    assert emulator.user("external_id", "user_C") is None and emulator.user("external_id", "user_D") is None
    assert emulator.user("external_id", "user_E") is not None
    (entry,) = deletes(emulator)
    assert entry["status"] == 201 and [a["deleted"] for a in entry["applied"]] == [
        {"external_id": "user_C"}, {"external_id": "user_D"}]  # fmt: skip
    assert doc["requests"]["by_endpoint"]["users_delete"]["by_status"] == {"201": 1}
    assert {r["_outcome"] for r in removed_rows(doc)} == {"deleted"}
    assert state_keys(tmp_path) == {f"external_id:{u}" for u in without("C", "D")}

    third = run(p, emulator, tmp_path / "r3")
    assert third["exit_code"] == 0 and third["removed"]["users"]["removed"] == 0
    assert len(deletes(emulator)) == 1


def test_aliases_holding_a_bar_are_deleted_as_the_alias_they_are(emulator: EmulatorServer, tmp_path: Path) -> None:
    """Alias names and labels with `|` (and `\\`): each removed one is deleted as exactly its own alias, and
    the users left in the source keep their profiles."""
    aliases = [("a|b", "crm"), ("a", "b|crm"), ("c\\", "|d"), ("keep|me", "crm"), ("plain", "crm")]
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)

    def write(rows: list[tuple[str, str]]) -> None:
        with open(tmp_path / "data" / "users.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([("name", "label", "plan"), *((n, lb, "gold") for n, lb in rows)])

    write(aliases)
    p = mirror_project(tmp_path, "delete", max_delete_fraction=1.0,
                       identifier={"user_alias": {"name": "name", "label": "label"}}, attributes=[{"column": "plan"}])
    write(aliases)  # mirror_project wrote its own users file
    assert run(p, emulator, tmp_path / "r1")["rows"]["delivered"] == 5
    write([("keep|me", "crm"), ("plain", "crm")])
    doc = run(p, emulator, tmp_path / "r2")
    m = doc["removed"]["users"]
    assert doc["exit_code"] == 0 and (m["removed"], m["deleted"], m["delete_failed"]) == (3, 3, 0), doc["warnings"]
    (entry,) = deletes(emulator)
    assert entry["status"] == 201
    deleted = sorted((a["deleted"]["user_alias"]["alias_name"], a["deleted"]["user_alias"]["alias_label"])
                     for a in entry["applied"])  # fmt: skip
    assert deleted == sorted(aliases[:3])
    assert {r["_outcome"] for r in removed_rows(doc)} == {"deleted"} and len(state_keys(tmp_path)) == 2
    # A state written before the escaping holds the kept user's alias unescaped: a leftover, not a removal,
    # dropped from the state; nothing more is deleted.
    store = SqliteStore(tmp_path / "state" / "m.sqlite", read_only=False)
    store.write("users", [("user_alias:keep|me|crm", b"{}")], [])
    store.close()
    third = run(p, emulator, tmp_path / "r3")
    assert third["exit_code"] == 0 and third["removed"]["users"]["removed"] == 0
    assert state_keys(tmp_path) == {"user_alias:keep\\|me|crm", "user_alias:plain|crm"}
    assert len(deletes(emulator)) == 1


def test_the_guard_refuses_a_50_percent_removal_until_the_command_line_confirms_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    p = mirror_project(tmp_path, "delete")
    run(p, emulator, tmp_path / "r1")
    write_users(tmp_path, USERS[:5])
    doc = run(p, emulator, tmp_path / "r2")
    assert doc["exit_code"] == 1 and doc["invariant_ok"] is True and doc["rows"]["read"] == 5
    m = doc["removed"]["users"]
    assert (m["removed"], m["known"], m["refused"], m["limit"], m["deleted"]) == (5, 10, True, 1, 0)
    refusal = next(w for w in doc["warnings"] if "max_delete_fraction" in w)
    assert "5 of the 10 users" in refusal and "50.0 %" in refusal and "--allow-deletes 5" in refusal
    assert deletes(emulator) == [] and all(emulator.user("external_id", u) for u in USERS)
    assert {r["_outcome"] for r in removed_rows(doc)} == {"refused"}
    assert doc["exit_meaning"].startswith("deletion of users gone from the source refused by the max_delete_fraction")
    html = Path(doc["files"]["report_html"]).read_text(encoding="utf-8")
    assert "deletion refused by the guard (limit 1)" in html

    too_few = run(p, emulator, tmp_path / "r3", allow_deletes=4)
    assert too_few["exit_code"] == 1 and deletes(emulator) == []
    confirmed = run(p, emulator, tmp_path / "r4", allow_deletes=5)
    assert confirmed["exit_code"] == 0 and confirmed["removed"]["users"]["deleted"] == 5
    assert [u for u in USERS if emulator.user("external_id", u)] == USERS[:5]


def test_a_rejected_rows_user_is_present_and_not_deleted(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.2)
    run(p, emulator, tmp_path / "r1")
    rows = ["user_id,plan,age"] + [f"{u},gold,{'x' if u == 'user_C' else 30}" for u in without("D")]
    (tmp_path / "data" / "users.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    doc = run(p, emulator, tmp_path / "r2")
    assert doc["rows"]["rejected"] == 1 and doc["rejects"]["by_rule"] == {"cast.integer": 1}
    assert doc["removed"]["users"]["removed"] == 1 and doc["removed"]["users"]["deleted"] == 1
    assert emulator.user("external_id", "user_C") is not None
    assert emulator.user("external_id", "user_D") is None


def test_a_line_that_does_not_parse_leaves_removals_undecided(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.2)
    run(p, emulator, tmp_path / "r1")
    write_users(tmp_path, without("C", "D"), extra="user_C,gold,30,one-too-many\n")
    doc = run(p, emulator, tmp_path / "r2")
    assert doc["rejects"]["by_rule"] == {"csv.column_count": 1}
    m = doc["removed"]["users"]
    assert m["decided"] is False and "could not be parsed" in m["reason"]
    assert deletes(emulator) == [] and emulator.user("external_id", "user_D") is not None


def test_a_stopped_run_deletes_nothing(emulator_factory: Any, tmp_path: Path) -> None:
    emu: EmulatorServer = emulator_factory(latency_ms=80)
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.5,
                       source={"path": "data/users.csv", "chunk_rows": 100})  # fmt: skip
    many = [f"u{i:04d}" for i in range(2000)]
    write_users(tmp_path, many)
    fast = p.model_copy(update={"write": p.write.model_copy(update={"concurrency": 16, "max_objects_per_request": 10})})
    run(fast, emu, tmp_path / "r1")  # the known users (16 requests in flight: 8 s less of the latency)
    p = p.model_copy(update={"write": p.write.model_copy(update={"concurrency": 2, "max_objects_per_request": 10})})
    write_users(tmp_path, many[:1500])  # 500 users gone, within the guard
    token = StopToken()
    stop_when(lambda: len([e for e in emu.ledger() if e["endpoint"] == "/users/track"]) >= 3, token)
    (tmp_path / "data" / "users.csv").write_text(
        (tmp_path / "data" / "users.csv").read_text().replace(",gold,", ",silver,"), encoding="utf-8")
    doc = run(p, emu, tmp_path / "r2", stop=token)
    assert doc["exit_code"] == 4 and doc["invariant_ok"] is True
    m = doc["removed"]["users"]
    assert m["decided"] is False and m["deleted"] == 0 and "stopped" in m["reason"]
    assert deletes(emu) == [] and emu.user("external_id", "u1999") is not None


def test_a_failed_delete_keeps_the_users_in_the_state_and_the_next_run_deletes_them(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emu: EmulatorServer = emulator_factory(api_keys=("test-key", "nodelete:users.track"))
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.2)
    run(p, emu, tmp_path / "r1")
    write_users(tmp_path, without("C", "D"))
    doc = report_json(run_pipeline(p, mode="bulk", report_dir=tmp_path / "r2", env=env_for(emu, "nodelete"),
                                   raise_on_failure=False))  # fmt: skip
    assert doc["exit_code"] == 1 and doc["invariant_ok"] is True
    m = doc["removed"]["users"]
    assert (m["removed"], m["deleted"], m["delete_failed"]) == (2, 0, 2)
    assert [r["_outcome"] for r in removed_rows(doc)] == ["delete_failed", "delete_failed"]
    assert "403" in removed_rows(doc)[0]["_error"] and "nodelete" not in removed_rows(doc)[0]["_error"]
    assert "external_id:user_C" in state_keys(tmp_path)
    assert emu.user("external_id", "user_C") is not None
    again = run(p, emu, tmp_path / "r3")
    assert again["exit_code"] == 0 and again["removed"]["users"]["deleted"] == 2
    assert emu.user("external_id", "user_C") is None and "external_id:user_C" not in state_keys(tmp_path)


def test_a_dry_run_says_what_it_would_delete_and_sends_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.2)
    run(p, emulator, tmp_path / "r1")
    write_users(tmp_path, without("C"))
    dry = report_json(run_pipeline(p, dry_run=True, report_dir=tmp_path / "dry", env={}, raise_on_failure=False))
    assert dry["removed"]["users"]["removed"] == 1 and dry["removed"]["users"]["deleted"] == 0
    assert [r["_outcome"] for r in removed_rows(dry)] == ["would_delete"]
    assert deletes(emulator) == [] and "external_id:user_C" in state_keys(tmp_path)


def cli(root: Path, em: EmulatorServer, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")} | env_for(em)
    return subprocess.Popen([sys.executable, "-m", "connector", "run", "pipelines/m.yaml", "--mode", "bulk", "-q",
                             *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_the_command_line_refuses_then_confirms_with_allow_deletes(emulator: EmulatorServer, tmp_path: Path) -> None:
    mirror_project(tmp_path, "delete")

    def cli_run(*args: str) -> Any:  # the CLI in-process (tests/cli_invoke.py): its output is the point here
        return invoke("run", "pipelines/m.yaml", "--mode", "bulk", "-q", *args, cwd=tmp_path, env=env_for(emulator))

    assert cli_run("--report-dir", "r1").exit_code == 0
    write_users(tmp_path, USERS[:5])
    refused = cli_run("--report-dir", "r2")
    out = refused.stdout
    assert refused.exit_code == 1
    assert ("removed users (users, 10 known): 5 removed, deletion refused by the guard (limit 1): listed in "
            "removed.csv") in out
    assert "exit code 1, deletion of users gone from the source refused by the max_delete_fraction guard" in out
    assert "rows rejected over the threshold" not in out  # no row was lost: the guard's refusal has its own words
    assert "run again with --allow-deletes 5" in out and f"removed: {Path('r2') / 'removed.csv'}" in out
    assert deletes(emulator) == []
    ok = cli_run("--report-dir", "r3", "--allow-deletes", "5")
    out, err = ok.stdout, ok.stderr
    assert ok.exit_code == 0, out + err
    assert "removed users (users, 10 known): 5 deleted, 0 failed" in out
    assert [u for u in USERS if emulator.user("external_id", u)] == USERS[:5]


def test_sigterm_mid_run_deletes_nothing(emulator_factory: Any, tmp_path: Path) -> None:
    emu: EmulatorServer = emulator_factory(latency_ms=80)
    many = [f"u{i:04d}" for i in range(2000)]
    mirror_project(tmp_path, "delete", max_delete_fraction=0.5, users=many)
    pipeline = tmp_path / "pipelines" / "m.yaml"
    doc = yaml.safe_load(pipeline.read_text())
    # The known users first, in-process and 16 requests in flight (the setup, not the point: 8 s less)
    pipeline.write_text(yaml.safe_dump(doc | {"write": {"concurrency": 16, "max_objects_per_request": 10}}))
    assert run(load_pipeline(pipeline), emu, tmp_path / "r1")["exit_code"] == 0
    pipeline.write_text(yaml.safe_dump(doc | {"write": {"concurrency": 2, "max_objects_per_request": 10}}))
    lines = [f"{u},silver,30" for u in many[:1500]]  # every user changed, 500 gone (within the guard)
    (tmp_path / "data" / "users.csv").write_text("user_id,plan,age\n" + "\n".join(lines) + "\n", encoding="utf-8")
    before = len(emu.ledger())
    proc = cli(tmp_path, emu, "--report-dir", "r2")
    end = time.monotonic() + 60
    while len(emu.ledger()) < before + 3 and time.monotonic() < end:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=90)
    assert proc.returncode == 4
    doc = json.loads((tmp_path / "r2" / "report.json").read_text(encoding="utf-8"))
    assert doc["invariant_ok"] is True and doc["rows"]["read"] == 1500
    assert doc["removed"]["users"]["decided"] is False and doc["removed"]["users"]["deleted"] == 0
    assert deletes(emu) == [] and emu.user("external_id", "u1999") is not None


@pytest.mark.parametrize("db", ["duckdb", "postgresql"])
def test_users_gone_from_an_sql_table_are_deleted(db: str, emulator: EmulatorServer, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:  # fmt: skip
    """The same through an SQL source: user ids are integers in the table, text in Braze and the state."""
    from sql_helpers import duck_exec, pg_exec

    table = f"mirror_{tmp_path.name[-12:].replace('-', '_')}"
    create = [f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, plan TEXT)",
              f"INSERT INTO {table} SELECT i, 'gold' FROM generate_series(1, 10) AS s(i)"]  # fmt: skip
    if db == "duckdb":
        path = tmp_path / "w.duckdb"
        duck_exec(path, *create)
        connection: dict[str, str] = {"duckdb": str(path)}
        env: dict[str, str] = {}

        def execute(sql: str) -> None:
            duck_exec(path, sql)
    else:
        url = request.getfixturevalue("postgres_url")
        pg_exec(url, *create)
        connection, env = {"url_env": "PG_URL"}, {"PG_URL": url}

        def execute(sql: str) -> None:
            pg_exec(url, sql)

    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.2, source={"table": table, "connection": connection},
                       identifier={"external_id": "id"}, attributes=[{"column": "plan"}])  # fmt: skip
    run_env = env_for(emulator) | env
    first = report_json(run_pipeline(p, mode="bulk", report_dir=tmp_path / "r1", env=run_env))
    assert first["rows"]["delivered"] == 10 and emulator.user("external_id", "3") is not None
    execute(f"DELETE FROM {table} WHERE id IN (3, 4)")
    doc = report_json(run_pipeline(p, mode="bulk", report_dir=tmp_path / "r2", env=run_env))
    assert doc["exit_code"] == 0 and doc["rows"]["read"] == 8
    assert (doc["removed"]["users"]["removed"], doc["removed"]["users"]["deleted"]) == (2, 2)
    assert emulator.user("external_id", "3") is None and emulator.user("external_id", "4") is None
    assert emulator.user("external_id", "5") is not None
    assert state_keys(tmp_path) == {f"external_id:{i}" for i in (1, 2, 5, 6, 7, 8, 9, 10)}


def test_partition_and_retry_runs_never_decide_removals(emulator: EmulatorServer, tmp_path: Path) -> None:
    from connector.readers import load_failed
    from connector.readers.partition import Partition

    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.5)
    run(p, emulator, tmp_path / "r1")
    # Partitions keep a state file each ({partition} in state.path; one file shared by partitions is refused).
    parted = mirror_project(tmp_path, "delete", without("C", "D"), state="state/{pipeline}.{partition}.sqlite",
                            max_delete_fraction=0.5)  # fmt: skip
    part = run(parted, emulator, tmp_path / "{partition}", partition=Partition(1, 2))
    m = part["removed"]["users"]
    assert m["decided"] is False and "--partition" in m["reason"] and deletes(emulator) == []
    assert any(w.startswith("removed users: stream users: not decided: a --partition run") for w in part["warnings"])
    # a retry run reads only the rows of a failed file: here one row, so 8 users would look removed
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "failed.csv").write_text(
        "user_id,plan,age,_source_file,_row_number,_status,_outcome,_error,_stream\n"
        f"user_A,gold,20,{tmp_path / 'data' / 'users.csv'},2,503,failed,HTTP 503,users\n", encoding="utf-8")
    write_users(tmp_path, without("C", "D"))
    retry = run(p, emulator, tmp_path / "r3", retry=load_failed(failed))
    assert retry["rows"]["read"] == 1 and retry["removed"]["users"]["decided"] is False
    assert "--retry-failed" in retry["removed"]["users"]["reason"] and deletes(emulator) == []
    assert emulator.user("external_id", "user_C") is not None


def test_the_default_report_mode_does_not_warn_on_every_partial_run(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A delta stream that did not ask for removals (on_removed unset: report) is not warned about on every run
    that cannot decide them (a partition, a retry, a stopped run: each says so itself); the report keeps why."""
    from connector.readers.partition import Partition

    p = mirror_project(tmp_path, None, state="state/{pipeline}.{partition}.sqlite")
    part = run(p, emulator, tmp_path / "{partition}", partition=Partition(1, 2))
    m = part["removed"]["users"]
    assert m["decided"] is False and "--partition" in m["reason"]
    assert not [w for w in part["warnings"] if w.startswith("removed users:")], part["warnings"]
    run(p.model_copy(update={"state": p.state.model_copy(update={"path": "state/m.sqlite"})}), emulator, tmp_path / "r1")
    token = StopToken()
    token.request("a test stops it")  # before the first row: the run reads nothing and says it was stopped
    stopped = run(p.model_copy(update={"state": p.state.model_copy(update={"path": "state/m.sqlite"})}), emulator,
                  tmp_path / "r2", stop=token)  # fmt: skip
    assert stopped["exit_code"] == 4 and stopped["removed"]["users"]["decided"] is False
    assert not [w for w in stopped["warnings"] if w.startswith("removed users:")], stopped["warnings"]
    # asked for: warned (test_partition_and_retry_runs_never_decide_removals, on_removed: delete)
    asked = mirror_project(tmp_path, "report", state="state/{pipeline}.{partition}.sqlite")
    doc = run(asked, emulator, tmp_path / "{partition}-b", partition=Partition(1, 2))
    assert any(w.startswith("removed users: stream users: not decided: a --partition run") for w in doc["warnings"])


@pytest.mark.parametrize("action", ["fail", "warn"])
def test_a_failed_table_check_leaves_removals_undecided(action: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    (tmp_path / "expectations").mkdir()
    suite = {"name": "rows", "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 9}}]}  # fmt: skip
    (tmp_path / "expectations" / "rows.json").write_text(json.dumps(suite), encoding="utf-8")
    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.5, expectations=["rows"],
                       on_table_expectation_failure=action)  # fmt: skip
    assert run(p, emulator, tmp_path / "r1")["rows"]["delivered"] == 10
    write_users(tmp_path, without("C", "D"))  # 8 rows: the suite wants at least 9
    doc = run(p, emulator, tmp_path / "r2")
    m = doc["removed"]["users"]
    assert m["decided"] is False and "expect_table_row_count_to_be_between failed" in m["reason"]
    assert deletes(emulator) == [] and emulator.user("external_id", "user_C") is not None


def test_each_confirmed_batch_leaves_the_state_and_a_spent_limit_keeps_the_rest(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emu: EmulatorServer = emulator_factory(rate_limits={"users_delete": (1, 1_000_000)})  # one request, then 429
    many = [f"u{i:03d}" for i in range(130)]
    p = mirror_project(tmp_path, "delete", users=many)
    run(p, emu, tmp_path / "r1")
    write_users(tmp_path, many[120:])
    doc = run(p, emu, tmp_path / "r2", allow_deletes=120)
    assert doc["exit_code"] == 3 and doc["invariant_ok"] is True  # the rate limit resets beyond the retry budget
    m = doc["removed"]["users"]
    assert (m["removed"], m["deleted"], m["delete_failed"]) == (120, 50, 70)
    # 50 identifiers a request; the answer said the window is spent until far away: nothing more is sent
    assert [e["status"] for e in deletes(emu)] == [201] and len(deletes(emu)[0]["applied"]) == 50
    assert "rate limit for /users/delete is spent until" in removed_rows(doc)[-1]["_error"]
    assert state_keys(tmp_path) == {f"external_id:{u}" for u in many[50:]}
    gone = [u for u in many if emu.user("external_id", u) is None]
    assert gone == many[:50]
    outcomes = [r["_outcome"] for r in removed_rows(doc)]
    assert outcomes.count("deleted") == 50 and outcomes.count("delete_failed") == 70


def test_a_source_failing_later_in_the_run_leaves_removals_undecided(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector import pipeline as pipeline_module
    from connector.errors import SourceError

    p = mirror_project(tmp_path, "delete", max_delete_fraction=0.5)
    run(p, emulator, tmp_path / "r1")
    write_users(tmp_path, without("C"))
    (tmp_path / "data" / "more.csv").write_text("user_id,plan\nz1,gold\nz2,gold\n", encoding="utf-8")
    doc = yaml.safe_load((tmp_path / "pipelines" / "m.yaml").read_text())
    doc["streams"].append({"name": "more", "source": {"path": "data/more.csv", "chunk_rows": 1},
                           "kind": "attributes", "identifier": {"external_id": "user_id"},
                           "attributes": [{"column": "plan"}]})  # fmt: skip
    (tmp_path / "pipelines" / "m.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    p = load_pipeline(tmp_path / "pipelines" / "m.yaml")
    real = pipeline_module.readers.read_source

    def failing(source: Any, *args: Any, **kw: Any) -> Any:
        chunks = real(source, *args, **kw)
        if str(source.path).endswith("more.csv"):
            yield next(chunks)
            raise SourceError("data/more.csv: the disk went away while reading")
        yield from chunks

    monkeypatch.setattr(pipeline_module.readers, "read_source", failing)
    out = run(p, emulator, tmp_path / "r2")
    assert out["exit_code"] == 2 and out["invariant_ok"] is True
    m = out["removed"]["users"]
    assert m["decided"] is False and "a source failed" in m["reason"]
    assert deletes(emulator) == [] and emulator.user("external_id", "user_C") is not None
