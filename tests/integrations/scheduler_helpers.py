"""Helper of the Airflow and Dagster tests: skip, or require, the framework.

These tests need the optional extras. Without them the test modules skip; in the CI step that installs
the extras (`BRAZE_CONNECTOR_INTEGRATIONS=1`, see .ci/run) a missing framework is an error instead, so
the tests there always run.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str) -> ModuleType:
    """The module, or a skip of the calling test module (an error where the extras must be installed)."""
    if os.environ.get("BRAZE_CONNECTOR_INTEGRATIONS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)
