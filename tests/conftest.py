"""Shared fixtures: a real Braze emulator on 127.0.0.1 (fresh per test), a factory for custom ones, and a
PostgreSQL server on loopback for the session (SQL sources); a throwaway redis-server (shared rate limits)."""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.emulator import EmulatorServer

# The workspace the tests deliver to, unless a test says otherwise:
# - it is in the /users/track/sync beta (`sync_beta=True`): every key may call /users/track/sync, as the
#   connector's sync-mode tests need. A plain emulator refuses it with 403 Access Denied (tests pass
#   `sync_beta=False` to see that);
# - it has the Canvases the connector's tests and sample pipelines trigger (tests/integration/test_writer.py
#   "cv-1", pipelines/canvas_trigger.yaml); any other canvas_id gets Braze's 400, so a test triggering its
#   own Canvas registers it (`canvases=("c",)`, or `{"c": "paused"}`).
TEST_WORKSPACE: dict[str, Any] = {
    "api_keys": ("test-key",),
    "sync_beta": True,
    "canvases": ("cv-1", "9b1d2c3e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"),
}


ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Bytecode for connector/ and bench/ written once, before the workers start, and the tests' own kept.

    Where PYTHONDONTWRITEBYTECODE=1 (this environment and CI set it) every CLI, emulator or bench process the
    tests start compiled each connector module it imported again (~0.1 s of CPU a process, a few hundred
    processes), and each worker rewrote every test module's asserts again (~3 s of CPU a worker). compileall
    writes what is missing or stale (a stat per file when nothing is); with sys.dont_write_bytecode off in this
    process pytest caches its rewritten test modules for the next run. The started processes keep the
    variable: they read the bytecode, they write none. Everything lands in __pycache__/ (.gitignore).
    """
    sys.dont_write_bytecode = False
    for folder, depth in ((ROOT / "connector", 10), (ROOT / "bench", 0), (ROOT / "tests", 1)):
        # test modules are left to pytest: it imports its own rewritten bytecode, not compileall's
        compileall.compile_dir(folder, maxlevels=depth, quiet=2, rx=re.compile(r"(^|/)test_[^/]*\.py$"))


@pytest.hookimpl(trylast=True)  # after xdist's own hook has suffixed the grouped items' node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Make `xdist_group` marks work again under pytest 9.2 (`--dist loadgroup`, pyproject.toml's addopts).

    xdist 3.8 puts an item's group into `item._nodeid` ("path::test@group"), which its scheduler reads from
    the ids the workers report; pytest 9.2 builds `nodeid` from `item._id` instead, so the suffix was lost
    and every group spread over both workers (pytest-dev/pytest-xdist#1386). Here the suffixed id becomes
    the item's id. The groups: "bench" (tests/bench/conftest.py: the bench smoke runs, one at a time, with
    bench/.data/ written by one worker) and "gx" (the tests that import Great Expectations in the worker:
    one worker pays that import, ~4 s of CPU, not both).
    """
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2; before it, nodeid reads _nodeid itself
    except ImportError:
        return
    for item in items:
        suffixed = item.__dict__.get("_nodeid")
        if isinstance(suffixed, str) and suffixed != item.nodeid:
            try:
                item._id = NodeId.parse(suffixed)  # type: ignore[attr-defined]
            except Exception:  # pytest's private API moved on: the groups spread again, the tests still run
                return


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of the repository's own pipelines append their history under tmp_path, not under reports/."""
    monkeypatch.setenv("BRAZE_CONNECTOR_HISTORY", str(tmp_path / "history.jsonl"))
sys.path.insert(0, os.path.dirname(__file__))
from redis_server import RedisServer, free_port, redis_server_path  # noqa: E402


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh in-process emulator of TEST_WORKSPACE: key "test-key", the sync beta granted, the test Canvases.

    Has .url, .api_key, .stats(), .ledger(), .user().
    """
    with EmulatorServer(**TEST_WORKSPACE) as server:
        yield server


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators with custom EmulatorServer kwargs over TEST_WORKSPACE's; all are stopped at teardown.

    A kwarg replaces the default of the same name (e.g. `sync_beta=False` for Braze's default, `canvases=`).
    """
    started: list[EmulatorServer] = []

    def make(**kwargs: Any) -> EmulatorServer:
        server = EmulatorServer(**{**TEST_WORKSPACE, **kwargs}).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def write_project(root: Path, *, name: str, csv: str, attributes: list[dict[str, Any]], **report: Any) -> Path:
    """root/pipelines/<name>.yaml: one attributes stream (external_id user_id) reading root/data/users.csv."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "users.csv").write_text(csv, encoding="utf-8")
    doc = {"name": name, "report": report,
           "streams": [{"name": "users", "source": {"path": "data/users.csv"}, "kind": "attributes",
                        "identifier": {"external_id": "user_id"}, "attributes": attributes}]}  # fmt: skip
    (root / "pipelines").mkdir(exist_ok=True)
    path = root / "pipelines" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """write_project() under tmp_path (or `root=`): a small project whose pipeline file it returns."""

    def make(root: Path | None = None, **kwargs: Any) -> Path:
        return write_project(root or tmp_path, **kwargs)

    return make


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or pg_ctl on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own (initdb in a temporary folder, trust auth, loopback, a free port) for
    the session; its URL (user postgres, database postgres). As root the server runs as the `postgres` user,
    since PostgreSQL refuses to run as root. Skipped where the server binaries are missing, except in CI."""
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries not found; CI must install them (apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql to run these tests)")
    root = Path(tempfile.mkdtemp(prefix="braze-pg-"))
    runas: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
        runas = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    log = root / "server.log"

    def run(*cmd: str) -> None:
        done = subprocess.run([*runas, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}{tail}")

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*runas, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port (stopped at teardown); skipped where redis-server is not
    installed, except in CI (CI=true), where that is a failure."""
    if redis_server_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with RedisServer() as server:
        yield server
