"""The bench smoke tests, each with a temporary folder of its own, marked xdist_group "bench" (one worker for
all of them under --dist loadgroup). With pytest 9.2 and xdist 3.8 the mark needs tests/conftest.py's
pytest_collection_modifyitems (xdist writes the group into item._nodeid, which nodeid no longer reads:
pytest-dev/pytest-xdist#1386).

They share what the bench scripts share: bench/.data/ (tables written once, on first use) and the machine's
CPU, which each of them measures. The scripts put their report folders, sinks and servers under the system's
temporary folder (/tmp/bench-reports holds the `bench_users` pipeline's run lock): a TMPDIR of the test's
own keeps them apart from bench runs of other checkouts on the same machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


# Each bench smoke run is a subprocess with a timeout of its own (up to 600 s): that is the hang detector.
# pyproject.toml's 300 s per test is not, for them: at load ~27 on 2 cores (the suite beside a CPU hog and
# other benchmarks) test_bench_quick took 313 s of wall for 10 s of CPU and was failed by it.
TIMEOUT_S = 900


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("bench"))
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))


@pytest.fixture(autouse=True)
def _bench_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TMPDIR for the bench scripts the test starts: a fresh folder the `postgres` user can traverse (the
    bench's PostgreSQL server runs as that user when the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-test-"))
    os.chmod(folder, 0o755)
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
