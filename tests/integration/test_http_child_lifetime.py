"""The HTTP child process of a bulk run: spawned before the local stages, gone on every way a run ends.

The child (connector/delivery/transport/child.py) starts while the first chunk is read and validated, so
a run that fails before its first request has a child to clean up: these runs must leave none behind.
`braze-connector run` starts it earlier still, at its start (a spare, delivery/spare.py), when the
pipeline file and flags say the run sends through it: the spare too is gone however the command ends,
handed to the transport or not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke
from processes import running
from test_pipeline_run import env_for, project, users_stream

from connector import StopToken, run_pipeline
from connector.delivery import spare
from connector.delivery.transport import process
from connector.emulator import EmulatorServer
from connector.errors import ConfigError
from connector.runlock import RunLocks, lock_files

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
    from connector import stages

    def broken(self: Any, plan: Any) -> None:
        raise RuntimeError("a bug while reading the first chunk")

    monkeypatch.setattr(stages.Run, "stream", broken)
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


@pytest.mark.xdist_group("sample_users_probe")  # one worker: its module fixture runs once, not once a worker
def test_the_sample_users_run_sends_its_first_request_without_pandas(sample_users_probe: dict[str, Any]) -> None:
    """pandas costs ~0.25 s of CPU to import, and pyarrow imports it at its first conversion of Python values
    (connector/arrow_values.py). pipelines/users.yaml as shipped (the sample CSV, users_suite, a time cell
    Arrow's ISO cast refuses) sends its first request before anything imports it."""
    assert sample_users_probe["exit_code"] == "0"
    assert sample_users_probe["pandas"] is False  # pandas not imported when the first request left
    assert sample_users_probe["sent"] > 0
    assert ",cast.time,signup_at," in sample_users_probe["rejects"]  # the refused time cell was read without pandas


# --------------------------------------------------------------------------- the spare (delivery/spare.py)
# `braze-connector run` starts the child at its start when the pipeline file and flags say the run sends
# through it; the transport takes it when the run builds its client. Every way the command ends stops it.


@pytest.fixture
def spares(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pid of every spare the command started."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    pids: list[int] = []
    real = spare.start

    def recording(*a: Any, **kw: Any) -> int | None:
        pid = real(*a, **kw)
        if pid is not None:
            pids.append(pid)
        return pid

    monkeypatch.setattr(spare, "start", recording)
    return pids


def run_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> Any:
    return invoke("run", "pipelines/t.yaml", "--quiet", "--report-dir", "r", *args, cwd=tmp_path, env=env)


def test_a_delivering_run_sends_through_the_spare_it_started(
    emulator: EmulatorServer, tmp_path: Path, spares: list[int], spawned: list[int]
) -> None:
    project(tmp_path, [users_stream()], write=BULK)
    result = run_cli(tmp_path, env=env_for(emulator))
    assert result.exit_code == 0, result.output
    assert len(spares) == 1 and spawned == spares  # the transport took the spare, spawned none of its own
    assert len(emulator.ledger()) > 0
    assert not running(spares[0])


@pytest.mark.parametrize(
    ("write", "args"),
    [
        ({}, ()),  # mode auto: the choice needs the row estimate (the child starts with the client)
        ({}, ("--mode", "sync")),  # sync sends with requests, in this process
        ({"mode": "bulk", "transport": "aiohttp"}, ()),
        (BULK, ("--dry-run",)),
    ],
    ids=["auto", "sync", "aiohttp-in-process", "dry-run"],
)
def test_a_run_that_may_not_send_through_the_child_starts_no_spare(
    emulator: EmulatorServer, tmp_path: Path, spares: list[int], spawned: list[int], write: dict[str, str],
    args: tuple[str, ...],
) -> None:  # fmt: skip
    project(tmp_path, [users_stream()], write=write)
    result = run_cli(tmp_path, *args, env=env_for(emulator))
    assert result.exit_code == 0, result.output
    assert spares == []
    assert not any(running(pid) for pid in spawned)


def test_validate_starts_no_spare(tmp_path: Path, spares: list[int], spawned: list[int]) -> None:
    project(tmp_path, [users_stream()], write=BULK)
    result = invoke("validate", "pipelines/t.yaml", "--quiet", "--report-dir", "r", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert spares == [] and spawned == []


@pytest.mark.parametrize(
    "args", [("--include-unknown",), ("--partition", "3/2")], ids=["flag-error", "partition-error"]
)
def test_a_run_refused_for_its_flags_stops_its_spare(
    emulator: EmulatorServer, tmp_path: Path, spares: list[int], spawned: list[int], args: tuple[str, ...]
) -> None:
    project(tmp_path, [users_stream()], write=BULK)
    result = run_cli(tmp_path, *args, env=env_for(emulator))
    assert result.exit_code == 2, result.output
    assert len(spares) == 1 and spawned == []  # never handed over
    assert not running(spares[0])


def test_a_run_refused_for_its_lock_stops_its_spare(
    emulator: EmulatorServer, tmp_path: Path, spares: list[int], spawned: list[int]
) -> None:
    p = project(tmp_path, [users_stream()], write=BULK)
    held = RunLocks()
    held.acquire(p.name, lock_files(p, tmp_path / "r"))  # another run holds the pipeline's lock
    try:
        result = run_cli(tmp_path, env=env_for(emulator))
    finally:
        held.release()
    assert result.exit_code == 2 and "already running" in result.output
    assert len(spares) == 1 and spawned == []
    assert not running(spares[0])
    assert emulator.ledger() == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt], ids=["bug", "ctrl-c"])
def test_a_run_that_ends_before_its_client_stops_its_spare(
    emulator: EmulatorServer, tmp_path: Path, spares: list[int], spawned: list[int],
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException],
) -> None:  # fmt: skip
    """A bug, or Ctrl-C (KeyboardInterrupt) where no signal handler is installed, while the streams are planned."""
    from connector import pipeline

    def broken(*a: Any, **kw: Any) -> None:
        raise error("while planning the streams")

    monkeypatch.setattr(pipeline, "_plan", broken)
    project(tmp_path, [users_stream()], write=BULK)
    result = run_cli(tmp_path, env=env_for(emulator))
    assert result.exit_code == (130 if error is KeyboardInterrupt else 1)
    assert isinstance(result.exception, SystemExit if error is KeyboardInterrupt else RuntimeError)
    assert len(spares) == 1 and spawned == []
    assert not running(spares[0])


