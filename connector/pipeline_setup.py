"""What a run decides before it reads a row (destination and key, delivery mode, row estimates, report
folder) and the machinery it builds to deliver (client, writer, embedded emulator, delta state, GC)."""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from connector.config import Pipeline, Source, Stream
from connector.errors import ConfigError, SourceError

if TYPE_CHECKING:
    from connector.client import BrazeClient
    from connector.delta import DeltaState
    from connector.emulator import EmulatorServer
    from connector.report import RunReport
    from connector.writer import Writer

logger = logging.getLogger(__name__)

SYNC_KINDS = ("attributes", "events", "purchases")
ENV_ENDPOINT = "BRAZE_REST_ENDPOINT"
# CSV sources up to this size have their lines counted; bigger ones are estimated from a sample.
COUNT_CSV_BYTES = 32 * 2**20
SAMPLE_BYTES = 2**20


@dataclass(frozen=True)
class Destination:
    """Where the run sends rows: the embedded emulator ("local"), a REST URL, or nowhere (offline)."""

    kind: Literal["local", "rest", "none"]
    url: str | None
    api_key: str | None = field(default=None, repr=False)


def resolve_destination(pipeline: Pipeline, env: Mapping[str, str], *, offline: bool) -> Destination:
    """BRAZE_REST_ENDPOINT over destination.url; the key from env[destination.api_key_env].

    `local` gets a fresh random key for the embedded emulator (never shown). Offline runs (validate, dry
    run) need no key; the URL is still checked.

    Raises:
        ConfigError: a URL that is not http(s), a non-loopback URL without https, or a missing key.
    """
    override = (env.get(ENV_ENDPOINT) or "").strip()
    url = override or pipeline.destination.url.strip()
    where = f"{ENV_ENDPOINT}" if override else f"{pipeline.origin}: destination.url"
    if url == "local":
        if offline:
            return Destination("none", None)
        return Destination("local", None, secrets.token_urlsafe(24))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not a URL; use https://rest.<instance>.braze.com or 'local'")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: remove the credentials from the URL; the API key is read from an env var"
        )
    if parts.scheme != "https" and not _loopback(parts.hostname):
        raise ConfigError(
            f"{where}: {parts.scheme}://{parts.hostname} is not a loopback address, so it must use https://"
        )
    if offline:
        return Destination("none", url)
    var = pipeline.destination.api_key_env
    key = (env.get(var) or "").strip()
    if not key:
        raise ConfigError(
            f"the API key for {parts.hostname} is read from the environment variable {var}, which is not set "
            f"(set it, or change destination.api_key_env in the pipeline file)"
        )
    return Destination("rest", url, key)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- mode --------------------------------------------------------------------------------------------


def choose_mode(
    pipeline: Pipeline, override: str | None, streams: Sequence[tuple[Stream, int, bool]]
) -> tuple[str, str]:
    """(mode, reason in words): --mode over write.mode; auto picks sync for small or confirmed runs.

    `streams` holds (stream, row count or estimate, exact?). Sync applies to attributes, events and
    purchases streams only (Canvas and Live Activity streams use their own endpoints in either mode).
    """
    write = pipeline.write
    if override not in (None, "auto"):
        return str(override), f"--mode {override} given on the command line"
    if override is None and write.mode != "auto":
        return write.mode, f"write.mode is {write.mode} in the pipeline file"
    user = [(s, n, exact) for s, n, exact in streams if s.kind in SYNC_KINDS]
    if not user:
        return "bulk", "auto: no attributes, events or purchases stream, so sync does not apply"
    if write.confirm_profiles:
        return "sync", "auto: write.confirm_profiles is true, which needs /users/track/sync"
    rows = sum(n for _, n, _ in user)
    exact = all(e for _, _, e in user)
    limit = write.rate_limit("users_track_sync")
    seconds = rows * limit.per_seconds / limit.requests
    counted = f"{rows:,} rows" if exact else f"about {rows:,} rows"
    at = f"at the sync limit of {limit.requests} requests per {limit.per_seconds:g} s, one row per request"
    budget = f"write.sync_max_duration_s = {write.sync_max_duration_s:g} s"
    if seconds <= write.sync_max_duration_s:
        return "sync", f"auto: {counted} would take about {seconds:.0f} s {at}, within {budget}"
    return "bulk", f"auto: {counted} would take about {seconds:.0f} s {at}, over {budget}"


# ---- row estimates -----------------------------------------------------------------------------------


def estimate_rows(source: Source, files: Sequence[Path]) -> tuple[int, bool]:
    """Data rows in the source: (count, exact?). Parquet from its metadata (exact); CSV lines counted when small."""
    total, exact = 0, True
    for path in files:
        if is_parquet(source, path):
            total += _parquet_rows(path)
        else:
            n, e = _csv_rows(path, source.csv.header)
            total += n
            exact = exact and e
    return total, exact


def is_parquet(source: Source, path: Path) -> bool:
    """Whether a source file is read as Parquet (explicit format, else the extension)."""
    if source.format != "auto":
        return source.format == "parquet"
    return path.suffix.lower() in (".parquet", ".pq")


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq  # only the footer is read

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise SourceError(f"{path}: cannot read the Parquet metadata ({e})") from None


