"""Fixtures of the Airflow and Dagster tests: a small project (3 users, one bad age) for the emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

USERS_CSV = "user_id,first_name,age\nu1,Ann,31\nu2,Bob,x\nu3,Cid,40\n"


@pytest.fixture
def users_project(make_project: Callable[..., Path]) -> Callable[..., Path]:
    """users_project(root=None, max_reject_fraction=0.5) -> pipelines/users.yaml; the URL is overridden by
    the scheduler's endpoint."""

    def make(root: Path | None = None, max_reject_fraction: float = 0.5) -> Path:
        path = make_project(root, name="users", csv=USERS_CSV, max_reject_fraction=max_reject_fraction,
                            attributes=[{"column": "first_name"}, {"column": "age", "type": "integer"}])  # fmt: skip
        return path

    return make
