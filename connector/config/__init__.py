"""The pipeline file: pydantic models (models.py; Values and object mappings in mappings.py), load_pipeline() and
dump_pipeline() (loading.py), the destination (destination.py), the pipeline of an `upload` (upload.py).

A pipeline has one or more streams; each stream reads one source, maps its rows into one kind of Braze
object, checks them, and delivers them to the pipeline's destination.
"""

from connector.config.alerts import Alerts
from connector.config.loading import dump_pipeline, load_pipeline, pipeline_json_schema
from connector.config.mappings import (
    AttributeField,
    CanvasMapping,
    ColumnValue,
    EventMapping,
    Identifier,
    LiveActivityMapping,
    Prioritization,
    Properties,
    PurchaseMapping,
    UserAliasId,
    Value,
    ValueType,
)
from connector.config.models import (
    BULK_WORKERS,
    DEFAULT_RATE_LIMITS,
    SYNC_WORKERS,
    Destination,
    EmbeddedEmulator,
    EndpointName,
    ObjectKindName,
    Pipeline,
    RateLimit,
    Report,
    Retry,
    SharedLimits,
    State,
    Stream,
    Write,
)
from connector.config.sources import MAX_COLUMNS, MAX_FIELD_BYTES, Connection, CsvOptions, Incremental, Source

__all__ = [
    "Alerts",
    "AttributeField",
    "BULK_WORKERS",
    "CanvasMapping",
    "DEFAULT_RATE_LIMITS",
    "MAX_COLUMNS",
    "MAX_FIELD_BYTES",
    "ColumnValue",
    "Connection",
    "CsvOptions",
    "Destination",
    "EmbeddedEmulator",
    "EndpointName",
    "EventMapping",
    "Identifier",
    "Incremental",
    "LiveActivityMapping",
    "ObjectKindName",
    "Pipeline",
    "Prioritization",
    "Properties",
    "PurchaseMapping",
    "RateLimit",
    "Report",
    "Retry",
    "SYNC_WORKERS",
    "SharedLimits",
    "Source",
    "State",
    "Stream",
    "UserAliasId",
    "Value",
    "ValueType",
    "Write",
    "dump_pipeline",
    "load_pipeline",
    "pipeline_json_schema",
]
