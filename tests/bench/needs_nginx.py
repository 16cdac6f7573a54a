"""The bench smoke tests' shared precondition: nginx with the echo module (bench/sink.py's loopback sink)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sink import nginx_available  # noqa: E402


def require_nginx() -> None:
    """Skip the calling test without nginx, or fail it where .ci/run requires nginx (BENCH_REQUIRE_NGINX=1)."""
    reason = nginx_available()
    if reason:
        if os.environ.get("BENCH_REQUIRE_NGINX") == "1":
            pytest.fail(f"nginx is required here: {reason}")
        pytest.skip(reason)
