"""The CLI run in-process by typer's CliRunner, from a working folder, without the caller's BRAZE_* variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from connector.cli import app


def invoke(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """Run the CLI in-process (fast); stdout and stderr stay separate."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        clean = {k: None for k in os.environ if k.startswith("BRAZE_")}
        return CliRunner().invoke(app, list(args), env={**clean, **(env or {})})
    finally:
        os.chdir(old)
