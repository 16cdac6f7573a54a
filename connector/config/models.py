"""The pipeline file's pydantic models (extra keys forbidden, frozen); loading.py reads the YAML.

A pipeline has one or more streams; each stream reads one source, maps its rows into one kind of Braze
object, checks them, and delivers them to the pipeline's destination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

ObjectKindName = Literal["attributes", "events", "purchases", "canvas_trigger", "live_activity"]
EndpointName = Literal["users_track", "users_track_sync", "canvas_trigger_send", "live_activity_update"]
ValueType = Literal["auto", "string", "integer", "float", "boolean", "time", "date", "array", "object"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- values


class Value(_Model):
    """Where one value comes from: a source column or a constant (exactly one), and how to convert it.

    Conversions: `type` casts the cell (`time` parses a date-time and sends ISO 8601 with an offset;
    `date` sends YYYY-MM-DD; `array` splits a string on `split`; `object` parses a JSON string into a nested
    object). `format` is a strptime format for time/date columns; `timezone` is the IANA zone for times
    that carry no offset (default UTC). `on_empty` says what an empty cell does: `skip` leaves the Braze
    value untouched (the key is not sent), `null` sends null (which removes the attribute at Braze),
    `reject` rejects the row.
    """

    column: str | None = None
    value: Any = None
    type: ValueType = "auto"
    format: str | None = None
    timezone: str | None = None
    split: str | None = None
    on_empty: Literal["skip", "null", "reject"] = "skip"

    @model_validator(mode="after")
    def _one_source(self) -> Value:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' (a source column) or 'value' (a constant)")
        if self.split is not None and self.type not in ("array", "auto"):
            raise ValueError("'split' only applies to type 'array'")
        return self


def _bare_column(v: Any) -> Any:
    """A bare string where a Value is expected names a column: `email: email_col`."""
    return {"column": v} if isinstance(v, str) else v


ColumnValue = Annotated[Value, BeforeValidator(_bare_column)]


class AttributeField(Value):
    """One attribute written to the profile.

    `to` is the Braze attribute name (standard field such as `first_name`, or a custom attribute); it
    defaults to the column name. `op`: `set` (default), `inc` (increment by the cell's number), `add` /
    `remove` (array add or remove; the cell is split on `split`, default ','), `merge` (nested object merged
    with `_merge_objects: true`).
    """

    to: str | None = None
    op: Literal["set", "inc", "add", "remove", "merge"] = "set"

    @property
    def target(self) -> str:
        name = self.to or self.column
        assert name is not None  # guaranteed by _target_named
        return name

    @model_validator(mode="after")
    def _target_named(self) -> AttributeField:
        if self.to is None and self.column is None:
            raise ValueError("a constant attribute needs 'to' (the Braze attribute name)")
        return self


class Properties(_Model):
    """Event, purchase, Canvas or Live Activity properties: listed columns and/or a JSON object column.

    `columns` maps property name -> Value (or a bare column name). Keys from `json_column` come first; listed
    columns override them.
    """

    columns: dict[str, ColumnValue] = Field(default_factory=dict)
    json_column: str | None = None


class UserAliasId(_Model):
    name: ColumnValue
    label: ColumnValue


class Identifier(_Model):
    """Exactly one identifier per object."""

    external_id: ColumnValue | None = None
    user_alias: UserAliasId | None = None
    braze_id: ColumnValue | None = None
    email: ColumnValue | None = None
    phone: ColumnValue | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Identifier:
        given = [k for k in ("external_id", "user_alias", "braze_id", "email", "phone") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of external_id, user_alias, braze_id, email, phone "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        for k in ("external_id", "user_alias", "braze_id", "email", "phone"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("unreachable")


class EventMapping(_Model):
    name: ColumnValue
    time: ColumnValue
    app_id: ColumnValue | None = None
    properties: Properties = Field(default_factory=Properties)


class PurchaseMapping(_Model):
    product_id: ColumnValue
    currency: ColumnValue
    price: ColumnValue
    time: ColumnValue
    quantity: ColumnValue | None = None
    app_id: ColumnValue | None = None
    properties: Properties = Field(default_factory=Properties)


Prioritization = Literal["identified", "unidentified", "most_recently_updated", "least_recently_updated"]


def _default_prioritization() -> list[Prioritization]:
    return ["identified", "most_recently_updated"]


class CanvasMapping(_Model):
    """One Canvas recipient per row; rows are packed up to 50 recipients per /canvas/trigger/send call."""

    canvas_id: str
    context: Properties = Field(default_factory=Properties)
    send_to_existing_only: bool = True
    attributes: list[AttributeField] = Field(default_factory=list)
    prioritization: list[Prioritization] = Field(default_factory=_default_prioritization)

    @model_validator(mode="after")
    def _prioritization_is_usable(self) -> CanvasMapping:
        if not self.prioritization:
            raise ValueError("prioritization must not be empty (Braze needs it for email recipients)")
        if {"identified", "unidentified"} <= set(self.prioritization):
            raise ValueError("prioritization cannot hold both 'identified' and 'unidentified' (Braze refuses it)")
        return self


class LiveActivityMapping(_Model):
    app_id: ColumnValue
    activity_id: ColumnValue
    content_state: Properties
    end_activity: ColumnValue | None = None
    dismissal_date: ColumnValue | None = None
    stale_date: ColumnValue | None = None
    notification_json_column: str | None = None


# --------------------------------------------------------------------------- source


class CsvOptions(_Model):
    delimiter: str = ","
    quote_char: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    column_names: list[str] | None = None
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL", "null", "NA", "N/A"])


class Source(_Model):
    """A file, a directory (every file of the format inside it, sorted) or a glob."""

    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_rows: Annotated[int, Field(gt=0, le=5_000_000)] = 50_000


# --------------------------------------------------------------------------- stream


class Stream(_Model):
    name: str
    source: Source
    kind: ObjectKindName
    identifier: Identifier | None = None
    update_existing_only: bool | None = None
    attributes: list[AttributeField] = Field(default_factory=list)
    event: EventMapping | None = None
    purchase: PurchaseMapping | None = None
    canvas: CanvasMapping | None = None
    live_activity: LiveActivityMapping | None = None
    expectations: list[str] = Field(default_factory=list)
    on_table_expectation_failure: Literal["fail", "warn"] = "fail"
    # Send only what changed since the last delivered run (connector/delta.py; the pipeline's state.path).
    delta: bool = False
    # `run --partition K/N`: whole files (a source of several files) or a hash of the identifier (one file,
    # or `identifier`: one user's rows in one partition even across files); readers/partition.py.
    partition_by: Literal["auto", "file", "identifier"] = "auto"

    @model_validator(mode="after")
    def _mapping_matches_kind(self) -> Stream:
        needs = {
            "attributes": "attributes",
            "events": "event",
            "purchases": "purchase",
            "canvas_trigger": "canvas",
            "live_activity": "live_activity",
        }[self.kind]
        if self.kind == "attributes":
            if not self.attributes:
                raise ValueError("kind 'attributes' needs a non-empty 'attributes' list")
        elif getattr(self, needs) is None:
            raise ValueError(f"kind '{self.kind}' needs a '{needs}' mapping")
        for other in ("event", "purchase", "canvas", "live_activity"):
            if other != needs and getattr(self, other) is not None:
                raise ValueError(f"'{other}' does not apply to kind '{self.kind}' (it needs '{needs}')")
        if self.kind != "live_activity" and self.identifier is None:
            raise ValueError(f"kind '{self.kind}' needs an 'identifier'")
        if self.kind == "canvas_trigger" and self.identifier is not None and self.identifier.kind == "phone":
            raise ValueError("Canvas recipients are identified by external_id, user_alias, braze_id or email, not phone")
        if (self.kind == "canvas_trigger" and self.canvas is not None and not self.canvas.send_to_existing_only
                and self.identifier is not None and self.identifier.kind == "user_alias"):  # fmt: skip
            raise ValueError(
                "canvas.send_to_existing_only: false cannot be used with user_alias recipients (Braze refuses it); "
                "use external_id, braze_id or email, or keep send_to_existing_only: true"
            )
        if self.delta and self.kind not in ("attributes", "events", "purchases"):
            raise ValueError(f"delta applies to kinds attributes, events and purchases, not '{self.kind}'")
        return self


# --------------------------------------------------------------------------- destination and writing


class Destination(_Model):
    """`url: local` starts the embedded emulator for the run. The key is read from `api_key_env`."""

    url: str = "local"
    api_key_env: str = "BRAZE_API_KEY"


class RateLimit(_Model):
    requests: Annotated[int, Field(gt=0)]
    per_seconds: Annotated[float, Field(gt=0)]


BULK_WORKERS = 160
SYNC_WORKERS = 16

DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "users_track": RateLimit(requests=3000, per_seconds=3),
    "users_track_sync": RateLimit(requests=500, per_seconds=60),
    "canvas_trigger_send": RateLimit(requests=250_000, per_seconds=3600),
    "live_activity_update": RateLimit(requests=250_000, per_seconds=3600),
}


class Retry(_Model):
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    max_elapsed_s: Annotated[float, Field(gt=0)] = 300.0
    initial_backoff_s: Annotated[float, Field(ge=0)] = 0.5
    max_backoff_s: Annotated[float, Field(gt=0)] = 30.0


class SharedLimits(_Model):
    """Share the rate limits with every process using the same namespace (one Braze workspace) through Redis.

    The Redis URL is read from the environment variable `redis_url_env` (it may hold a password), never
    from the file. `namespace` names the budget: processes with one namespace draw from one per-endpoint
    budget. When Redis cannot be reached, a process sends at its share of the limit (the limit divided by
    the workers seen in Redis recently; `expected_workers` when it never reached Redis) until Redis is back.
    """

    redis_url_env: str = "REDIS_URL"
    namespace: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
    expected_workers: Annotated[int, Field(ge=1, le=10_000)] = 4


class Write(_Model):
    mode: Literal["auto", "bulk", "sync"] = "auto"
    # Requests in flight. None (the default): BULK_WORKERS in bulk mode, enough for 1,000 requests/s at up
    # to ~150 ms latency (in flight = rate x latency); SYNC_WORKERS in sync mode (500 requests/minute).
    concurrency: Annotated[int, Field(ge=1, le=512)] | None = None
    batching: Literal["combined", "per_array"] = "combined"
    max_objects_per_request: Annotated[int, Field(ge=1, le=75)] = 75
    max_request_bytes: Annotated[int, Field(ge=1024, le=4_000_000)] = 3_900_000
    rate_limits: dict[EndpointName, RateLimit] = Field(default_factory=dict)
    retry: Retry = Field(default_factory=Retry)
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    confirm_profiles: bool = False
    # A request whose connection dropped after it was sent may or may not have been applied by Braze.
    # `retry` resends it (at-least-once: events, purchases and `inc` may then count twice);
    # `fail` marks its rows failed with outcome "unknown" for a human to check (at-most-once).
    on_ambiguous: Literal["retry", "fail"] = "retry"
    # HTTP transport under the one retry policy. `auto`: aiohttp in a child process for bulk runs, where
    # requests+threads cannot reach 1,000 requests/s on two cores (bench/transport_choice.py) and aiohttp
    # sharing the GIL with the local stages reaches ~870 (BENCHMARKS.md); requests for sync runs, whose
    # 500 requests/minute it handles easily. `aiohttp` runs the event loop on a thread of this process.
    transport: Literal["auto", "requests", "aiohttp", "aiohttp-process"] = "auto"
    sync_max_duration_s: Annotated[float, Field(ge=0)] = 60.0
    # One budget for several processes (Airflow workers, partitions of one table): see SharedLimits.
    shared_limits: SharedLimits | None = None

    def workers(self, mode: str) -> int:
        """Requests in flight for a run in `mode` (bulk or sync): `concurrency`, or that mode's default."""
        if self.concurrency is not None:
            return self.concurrency
        return BULK_WORKERS if mode == "bulk" else SYNC_WORKERS

    def rate_limit(self, endpoint: str) -> RateLimit:
        return self.rate_limits.get(endpoint, DEFAULT_RATE_LIMITS[endpoint])  # type: ignore[call-overload]


class Report(_Model):
    dir: str = "reports/{pipeline}/{run_id}"
    max_reject_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    sample_bodies: Annotated[int, Field(ge=0)] = 5


class State(_Model):
    """Where delta sync remembers what Braze confirmed ({pipeline} is replaced by the pipeline name)."""

    path: str = "state/{pipeline}.sqlite"


class Pipeline(_Model):
    name: str
    description: str = ""
    destination: Destination = Field(default_factory=Destination)
    write: Write = Field(default_factory=Write)
    report: Report = Field(default_factory=Report)
    state: State = Field(default_factory=State)
    expectations_dir: str = "expectations"
    streams: Annotated[list[Stream], Field(min_length=1)]

    # Set by load_pipeline: the folder relative paths are resolved against.
    base_dir: str = "."
    # Set by load_pipeline: the file this pipeline came from (messages name it).
    _file: str | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str:
        """The pipeline file for messages, or `pipeline <name>` when built in code."""
        return self._file or f"pipeline {self.name}"

    @field_validator("streams")
    @classmethod
    def _unique_stream_names(cls, streams: list[Stream]) -> list[Stream]:
        seen: set[str] = set()
        for s in streams:
            if s.name in seen:
                raise ValueError(
                    f"two streams are named {s.name!r}; stream names must be unique (the report counts rows per stream)"
                )
            seen.add(s.name)
        return streams

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p
