"""RunLocks (connector/runlock.py): one holder at a time across processes, a killed holder's lock taken over."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connector.errors import RunLocked
from connector.runlock import RunLocks, lock_file_for

HOLD = """
import sys, time
from pathlib import Path
from connector.runlock import RunLocks
RunLocks().acquire("p", [Path(sys.argv[1])])
print("locked", flush=True)
time.sleep(600)
"""


def hold_in_another_process(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_file_names_are_file_safe(tmp_path: Path) -> None:
    assert lock_file_for(tmp_path, "daily users/eu") == tmp_path / ".daily_users_eu.lock"


def test_a_second_holder_is_refused_with_the_pid_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "reports" / ".p.lock"
    holder = hold_in_another_process(path)
    try:
        with pytest.raises(RunLocked) as info:
            RunLocks().acquire("p", [path])
        text = str(info.value)
        assert f"pid {holder.pid}" in text and str(path) in text and "already running" in text
        assert info.value.exit_code == 2
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("content", [b"", b"{not json", b'"a string"'])
def test_a_holder_whose_pid_is_not_recorded_is_described_without_a_question_mark(tmp_path: Path, content: bytes) -> None:
    """The holder locked the file but has not written its pid yet (or the file cannot be read)."""
    path = tmp_path / ".p.lock"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunLocked) as info:
            RunLocks().acquire("p", [path])
        text = str(info.value)
        assert "?" not in text and "pid was not recorded" in text and str(path) in text and "kill" not in text
    finally:
        os.close(fd)


def test_a_left_lock_file_that_cannot_be_read_is_taken_over_without_a_question_mark(tmp_path: Path) -> None:
    path = tmp_path / ".p.lock"
    path.write_bytes(b"{cut short")
    locks = RunLocks()
    locks.acquire("p", [path])
    [warning] = locks.warnings
    assert "?" not in warning and "could not be read" in warning and "taken over" in warning
    locks.release()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / ".p.lock"
    holder = hold_in_another_process(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads(path.read_text())["pid"] == holder.pid  # the file still names the dead run
    locks = RunLocks()
    locks.acquire("p", [path])
    [warning] = locks.warnings
    assert f"pid {holder.pid}" in warning and "no longer running" in warning and "taken over" in warning
    assert json.loads(path.read_text())["pid"] == os.getpid()
    locks.release()
    assert path.read_text() == ""  # released cleanly: the next run sees no leftover
    again = RunLocks()
    again.acquire("p", [path])
    assert again.warnings == []
    again.release()


def test_two_holders_in_one_process_conflict_and_all_or_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / ".a.lock", tmp_path / ".b.lock"
    first = RunLocks()
    first.acquire("p", [b])
    second = RunLocks()
    with pytest.raises(RunLocked):
        second.acquire("p", [a, b])
    assert second.held == []  # a was released when b was refused
    third = RunLocks()
    third.acquire("p", [a])
    third.release()
    first.release()


HOLD_PARTITION = """
import sys, time
from connector import load_pipeline
from connector.runlock import RunLocks, lock_files, shared_lock_files
p = load_pipeline(sys.argv[1])
label = sys.argv[2] if sys.argv[2] != "-" else None
RunLocks().acquire(p.name, lock_files(p, None, label), shared=shared_lock_files(p, None, label))
print("locked", flush=True)
time.sleep(600)
"""


def _pipeline_file(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(
        "name: p\nstreams:\n  - name: s\n    source: {path: x.csv}\n    kind: attributes\n"
        "    identifier: {external_id: id}\n    attributes: [{column: a}]\n",
        encoding="utf-8",
    )
    return tmp_path / "p.yaml"


def _try(tmp_path: Path, label: str | None) -> None:
    from connector import load_pipeline
    from connector.runlock import lock_files, shared_lock_files

    p = load_pipeline(_pipeline_file(tmp_path))
    locks = RunLocks()
    try:
        locks.acquire(p.name, lock_files(p, None, label), shared=shared_lock_files(p, None, label))
    finally:
        locks.release()


@pytest.mark.parametrize(
    ("running", "starting", "refused"),
    [
        ("p1of2", "p2of2", False),  # the other part of the same split runs beside it
        ("p1of2", "p1of2", True),  # the same part twice
        ("p1of2", None, True),  # an unpartitioned run beside partitions
        (None, "p1of2", True),  # partitions beside an unpartitioned run
        ("p1of2", "p1of3", True),  # a split of another count would send some rows twice
    ],
)
def test_partitions_lock_apart_but_not_beside_other_runs(
    tmp_path: Path, running: str | None, starting: str | None, refused: bool
) -> None:
    _pipeline_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_PARTITION, str(tmp_path / "p.yaml"), running or "-"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        if refused:
            with pytest.raises(RunLocked):
                _try(tmp_path, starting)
        else:
            _try(tmp_path, starting)
    finally:
        proc.kill()
        proc.wait(10)
    _try(tmp_path, starting)  # free again once the holder is gone


def test_a_partition_placeholder_is_not_part_of_the_lock_folder(tmp_path: Path) -> None:
    from connector import load_pipeline
    from connector.runlock import lock_files

    p = load_pipeline(_pipeline_file(tmp_path))
    (lock,) = lock_files(p, str(tmp_path / "reports" / "part" / "{partition}"), "p1of2")[1:]
    assert lock == tmp_path / "reports" / "part" / ".p.p1of2.lock"
