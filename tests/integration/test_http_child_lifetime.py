"""The HTTP child process of a bulk run: spawned before the local stages, gone on every way a run ends.

The child (connector/delivery/transport/child.py) starts while the first chunk is read and validated, so
a run that fails before its first request has a child to clean up: these runs must leave none behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import running
from test_pipeline_run import env_for, project, users_stream

from connector import StopToken, run_pipeline
from connector.delivery.transport import process
from connector.emulator import EmulatorServer
from connector.errors import ConfigError

pytestmark = pytest.mark.timeout(120)

BULK = {"mode": "bulk", "transport": "aiohttp-process"}


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pid of every HTTP child started during the test."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    pids: list[int] = []
    real = process._Child.__init__

    def recording(self: Any, *a: Any, **kw: Any) -> None:
        real(self, *a, **kw)
        pids.append(self.proc.pid)

    monkeypatch.setattr(process._Child, "__init__", recording)
    return pids


def test_a_run_stopped_before_its_first_request_leaves_no_child(
    emulator: EmulatorServer, tmp_path: Path, spawned: list[int]
) -> None:
    p = project(tmp_path, [users_stream()], write=BULK)
    token = StopToken()
    token.request("stopped before it began")
    report = run_pipeline(p, report_dir=tmp_path / "r", env=env_for(emulator), stop=token, raise_on_failure=False)
    assert report.exit_code == 4 and report.rows["delivered"] == 0
    assert emulator.ledger() == []  # no request left
    assert len(spawned) == 1, "the child is spawned before the first chunk is read"
    assert not running(spawned[0])


def test_an_exception_before_the_first_request_leaves_no_child(
    emulator: EmulatorServer, tmp_path: Path, spawned: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector import pipeline

    def broken(self: Any, plan: Any) -> None:
        raise RuntimeError("a bug while reading the first chunk")

    monkeypatch.setattr(pipeline._Run, "stream", broken)
    p = project(tmp_path, [users_stream()], write=BULK)
    with pytest.raises(RuntimeError, match="first chunk"):
        run_pipeline(p, report_dir=tmp_path / "r", env=env_for(emulator))
    assert emulator.ledger() == []
    assert len(spawned) == 1
    assert not running(spawned[0])


def test_a_config_error_starts_no_child(tmp_path: Path, spawned: list[int]) -> None:
    p = project(tmp_path, [users_stream()], write=BULK)
    with pytest.raises(ConfigError):
        run_pipeline(p, report_dir=tmp_path / "r", env={"BRAZE_REST_ENDPOINT": "http://127.0.0.1:9"})  # no key
    assert spawned == []


def test_the_child_imports_neither_the_config_nor_the_data_libraries() -> None:
    """What the child imports is what it must load before its first request: aiohttp, not pydantic or pandas."""
    code = (
        "import sys, connector.delivery.transport.child as c, aiohttp\n"
        "heavy = {'pandas', 'pyarrow', 'pydantic', 'requests', 'connector.config', 'connector.pipeline'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_running_counts_a_zombie_as_gone() -> None:
    """The check the tests above use: a child killed but not yet reaped (a zombie) is no longer running."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert running(child.pid)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it exits, without reaping it
        assert Path(f"/proc/{child.pid}").exists() and not running(child.pid)  # a zombie: not running
    finally:
        child.kill()
        child.wait(10)
    assert not running(child.pid)


def test_a_bulk_run_leaves_the_http_libraries_to_the_child(emulator: EmulatorServer, tmp_path: Path) -> None:
    """Before its first request the main process imports only what it uses: the HTTP child has aiohttp, the
    main process neither aiohttp nor requests (~35 ms, only for a *_proxy variable), nor the emulator's
    server and handlers (the `emulator` command imports them when it runs)."""
    project(tmp_path, [users_stream()], write=BULK)
    code = (
        "import sys\n"
        "from connector.cli import main\n"
        f"sys.argv = ['braze-connector', 'run', {str(tmp_path / 'pipelines' / 't.yaml')!r}, '--quiet',\n"
        f"            '--report-dir', {str(tmp_path / 'r')!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = {'requests', 'aiohttp', 'connector.emulator.server', 'connector.emulator.handlers'}\n"
        "print(code, sorted(heavy & set(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | env_for(emulator)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines()[-1] == "0 []"
    assert len(emulator.ledger()) > 0  # it did send, through the child


def test_the_sample_users_run_sends_its_first_request_without_pandas(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """pandas costs ~0.25 s of CPU to import, and pyarrow imports it at its first conversion of Python values
    (connector/arrow_values.py). pipelines/users.yaml as shipped (the sample CSV, users_suite, a time cell
    Arrow's ISO cast refuses) sends its first request before anything imports it."""
    root = Path(__file__).resolve().parents[2]
    for folder in ("sample_data", "expectations"):
        (tmp_path / folder).symlink_to(root / folder)
    (tmp_path / "pipelines").mkdir()
    text = (root / "pipelines" / "users.yaml").read_text(encoding="utf-8")
    assert "url: local" in text
    pipeline = tmp_path / "pipelines" / "users.yaml"
    pipeline.write_text(text.replace("url: local", f"url: {emulator.url}"), encoding="utf-8")
    code = (
        "import sys\n"
        "import connector.delivery.transport.process as p\n"
        "seen = []\n"
        "def first(real):\n"
        "    def call(*a, **k):\n"
        "        if not seen:\n"
        "            seen.append('pandas' in sys.modules)\n"
        "        return real(*a, **k)\n"
        "    return call\n"
        "p._Child.start, p._Child.send = first(p._Child.start), first(p._Child.send)\n"
        "from connector.cli import main\n"
        f"sys.argv = ['braze-connector', 'run', {str(pipeline)!r}, '--mode', 'bulk', '--quiet',\n"
        f"            '--report-dir', {str(tmp_path / 'r')!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print(code, seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | env_for(emulator)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=tmp_path
    ).stdout
    assert out.splitlines()[-1] == "0 [False]"  # exit code 0; pandas not imported when the first request left
    assert len(emulator.ledger()) > 0
    rejects = (tmp_path / "r" / "rejects.csv").read_text(encoding="utf-8")
    assert ",cast.time,signup_at," in rejects  # the refused time cell was read (and rejected) without pandas
