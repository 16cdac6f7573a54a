"""`braze-connector emulator`: serve the local Braze API in the foreground (registered by connector/cli.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from typing import Annotated, Literal

import typer

from connector.emulator.faults import parse_fault
from connector.emulator.limits import parse_rate_limit
from connector.emulator.server import build_config, serve
from connector.emulator.store import LEDGER_DETAILS

DEV_KEY = "local-dev-key"


def public_bind_problem(host: str, keys: list[str]) -> str | None:
    """Why the emulator must not listen on `host` with these keys, or None.

    Beyond loopback its data (every profile in the ledger) and /_emulator/reset are open to the network;
    the dev key is public (it is in the README), so only keys of one's own may open it.
    """
    if _is_loopback(host):
        return None
    public = [k for k in keys if k.partition(":")[0] == DEV_KEY] if keys else [DEV_KEY]
    if not public:
        return None
    return (
        f"--host {host} opens the emulator (every profile it holds, and /_emulator/reset) to the network, "
        f"and the key {DEV_KEY} is public; give a key of your own with --api-key to listen beyond loopback, "
        "or keep the default --host 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emulator_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(4010, help="Port to listen on (0 = a free port)."),
    db: str = typer.Option(":memory:", help="SQLite file for the emulator's state (default: in memory)."),
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="Accepted key (repeatable): KEY, or KEY:perm1,perm2 to limit its endpoint permissions.",
        ),
    ] = None,
    batching: str = typer.Option(
        "combined", help="Batch cap on /users/track: combined (75 total) or per_array (75 each)."
    ),
    latency_ms: float = typer.Option(0.0, help="Latency added to every API request (ms)."),
    fault_rate: float = typer.Option(
        0.0, help="Probability of a random fault per request (spread over all modes)."
    ),
    seed: int = typer.Option(0, help="Seed for fault injection (same seed = same fault sequence)."),
    rate_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--rate-limit",
            help="ENDPOINT=N/SECONDS, e.g. users_track=3000/3; also broadcast=250/60 and "
            "broadcast_audience=10/60 for broadcast canvas triggers (repeatable).",
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="[ENDPOINT:]MODE=RATE, MODE one of 500,502,503,504,429,slow,drop,202 (repeatable; 202 = "
            "applied but answered 202 queued, never drawn by --fault-rate).",
        ),
    ] = None,
    canvas: Annotated[
        list[str] | None, typer.Option("--canvas", help="ID=active|paused|archived (repeatable).")
    ] = None,
    array_max_length: int = typer.Option(500, help="Maximum length of array attributes."),
    slow_ms: float = typer.Option(1500.0, help="Extra latency of a 'slow' fault (ms)."),
    burst_429: int = typer.Option(
        1, help="How many 429s in a row one injected 429 fault produces (a burst)."
    ),
    nested_invalid: str = typer.Option(
        "request",
        help="What an invalid nested attribute drops: request (every nested update of the request) or "
        "attribute (only that attribute's).",
    ),
    ledger_detail: str = typer.Option(
        "full",
        help="Ledger 'applied' detail: full (objects as sent), ids (identifiers only) or none (counts only).",
    ),
) -> None:
    """Serve the local Braze API emulator until Ctrl-C."""
    try:
        limits = dict(parse_rate_limit(r) for r in rate_limit or [])
        faults = dict(parse_fault(f) for f in fault or [])
        canvases: dict[str, str] = {}
        for item in canvas or []:
            cid, sep, state = item.partition("=")
            if not sep or not cid:
                raise ValueError(f"--canvas {item!r}: expected ID=active|paused|archived")
            canvases[cid] = state
        if ledger_detail not in LEDGER_DETAILS:
            raise ValueError(f"--ledger-detail {ledger_detail!r}: use one of {', '.join(LEDGER_DETAILS)}")
        if batching not in ("combined", "per_array"):
            raise ValueError(f"--batching {batching!r}: use combined or per_array")
        mode: Literal["combined", "per_array"] = "combined" if batching == "combined" else "per_array"
        if nested_invalid not in ("request", "attribute"):
            raise ValueError(f"--nested-invalid {nested_invalid!r}: use request or attribute")
        scope: Literal["request", "attribute"] = "request" if nested_invalid == "request" else "attribute"
        keys = list(api_key or [])
        problem = public_bind_problem(host, keys)
        if problem:
            raise ValueError(problem)
        if not keys:
            keys = [DEV_KEY]
            _say(f"no --api-key given: accepting the dev key {DEV_KEY}")
        config = build_config(
            api_keys=keys, batching=mode, rate_limits=limits, latency_ms=latency_ms, fault_rate=fault_rate,
            faults=faults, seed=seed, canvases=canvases, array_max_length=array_max_length, slow_ms=slow_ms, burst_429=burst_429,
            nested_invalid=scope,
        )  # fmt: skip
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    try:
        asyncio.run(serve(config, host, port, db, announce=_say, ledger_detail=ledger_detail))
    except OSError as e:
        typer.echo(f"error: cannot listen on {host}:{port}: {e.strerror or e}", err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        pass
    _say("emulator stopped")
