"""braze-connector: move CSV and Parquet tables into Braze, with validation, rejects and a local emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.config import Pipeline, load_pipeline
from connector.errors import ConfigError, ConnectorError, SourceError
from connector.version import __version__

if TYPE_CHECKING:
    from connector.pipeline import run_pipeline
    from connector.report import RunReport

__all__ = [
    "ConfigError",
    "ConnectorError",
    "Pipeline",
    "RunReport",
    "SourceError",
    "__version__",
    "load_pipeline",
    "run_pipeline",
]


def __getattr__(name: str) -> Any:
    # run_pipeline and RunReport pull in pyarrow, requests and the writer: import them on first use only,
    # so `import connector` (and the CLI's --help) stays fast.
    if name == "run_pipeline":
        from connector.pipeline import run_pipeline

        return run_pipeline
    if name == "RunReport":
        from connector.report import RunReport

        return RunReport
    raise AttributeError(f"module 'connector' has no attribute {name!r}")
