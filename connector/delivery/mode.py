"""The delivery mode of a run: bulk (/users/track) or sync (/users/track/sync, one row per request)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from connector.config import Pipeline, Stream
from connector.errors import ConfigError

SYNC_KINDS = ("attributes", "events", "purchases")


def early_mode(pipeline: Pipeline, override: str | None, *, resume: bool = False) -> str | None:
    """The mode the run will use when --mode or write.mode decides it alone, before any row is counted
    (the CLI starts the HTTP child on it, delivery/spare.py); None when mode auto must count rows first, and
    for --resume without --mode (the first attempt's mode, in its journal, decides).

    `--mode sync` with write.sync_endpoint disabled is returned as is: choose_mode refuses it later.
    """
    if override in ("bulk", "sync"):
        return override
    if override is None and not resume and pipeline.write.mode != "auto":
        return pipeline.write.mode
    return None


def transport_kind(pipeline: Pipeline, mode: str) -> Literal["requests", "aiohttp", "aiohttp-process"]:
    """write.transport, with auto resolved for `mode`: bulk needs aiohttp on its own core (the HTTP child) to
    fill 1,000 requests/s; sync, one row per request, suits requests."""
    transport = pipeline.write.transport
    if transport == "auto":
        return "requests" if mode == "sync" else "aiohttp-process"
    return transport


def choose_mode(
    pipeline: Pipeline, override: str | None, streams: Sequence[tuple[Stream, int, bool]]
) -> tuple[str, str]:
    """(mode, reason in words): --mode over write.mode; auto picks sync for small or confirmed runs.

    `streams` holds (stream, row count or estimate, exact?). Sync applies to attributes, events and
    purchases streams only (Canvas and Live Activity streams use their own endpoints in either mode).
    `write.sync_endpoint: disabled` rules sync out; with `auto` a sync choice of mode auto still waits on
    the probe (delivery/sync_access.py).

    Raises:
        ConfigError: `--mode sync` while write.sync_endpoint is disabled.
    """
    write = pipeline.write
    if override == "sync" and write.sync_endpoint == "disabled":
        raise ConfigError(
            f"--mode sync: {pipeline.origin} sets write.sync_endpoint: disabled (the key cannot use "
            "/users/track/sync, a Braze beta); use --mode bulk or auto, or change write.sync_endpoint"
        )
    if override not in (None, "auto"):
        return str(override), f"--mode {override} given on the command line"
    if override is None and write.mode != "auto":
        return write.mode, f"write.mode is {write.mode} in the pipeline file"
    user = [(s, n, exact) for s, n, exact in streams if s.kind in SYNC_KINDS]
    if not user:
        return "bulk", "auto: no attributes, events or purchases stream, so sync does not apply"
    if write.sync_endpoint == "disabled":
        return "bulk", "auto: write.sync_endpoint is disabled, so /users/track/sync is not used"
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
        return "sync", f"auto: {counted} would take about {seconds:,.0f} s {at}, within {budget}"
    return "bulk", f"auto: {counted} would take about {seconds:,.0f} s {at}, over {budget}"