def test_a_spare_whose_environment_holds_the_runs_key_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[int]
) -> None:
    """The spare's environment is checked against the key the run sends with (it may not be the one the
    command read): one holding it is stopped and the transport spawns a child without it."""
    p = project(tmp_path, [users_stream()], write=BULK)
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("BRAZE_API_KEY", "key-read-by-the-command")
    monkeypatch.setenv("SOME_SETTING", "other-key")
    pid = spare.start(p, None, offline=False, resume=False)
    assert pid is not None
    environ = exec_done(pid) + Path(f"/proc/{pid}/environ").read_bytes()
    assert b"key-read-by-the-command" not in environ and b"other-key" in environ
    transport = process.ProcessTransport("http://127.0.0.1:9", {"Authorization": "Bearer other-key"},
                                         concurrency=1, timeout_s=5)  # fmt: skip
    try:
        assert not running(pid)
        assert spawned and spawned[0] != pid
        assert b"other-key" not in exec_done(spawned[0]) + Path(f"/proc/{spawned[0]}/environ").read_bytes()
    finally:
        transport.close(5)
    assert not running(spawned[0])


def exec_done(pid: int) -> bytes:
    """The process's command line, once it has one: Popen returns as exec closes the close-on-exec pipe, a
    moment before the kernel has set up the new program's arguments and environment."""
    import time

    end = time.monotonic() + 30
    while not (cmdline := Path(f"/proc/{pid}/cmdline").read_bytes()):
        assert time.monotonic() < end, "the process never got a command line"
        time.sleep(0.01)
    return cmdline


# Run in a `braze-connector run` process: print the spare's pid, then block where the test says.
_START_UP = """
import signal, sys, time
# Python makes SIGINT a KeyboardInterrupt only if it was not ignored at start: a suite started in the
# background of a non-interactive shell (`./script &`) inherits it ignored, and this test timed out there.
signal.signal(signal.SIGINT, signal.default_int_handler)
from connector.delivery import spare
real = spare.start
def start(*a, **k):
    pid = real(*a, **k)
    sys.stderr.write(f"SPARE {pid}\\n")
    sys.stderr.flush()
    time.sleep(60)  # start-up: before the run's signal handlers; the test signals the process here
    return pid
spare.start = start
from connector.cli import main
sys.argv = ["braze-connector", *sys.argv[1:]]
main()
"""


