"""Fixtures of the Airflow and Dagster tests (helpers in scheduler_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scheduler_helpers import write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """tmp_path/pipelines/users.yaml reading tmp_path/data/users.csv (3 rows, one bad age)."""
    return write_project(tmp_path)
