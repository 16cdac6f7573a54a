"""The bench smoke tests run one after another on one xdist worker (xdist_group "bench").

They share what the bench scripts share: bench/.data/ (tables written once, on first use), the report folder
/tmp/bench-reports (so the run lock of the `bench_users` pipeline), and the machine's CPU, which each of
them measures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("bench"))
