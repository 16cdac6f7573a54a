"""`braze-connector run` stopped by signals, against an emulator in another process with latency (so the run is
mid-flight): SIGTERM and SIGINT to the process, Ctrl-C in a terminal (the whole process group, through a
pseudo-terminal) and a second signal. Each time: report.json, report.html and failed.csv are written, the
invariant holds, the exit code is the documented one, the run ends within the grace period + 5 s, and (no
fault injected) the emulator applied every delivered row exactly once and nothing else. And one run of a
pipeline at a time: a second run is refused while the first holds the lock; a SIGKILLed run's lock is
taken over.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cli_invoke import invoke

from connector.emulator import EmulatorProcess, start_subprocess

pytestmark = pytest.mark.timeout(180)

GRACE_S = 10.0  # write.stop_grace_s's default
# How long the run may take to end after a second signal before the test calls it hung: not a speed bound (on
# a loaded machine writing the reports alone can take seconds). That it stopped at once is shown by what it
# reports, not by the clock (test_a_second_signal_stops_at_once).
HANG_S = 120.0
# Rows and latency: the run must still be sending when it is signalled (and when a second run starts), which
# the emulator's latency ensures (~12 s for the whole run at 8 requests in flight), not the row count; every
# row costs CPU in the run and the emulator (the stopped runs read the rest unchecked).
EVENTS, PURCHASES = 10_000, 2_000
LATENCY_MS = "600"
# Run `python -m connector ...` with the pseudo-terminal on stdin as the session's controlling terminal.
IN_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline of events (Parquet) and purchases (CSV), every object distinct."""
    root = tmp_path_factory.mktemp("signals")
    (root / "data").mkdir()
    n = EVENTS
    pq.write_table(
        pa.table({"user_id": [f"u{i % 500}" for i in range(n)], "event": ["played"] * n,
                  "ts": ["2026-01-02T10:00:00Z"] * n, "score": list(range(n))}),
        root / "data" / "events.parquet",
    )  # fmt: skip
    lines = ["user_id,sku,currency,price,ts"] + [
        f"u{i % 300},p{i},USD,{1 + i % 50}.5,2026-01-02T10:00:00Z" for i in range(PURCHASES)
    ]
    (root / "data" / "purchases.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = {
        "name": "sig",
        "write": {"concurrency": 8},
        "streams": [
            {"name": "events", "source": {"path": "data/events.parquet"}, "kind": "events",
             "identifier": {"external_id": "user_id"},
             "event": {"name": "event", "time": "ts", "properties": {"columns": {"score": "score"}}}},
            {"name": "purchases", "source": {"path": "data/purchases.csv"}, "kind": "purchases",
             "identifier": {"external_id": "user_id"},
             "purchase": {"product_id": "sku", "currency": "currency", "price": "price", "time": "ts"}},
        ],
    }  # fmt: skip
    (root / "pipelines").mkdir()
    (root / "pipelines" / "sig.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def _slow_emulator_process() -> Iterator[EmulatorProcess]:
    """One emulator process with latency for the module (each costs a CLI start-up); reset before each test."""
    with start_subprocess("--latency-ms", LATENCY_MS) as emu:
        yield emu


@pytest.fixture
def slow_emulator(_slow_emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The module's slow emulator as a fresh one: no profiles, an empty ledger (POST /_emulator/reset). Every
    test waits for its runs to end, so no request of an earlier test reaches it afterwards."""
    req = urllib.request.Request(_slow_emulator_process.url + "/_emulator/reset", data=b"", method="POST",
                                 headers={"Authorization": "Bearer test-key"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    return _slow_emulator_process


def get(emu: EmulatorProcess, path: str) -> Any:
    req = urllib.request.Request(emu.url + path, headers={"Authorization": "Bearer test-key"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def applied_objects(emu: EmulatorProcess) -> Counter[str]:
    """Every object the emulator applied (from its ledger), counted by its content."""
    seen: Counter[str] = Counter()
    since = 0
    while True:
        page = get(emu, f"/_emulator/ledger?since={since}&limit=1000&applied=1")["entries"]
        if not page:
            return seen
        for entry in page:
            for a in entry["applied"]:
                seen[a["array"] + json.dumps(a["object"], sort_keys=True)] += 1
        since = page[-1]["seq"]


def command(project: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "connector", "run", str(project / "pipelines" / "sig.yaml"),
            "--mode", "bulk", "--report-dir", str(out), *extra]  # fmt: skip


def env_for(emu: EmulatorProcess) -> dict[str, str]:
    return {**os.environ, "BRAZE_REST_ENDPOINT": emu.url, "BRAZE_API_KEY": "test-key"}


def wait_until_mid_flight(emu: EmulatorProcess, proc: subprocess.Popen[Any], applied: int = 600) -> None:
    end = time.monotonic() + 90
    while time.monotonic() < end:
        assert proc.poll() is None, "the run ended before it was signalled"
        objects = get(emu, "/_emulator/stats")["objects_applied"]
        if objects["events"] + objects["purchases"] >= applied:
            return
        time.sleep(0.05)
    raise AssertionError("the run never got going")


def finished_within(proc: subprocess.Popen[Any], seconds: float) -> int:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the run did not end within {seconds} s of the signal") from None


def check_files(out: Path, code: int) -> dict[str, Any]:
    """report.json/html and failed.csv are written and consistent; returns report.json."""
    doc: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (out / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")
    assert doc["exit_code"] == code and doc["invariant_ok"] is True
    r = doc["rows"]
    assert r["read"] == r["delivered"] + r["rejected"] + r["failed"] + r["skipped"]
    with (out / "failed.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    outcomes = Counter(row["_outcome"] for row in rows)
    assert outcomes["not_sent"] == doc["failed"]["not_sent"] and outcomes["unknown"] == doc["failed"]["unknown"]
    assert len(rows) == doc["failed"]["count"] + doc["failed"]["not_sent"]
    assert any(w.startswith("stopped: the run was stopped by SIG") for w in doc["warnings"])
    return doc


def assert_graceful(doc: dict[str, Any], emu: EmulatorProcess) -> None:
    """Everything read, every unsent row listed, nothing unknown, and Braze applied each delivered row once."""
    r = doc["rows"]
    assert r["read"] == EVENTS + PURCHASES  # rows never read were read unchecked and listed as not_sent
    assert doc["failed"]["unknown"] == 0 and r["failed"] == 0
    assert 0 < r["delivered"] < EVENTS + PURCHASES
    assert r["skipped"] == doc["failed"]["not_sent"]
    applied = applied_objects(emu)
    assert sum(applied.values()) == len(applied), "an object was applied twice"
    assert len(applied) == r["delivered"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_gracefully(project: Path, slow_emulator: EmulatorProcess, tmp_path: Path,
                                          sig: int) -> None:  # fmt: skip
    out = tmp_path / "out"
    proc = subprocess.Popen(command(project, out, "--quiet"), env=env_for(slow_emulator),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until_mid_flight(slow_emulator, proc)
    proc.send_signal(sig)
    code = finished_within(proc, GRACE_S + 5)
    stdout, stderr = proc.communicate()
    assert code == 4, stderr
    assert "exit code 4, stopped by a signal" in stdout
    assert f"warning: stopped: the run was stopped by {signal.Signals(sig).name}" in stdout
    assert_graceful(check_files(out, 4), slow_emulator)


def test_ctrl_c_in_a_terminal_stops_gracefully_and_sends_nothing_twice(
    project: Path, slow_emulator: EmulatorProcess, tmp_path: Path
) -> None:
    """Ctrl-C reaches the whole foreground process group; the HTTP child, in a session of its own, keeps
    answering the requests in flight, so none is resent and none is unknown."""
    import pty

    out = tmp_path / "out"
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", IN_TERMINAL, *command(project, out)[1:]],
                            stdin=slave, stdout=slave, stderr=slave, env=env_for(slow_emulator),
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    shown = bytearray()

    def drain() -> None:  # the progress display writes to the terminal; keep it flowing
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_until_mid_flight(slow_emulator, proc)
        os.write(master, b"\x03")  # the terminal's interrupt character: SIGINT to the foreground group
        code = finished_within(proc, GRACE_S + 5)
    finally:
        reader.join(5)
        os.close(master)
    assert code == 4, shown.decode(errors="replace")[-2000:]
    assert_graceful(check_files(out, 4), slow_emulator)


def test_a_second_signal_stops_at_once(project: Path, tmp_path: Path) -> None:
    """SIGINT twice to the process group: the second one does not wait for the slow answers (exit 130);
    the files are still whole, and requests in flight are listed as unknown.

    No clock: the pipeline's grace period (600 s) outlasts the answers (12 s), so a run that waited after the
    second signal, for the grace or for the answers, would get every answer and list nothing as unknown;
    `unknown > 0` is what only a stop at once leaves."""
    out = tmp_path / "out"
    doc = yaml.safe_load((project / "pipelines" / "sig.yaml").read_text(encoding="utf-8"))
    doc["write"]["stop_grace_s"] = 600
    pipeline = tmp_path / "sig.yaml"  # the module's data files, by absolute path
    for stream in doc["streams"]:
        stream["source"]["path"] = str(project / stream["source"]["path"])
    pipeline.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with start_subprocess("--latency-ms", "12000") as emu:
        cmd = [sys.executable, "-m", "connector", "run", str(pipeline), "--mode", "bulk", "--report-dir", str(out),
               "--quiet"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env_for(emu), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_until_mid_flight(emu, proc, applied=200)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        code = finished_within(proc, HANG_S)  # a hang detector: waiting out the grace would take 600 s
        stdout, stderr = proc.communicate()
        assert code == 130, stderr
        doc = check_files(out, 130)
        assert doc["failed"]["unknown"] > 0  # given up at once: the 12 s answers were not waited for
        # Unknown means Braze may have applied them: once each at most, never more than was sent.
        applied = applied_objects(emu)
        assert sum(applied.values()) == len(applied)
        assert doc["rows"]["delivered"] <= len(applied) <= doc["rows"]["delivered"] + doc["failed"]["unknown"]


# --------------------------------------------------------------------------- one run at a time


def test_a_second_concurrent_run_is_refused_naming_the_running_pid_and_the_lock(
    project: Path, slow_emulator: EmulatorProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(command(project, out, "--quiet"), env=env_for(slow_emulator),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until_mid_flight(slow_emulator, first)
        second = subprocess.run(command(project, out, "--quiet"), env=env_for(slow_emulator),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2
        assert f"pipeline 'sig' is already running (pid {first.pid}" in second.stderr
        assert "/.sig.lock" in second.stderr  # the lock beside report.dir's root (and --report-dir's)
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        assert finished_within(first, GRACE_S + 5) == 4
        first.communicate()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(
    project: Path, slow_emulator: EmulatorProcess, tmp_path: Path, emulator: Any
) -> None:
    out = tmp_path / "out"
    killed = subprocess.Popen(command(project, out, "--quiet"), env=env_for(slow_emulator),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until_mid_flight(slow_emulator, killed)
    assert [(r["status"], r["pid"]) for r in history(project)] == [("running", killed.pid)]
    killed.kill()  # kill -9: no handler runs, the lock file keeps its pid
    killed.wait()  # (its HTTP child finishes its few requests in flight within a latency, then exits)
    # The killed run sent events and purchases of these very files: a plain re-run is refused (exit 2,
    # test_crash_resume.py); this one says it means to send them again. A fast emulator: conftest's, in-process.
    again = subprocess.run(command(project, out, "--quiet", "--ignore-unfinished"), env=env_for(emulator),
                           capture_output=True, text=True, timeout=150)  # fmt: skip
    assert again.returncode == 0, again.stderr
    [taken] = [w for w in map(str.strip, again.stdout.splitlines()) if w.startswith("warning: lock file")]  # one, naming them all
    assert str(out / ".sig.lock") in taken and f" left by a run (pid {killed.pid}" in taken
    assert taken.endswith("no longer running (killed?); taken over")
    # The killed run is still in the history (its start line), as interrupted; the next run finished.
    runs = history(project)
    assert [(r["status"], r["pid"], r.get("exit_code")) for r in runs] == [
        ("interrupted", killed.pid, None), ("finished", runs[1]["pid"], 0)]  # fmt: skip
    table = history_cli(project).stdout.splitlines()
    assert f"interrupted (pid {killed.pid} gone, no report)" in table[1] and table[2].split()[4] == "0"


def history_cli(project: Path, *args: str) -> Any:
    """`braze-connector history` of the pipeline (the test's history file, BRAZE_CONNECTOR_HISTORY), by the CLI
    in-process (tests/cli_invoke.py): reading the history needs no process of its own."""
    res = invoke("history", str(project / "pipelines" / "sig.yaml"), *args, cwd=project,
                 env={"BRAZE_CONNECTOR_HISTORY": os.environ["BRAZE_CONNECTOR_HISTORY"]})  # fmt: skip
    assert res.exit_code == 0, res.stdout + res.stderr
    return res


def history(project: Path) -> list[dict[str, Any]]:
    """`braze-connector history --json` of the pipeline."""
    return [json.loads(line) for line in history_cli(project, "--json").stdout.splitlines()]
