"""braze-connector: move CSV and Parquet tables into Braze, with validation, rejects and a local emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.errors import ConfigError, ConnectorError, RunLocked, SourceError, UnfinishedRun
from connector.stop import StopToken
from connector.version import __version__

if TYPE_CHECKING:
    from connector.config import Pipeline, load_pipeline
    from connector.pipeline import run_pipeline
    from connector.report import RunFailed, RunReport

__all__ = [
    "ConfigError",
    "ConnectorError",
    "Pipeline",
    "RunFailed",
    "RunLocked",
    "RunReport",
    "SourceError",
    "StopToken",
    "UnfinishedRun",
    "__version__",
    "load_pipeline",
    "run_pipeline",
]


def __getattr__(name: str) -> Any:
    # run_pipeline and RunReport pull in pyarrow, requests and the writer, Pipeline pydantic: import them on
    # first use only, so `import connector` (the CLI's --help, the HTTP child process) stays fast.
    if name in ("Pipeline", "load_pipeline"):
        from connector import config

        return getattr(config, name)
    if name == "run_pipeline":
        from connector.pipeline import run_pipeline

        return run_pipeline
    if name == "RunReport":
        from connector.report import RunReport

        return RunReport
    if name == "RunFailed":
        from connector.report import RunFailed

        return RunFailed
    raise AttributeError(f"module 'connector' has no attribute {name!r}")
