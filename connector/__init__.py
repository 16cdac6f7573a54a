"""braze-connector: move CSV and Parquet tables into Braze, with validation, rejects and a local emulator."""

from __future__ import annotations

from connector.config import Pipeline, load_pipeline
from connector.errors import ConfigError, ConnectorError, SourceError

__all__ = ["ConfigError", "ConnectorError", "Pipeline", "SourceError", "load_pipeline"]
__version__ = "0.1.0"