def _csv_rows(path: Path, header: bool) -> tuple[int, bool]:
    """Line count (minus the header) when the file is small; else size / mean line length of a sample."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if size <= COUNT_CSV_BYTES:
                data = f.read()
                lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
                # Lines, not records: blank lines and quoted line breaks make this an estimate too.
                return max(0, lines - (1 if header else 0)), False
            sample = f.read(SAMPLE_BYTES)
    except OSError as e:
        raise SourceError(f"{path}: cannot read the file ({e.strerror})") from None
    per_line = len(sample) / max(1, sample.count(b"\n"))
    return int(size / per_line) - (1 if header else 0), False


# ---- table-level expectations ------------------------------------------------------------------------

# Row-level (map) expectations report each failing row; every other expectation type is table-level, and so
# is a map expectation with `mostly` < 1 (whether the whole stream met it is only known at the end).
_ROW_LEVEL_PREFIX = "expect_column_values_to_"
_TABLE_LEVEL_EXCEPTIONS = ("expect_column_values_to_be_unique",)


def has_table_expectations(suite: Any, names: Sequence[str], expectations_dir: Path) -> bool:
    """Whether the stream's suites hold any table-level expectation (row count, uniqueness, freshness, ...).

    Asks the SuiteRunner when it says (`has_table_expectations`), else reads the suite files' types.
    """
    told = getattr(suite, "has_table_expectations", None)
    if told is not None:
        return bool(told() if callable(told) else told)
    for name in names:
        try:
            doc = json.loads((expectations_dir / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True  # the SuiteRunner loaded it, so be safe: check the table first
        for exp in doc.get("expectations", []) if isinstance(doc, dict) else []:
            kind = str(exp.get("type") or exp.get("expectation_type") or "")
            mostly = (exp.get("kwargs") or {}).get("mostly", 1)
            if not kind.startswith(_ROW_LEVEL_PREFIX) or kind in _TABLE_LEVEL_EXCEPTIONS or mostly != 1:
                return True
    return False


# ---- report folder -----------------------------------------------------------------------------------


def report_dir_for(pipeline: Pipeline, override: str | Path | None, run_id: str) -> Path:
    """--report-dir over report.dir, with {pipeline} and {run_id} filled in; relative to the current folder.

    A path that cannot become a writable folder is a ConfigError here, before anything is read (nothing is
    created: RunReport makes the folder).
    """
    template = str(override) if override is not None else pipeline.report.dir
    key = "--report-dir" if override is not None else "report.dir"
    text = template.replace("{pipeline}", pipeline.name).replace("{run_id}", run_id)
    if "{" in text or "}" in text:
        raise ConfigError(
            f"{key} {template!r}: only the placeholders {{pipeline}} and {{run_id}} are allowed"
        )
    path = Path(text)
    problem = _unwritable(path)
    if problem:
        raise ConfigError(f"{key} {template!r}: cannot write the report to {path} ({problem}); choose another folder")
    return path


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot be (or become) a writable folder, or None; creates nothing."""
    for folder in (path, *path.absolute().parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable"
            return None
    return None


# ---- the run's machinery (built once a run starts) ---------------------------------------------------


def delta_state(pipeline: Pipeline, report: RunReport, *, read_only: bool, full: bool) -> DeltaState | None:
    """The delta-sync state file, when a stream has `delta: true`."""
    if not any(s.delta for s in pipeline.streams):
        return None
    from connector.delta import DeltaState

    path = pipeline.resolve(pipeline.state.path.replace("{pipeline}", pipeline.name))
    report.delta = {"state_file": str(path), "full": full, "read_only": read_only}
    return DeltaState(path, read_only=read_only, full=full)


# Cyclic-GC thresholds while rows stream: a run allocates millions of short-lived dicts (freed by reference
# counting), which trigger full collections over every long-lived object (Great Expectations alone brings
# hundreds of thousands). Each stops every thread for tens of milliseconds; in a bulk run that showed as
# dips of 15 % in requests/s (BENCHMARKS.md). Frozen objects are skipped by the collector.
GC_THRESHOLDS = (50_000, 20, 100)


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Freeze what exists (modules, suites) and collect less often during the run; restore afterwards."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def start_emulator(api_key: str | None) -> EmulatorServer:
    from connector.emulator import EmulatorServer

    assert api_key is not None
    server = EmulatorServer(api_keys=(api_key,))
    server.start()
    logger.info("destination local: embedded Braze emulator on %s", server.url)
    return server


def make_client(pipeline: Pipeline, url: str, api_key: str, mode: str) -> BrazeClient:
    from connector.client import BrazeClient
    from connector.ratelimit import RateLimiter

    transport = pipeline.write.transport
    if transport == "auto":  # bulk needs aiohttp on its own core to fill 1,000 requests/s; sync suits requests
        transport = "requests" if mode == "sync" else "aiohttp-process"
    limiter = RateLimiter.from_write(pipeline.write)
    return BrazeClient(url, api_key, write=pipeline.write, limiter=limiter, transport=transport)


def make_writer(
    pipeline: Pipeline, client: BrazeClient | None, report: RunReport, mode: str, *, dry_run: bool,
    delta: DeltaState | None = None,
) -> Writer:  # fmt: skip
    from connector.writer import Writer

    return Writer(pipeline, client, report, mode="sync" if mode == "sync" else "bulk", dry_run=dry_run, delta=delta)
