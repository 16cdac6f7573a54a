"""Helpers of the Airflow and Dagster tests: skip-or-require the framework, and a small project.

These tests need the optional extras. Without them the test modules skip; in the CI step that installs
the extras (`BRAZE_CONNECTOR_INTEGRATIONS=1`, see .ci/run) a missing framework is an error instead, so
the tests there always run.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

USERS_CSV = "user_id,first_name,age\nu1,Ann,31\nu2,Bob,x\nu3,Cid,40\n"


def require(module: str) -> ModuleType:
    """The module, or a skip of the calling test module (an error where the extras must be installed)."""
    if os.environ.get("BRAZE_CONNECTOR_INTEGRATIONS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def write_project(root: Path, *, max_reject_fraction: float = 0.5) -> Path:
    """root/pipelines/users.yaml reading root/data/users.csv (one bad age); returns the pipeline path."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "users.csv").write_text(USERS_CSV, encoding="utf-8")
    doc: dict[str, Any] = {
        "name": "users",
        "destination": {"url": "https://rest.iad-01.braze.com"},  # the scheduler's endpoint overrides it
        "report": {"max_reject_fraction": max_reject_fraction},
        "streams": [{"name": "users", "source": {"path": "data/users.csv"}, "kind": "attributes",
                     "identifier": {"external_id": "user_id"},
                     "attributes": [{"column": "first_name"}, {"column": "age", "type": "integer"}]}],
    }  # fmt: skip
    (root / "pipelines").mkdir(exist_ok=True)
    path = root / "pipelines" / "users.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path
