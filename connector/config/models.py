"""The pipeline file's pydantic models (extra keys forbidden, frozen); loading.py reads the YAML.

A pipeline has one or more streams; each stream reads one source, maps its rows into one kind of Braze
object, checks them, and delivers them to the pipeline's destination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from connector.config.alerts import Alerts
from connector.config.mappings import (
    AttributeField,
    CanvasMapping,
    EventMapping,
    Identifier,
    LiveActivityMapping,
    PurchaseMapping,
    _Model,
)
from connector.config.paths import NAME_PATTERN, NAME_RULE
from connector.config.sources import Incremental, Source

ObjectKindName = Literal["attributes", "events", "purchases", "canvas_trigger", "live_activity"]
EndpointName = Literal[
    "users_track", "users_track_sync", "canvas_trigger_send", "live_activity_update", "users_delete"
]


# Sources (CsvOptions, Source, Connection, Incremental) are in sources.py.


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
    # Read only rows past the last confirmed cursor value (connector/delta/watermark.py; state.path).
    incremental: Incremental | None = None
    # `run --partition K/N`: whole files (a source of several files) or a hash of the identifier (one file,
    # or `identifier`: one user's rows in one partition even across files); readers/partition.py.
    partition_by: Literal["auto", "file", "identifier"] = "auto"
    # Mirror mode (delta attributes streams): users confirmed in the state and absent from this run's source
    # are reported (`report`, the default of such streams) or deleted through /users/delete (`delete`), at
    # most `max_delete_fraction` of the known users unless `run --allow-deletes N` (delivery/mirror.py).
    on_removed: Literal["delete", "report"] | None = None
    max_delete_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1

    @property
    def mirror(self) -> Literal["delete", "report"] | None:
        """What happens to users gone from the source: `on_removed`, else `report` on delta attributes
        streams that read the whole source (not incremental), else nothing."""
        if self.on_removed is not None:
            return self.on_removed
        if self.kind == "attributes" and self.delta and self.incremental is None:
            return "report"
        return None

    @model_validator(mode="after")
    def _mirror_allowed(self) -> Stream:
        if self.on_removed is None:
            return self
        if self.kind != "attributes":
            raise ValueError(f"on_removed applies to kind attributes (users), not '{self.kind}'")
        if not self.delta:
            raise ValueError(
                "on_removed needs delta: true: removed users are those the state (state.path) confirmed in an "
                "earlier run and this run's source no longer has"
            )
        if self.incremental is not None:
            raise ValueError(
                "on_removed cannot be used with incremental: an incremental run reads only the changed rows, so "
                "every user it does not read would look removed"
            )
        if self.on_removed == "delete" and self.identifier is not None and self.identifier.kind in ("email", "phone"):
            raise ValueError(
                f"on_removed: delete needs an external_id, user_alias or braze_id identifier, not "
                f"{self.identifier.kind} (several profiles may share one); use on_removed: report"
            )
        return self

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
            _one_source_per_attribute(self.attributes, "attributes")
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


def _one_source_per_attribute(fields: list[AttributeField], where: str) -> None:
    """Two entries writing one Braze attribute would make its value depend on which cell is empty."""
    seen: dict[str, int] = {}
    for j, f in enumerate(fields):
        if f.target in seen:
            raise ValueError(
                f"{where}.{j} writes the attribute {f.target!r}, as {where}.{seen[f.target]} already does; "
                "each Braze attribute comes from one entry: remove one, or give it another 'to'"
            )
        seen[f.target] = j


# --------------------------------------------------------------------------- destination and writing


class EmbeddedEmulator(_Model):
    """The workspace the embedded emulator plays for `url: local` (ignored for any other destination).

    `sync_beta`: whether its key may call /users/track/sync (a Braze beta); None follows
    `write.sync_endpoint` (granted only when `enabled`). `canvases`: the Canvas ids it has; None registers the
    pipeline's own canvas_ids, unverified (the report says so), and a list makes any other id a per-row
    reject as on Braze, so a typo shows before a real run.
    """

    sync_beta: bool | None = None
    canvases: list[str] | None = None


class Destination(_Model):
    """`url: local` starts the embedded emulator for the run. The key is read from `api_key_env`."""

    url: str = "local"
    api_key_env: str = "BRAZE_API_KEY"
    emulator: EmbeddedEmulator = Field(default_factory=EmbeddedEmulator)


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
    # shared with /users/alias/new, /users/identify, /users/merge and /users/alias/update (api_limits)
    "users_delete": RateLimit(requests=20_000, per_seconds=60),
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
    # combined: 75 objects per /users/track request in all; per_array: 75 per array (legacy rate limits);
    # combined50: 50 in all, the cap of MAU contracts (Monthly Active Users CY 24-25, post_user_track.md).
    batching: Literal["combined", "per_array", "combined50"] = "combined"
    # /users/track/sync is a beta (key permission users.track.sync). `auto`: mode auto picks it only after a
    # probe shows the key can use it; `enabled`: the key has it; `disabled`: never used. In every case a
    # 403/404 from it sends the rest of the run through /users/track, losing no row (delivery/writer.py).
    sync_endpoint: Literal["auto", "enabled", "disabled"] = "auto"
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
    # After SIGTERM/SIGINT (or a stop token): how long requests already in flight may take to answer before
    # their rows are given up as outcome "unknown". Nothing new is sent meanwhile.
    stop_grace_s: Annotated[float, Field(ge=0, le=600)] = 10.0

    @model_validator(mode="after")
    def _sync_allowed(self) -> Write:
        if self.sync_endpoint == "disabled" and (self.mode == "sync" or self.confirm_profiles):
            what = "mode: sync" if self.mode == "sync" else "confirm_profiles: true"
            raise ValueError(
                f"{what} needs /users/track/sync, but sync_endpoint is disabled; use mode auto or bulk, or "
                "set sync_endpoint to auto or enabled if the API key has the users.track.sync permission"
            )
        return self

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
    # Each run appends its summary here ({pipeline} is filled in); null: no history.
    history: str | None = "reports/{pipeline}/history.jsonl"
    # Columns masked in the report's samples; null: identifiers, email and phone columns; []: none.
    mask_columns: list[str] | None = None
    # rejects.csv and failed.csv: a cell a spreadsheet would run (=, +, -, @, tab, CR first) gets a leading
    # quote (OWASP); false writes the cells as they are (the Parquet rejects file never escapes).
    csv_formula_escape: bool = True
    # An OpenMetrics text file of the run's counters for node_exporter's textfile collector ({pipeline} is
    # filled in; name it *.prom), replaced atomically by each run that sends; null: none.
    metrics_file: str | None = None

    @field_validator("metrics_file")
    @classmethod
    def _metrics_placeholders(cls, value: str | None) -> str | None:
        if value is not None and ("{" in value.replace("{pipeline}", "") or "}" in value.replace("{pipeline}", "")):
            raise ValueError(f"only the placeholder {{pipeline}} is allowed (got {value!r}): the file describes "
                             "the pipeline's last run, so each run replaces it")  # fmt: skip
        return value


class State(_Model):
    """Where delta sync and incremental cursors remember what Braze confirmed ({pipeline} is replaced by the
    pipeline name, {partition} by a partitioned run's `p2of4` or `all`; partitioned runs need {partition}).

    `url_env` names an environment variable holding a PostgreSQL URL: delta sync's state then lives in that
    database (table braze_connector_delta, keyed by pipeline and stream), shared by every machine running the
    pipeline; the URL is read from the environment only and never shown. Otherwise a local SQLite file.
    Watermarks of incremental cursors always live in the local file.
    """

    path: str = "state/{pipeline}.sqlite"
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Pipeline(_Model):
    name: str
    description: str = ""
    destination: Destination = Field(default_factory=Destination)
    write: Write = Field(default_factory=Write)
    report: Report = Field(default_factory=Report)
    state: State = Field(default_factory=State)
    alerts: Alerts | None = None
    expectations_dir: str = "expectations"
    streams: Annotated[list[Stream], Field(min_length=1)]

    # Set by load_pipeline: the folder relative paths are resolved against.
    base_dir: str = "."
    # Set by load_pipeline: the file this pipeline came from (messages name it).
    _file: str | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        """The pipeline file this pipeline was loaded from (None when built in code, e.g. by upload)."""
        return self._file

    @property
    def origin(self) -> str:
        """The pipeline file for messages, or `pipeline <name>` when built in code."""
        return self._file or f"pipeline {self.name}"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"name {name[:60]!r} is not allowed: it names the report and state files, so use {NAME_RULE}"
            )
        return name

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