def spare_pid(proc: subprocess.Popen[str]) -> int:
    """The pid the command printed for its spare (the process then waits to be signalled)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("SPARE "):
            return int(line.split()[1])
    raise AssertionError(f"no spare started (exit code {proc.wait(30)})")


def gone_within(pid: int, seconds: float) -> bool:
    """Wait (bounded) until the process is no longer running; False if it still runs after `seconds`."""
    import time

    end = time.monotonic() + seconds
    while running(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_stops_the_spare(emulator: EmulatorServer, tmp_path: Path, sig: int) -> None:
    """Before the run's handlers: SIGINT is a KeyboardInterrupt (the command stops its spare, exit 130);
    SIGTERM kills the command outright, and the spare, its stdin closed, reads EOF for its config and exits."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    project(tmp_path, [users_stream()], write=BULK)
    proc = subprocess.Popen(
        [sys.executable, "-c", _START_UP, "run", "pipelines/t.yaml", "--quiet", "--report-dir", "r"],
        cwd=tmp_path, env={**os.environ, **env_for(emulator)}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pid = spare_pid(proc)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert code == (-signal.SIGTERM if sig == signal.SIGTERM else 130)
    if sig == signal.SIGINT:
        assert not running(pid)  # stopped (and reaped) before the command exited
    assert gone_within(pid, 60), "the spare outlived its command"
    assert emulator.ledger() == []


def test_a_signal_after_the_handlers_before_the_first_request_leaves_no_child(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """SIGTERM once the run handles signals, before anything is sent: a graceful stop (exit 4), nothing sent,
    the spare (handed over or not) gone."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    project(tmp_path, [users_stream()], write=BULK)
    code = _START_UP.replace(
        "    time.sleep(60)  # start-up: before the run's signal handlers; the test signals the process here\n", ""
    ).replace(
        "from connector.cli import main\n",
        "import contextlib, os, signal\n"
        "import connector.stop as stop\n"
        "real_handle = stop.handle_signals\n"
        "@contextlib.contextmanager\n"
        "def handle(token):\n"
        "    with real_handle(token):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        for _ in range(600):\n"
        "            if token.stopping:\n"
        "                break\n"
        "            time.sleep(0.05)\n"
        "        yield\n"
        "stop.handle_signals = handle\n"
        "from connector.cli import main\n",
    )
    res = subprocess.run([sys.executable, "-c", code, "run", "pipelines/t.yaml", "--quiet", "--report-dir", "r"],
                         cwd=tmp_path, env={**os.environ, **env_for(emulator)}, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 4, res.stderr
    pid = int(next(line for line in res.stderr.splitlines() if line.startswith("SPARE ")).split()[1])
    assert not running(pid)
    assert emulator.ledger() == []


# Modules a CSV run of a pipeline without delta, mirror, SQL, --partition or alerts has no use for before
# its first request; each is imported where it is needed (BENCHMARKS.md, "Time to the first request").
LAZY_MODULES = {"pyarrow.parquet", "connector.readers.parquet_reader", "connector.readers.sql", "sqlite3",
                "connector.delta.state", "connector.delta.stores", "connector.delta.incremental",
                "connector.delivery.mirror", "connector.delta.removed", "connector.readers.partition",
                "connector.report.webhook", "http.client", "urllib.request",
                # startup3: published (alerts, metrics) when the run ends; a suite without regex or GX
                # expectations; report.html's entities when it is written; the `upload` command's modules
                "connector.report.publish", "connector.report.alerts", "connector.report.metrics",
                "connector.validation.patterns", "connector.validation.gx_run", "great_expectations",
                "html.entities", "connector.config.upload", "connector.readers.infer"}  # fmt: skip


@pytest.fixture(scope="module")
def sample_users_probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of pipelines/users.yaml through the command's entry point (__main__.main, which calls cli.main)
    in a fresh interpreter, against an emulator of its own, recording at its first request what the two tests
    below check: whether pandas, and which of LAZY_MODULES, were imported, and the cyclic collections made
    since the command started. One fresh process for both (a CLI start-up and a run, ~0.8 s of CPU, each)."""
    tmp_path = tmp_path_factory.mktemp("sample_users_probe")
    prelude = (
        "import gc, sys\n"
        "collections = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'stop' and collections.append(info['generation']))\n"
        f"lazy = {sorted(LAZY_MODULES)!r}\n"
    )
    seen = "(sorted(set(lazy) & set(sys.modules)), len(collections), max(collections, default=0), 'pandas' in sys.modules)"
    with EmulatorServer(api_keys=("test-key",)) as emulator:
        out = _first_request_probe(emulator, tmp_path, prelude=prelude, seen=seen, entry="connector.__main__",
                                   before_main="collections.clear()  # those of the imports above, the test's own\n")  # fmt: skip
        sent = len(emulator.ledger())
    exit_code, got = out.splitlines()[-1].split(" ", 1)
    imported, collected, oldest, pandas = eval(got)[0]  # noqa: S307 (our own repr)
    return {"exit_code": exit_code, "imported": imported, "collected": collected, "oldest": oldest,
            "pandas": pandas, "sent": sent, "rejects": (tmp_path / "r" / "rejects.csv").read_text(encoding="utf-8")}  # fmt: skip


@pytest.mark.xdist_group("sample_users_probe")  # one worker: its module fixture runs once, not once a worker
def test_the_sample_users_run_starts_without_the_modules_it_does_not_use(sample_users_probe: dict[str, Any]) -> None:
    """`python -m connector run pipelines/users.yaml --mode bulk` (the command's entry point, __main__.main):
    when its first request leaves, none of LAZY_MODULES is imported, and the cyclic garbage collector, paused
    from the command's start until the run streams rows (quiet_gc.py), has made no full collection and only
    young ones once the run streams rows (it made ~130, 3 of them full, before the pause existed)."""
    assert sample_users_probe["exit_code"] == "0"
    assert sample_users_probe["imported"] == []
    collected, oldest = sample_users_probe["collected"], sample_users_probe["oldest"]
    assert oldest < 2 and collected < 5, (collected, oldest)
    assert sample_users_probe["sent"] > 0


# The probe patches the transport when the run imports it (importing it first would import pydantic and the
# pipeline models before the command's own start-up, so the probe would measure another start-up than users get).
_WHEN_IMPORTED = (
    "class Watch:\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name != 'connector.delivery.transport.process':\n"
    "            return None\n"
    "        sys.meta_path.remove(self)\n"
    "        import importlib.util\n"
    "        spec = importlib.util.find_spec(name)\n"
    "        real = spec.loader.exec_module\n"
    "        def exec_module(module):\n"
    "            real(module)\n"
    "            patch(module)\n"
    "        spec.loader.exec_module = exec_module\n"
    "        return spec\n"
    "sys.meta_path.insert(0, Watch())\n"
)


def _first_request_probe(emulator: EmulatorServer, tmp_path: Path, *, prelude: str, seen: str, entry: str,
                         before_main: str = "") -> str:  # fmt: skip
    """Run pipelines/users.yaml (sample data, users_suite) against the emulator through `entry`'s main() in a
    fresh interpreter, recording the expression `seen` when the HTTP child is first started or sent to (the
    first request); stdout, whose last line is '<exit code> [<seen>]'."""
    root = Path(__file__).resolve().parents[2]
    for folder in ("sample_data", "expectations"):
        (tmp_path / folder).symlink_to(root / folder)
    (tmp_path / "pipelines").mkdir()
    text = (root / "pipelines" / "users.yaml").read_text(encoding="utf-8")
    assert "url: local" in text
    pipeline = tmp_path / "pipelines" / "users.yaml"
    pipeline.write_text(text.replace("url: local", f"url: {emulator.url}"), encoding="utf-8")
    code = (
        prelude + "seen = []\n"
        "def first(real):\n"
        "    def call(*a, **k):\n"
        "        if not seen:\n"
        f"            seen.append({seen})\n"
        "        return real(*a, **k)\n"
        "    return call\n"
        "def patch(p):\n"
        "    p._Child.start, p._Child.send = first(p._Child.start), first(p._Child.send)\n"
        "    p._Child.start_many = first(p._Child.start_many)  # a group of first attempts (volleys.py)\n"
        + _WHEN_IMPORTED + f"from {entry} import main\n"
        f"sys.argv = ['braze-connector', 'run', {str(pipeline)!r}, '--mode', 'bulk', '--quiet',\n"
        f"            '--report-dir', {str(tmp_path / 'r')!r}]\n"
        + before_main + "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print(code, seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | env_for(emulator)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=tmp_path
    ).stdout
