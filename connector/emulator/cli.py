"""`braze-connector emulator`: serve the local Braze API in the foreground (registered by connector/cli.py)."""

# No `from __future__ import annotations` here (a module of the CLI's commands): typer reads every command's signature at each start (twice per
# command), and string annotations make it evaluate them all again (~5 ms of every command's CPU). Names
# imported only for type checking are quoted instead.
import ipaddress
import sys
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer

if TYPE_CHECKING:
    from connector.emulator.handlers import Batching

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
            help="Accepted key (repeatable): KEY (every endpoint but the beta /users/track/sync), or "
            "KEY:perm1,perm2 for exactly those permissions, among users.track, users.track.sync, "
            "canvas.trigger.send, messages.live_activity.update, users.delete.",
        ),
    ] = None,
    sync_beta: bool = typer.Option(
        False,
        "--sync-beta",
        help="The workspace is in the /users/track/sync beta: every key may call it. Without it only keys "
        "listing users.track.sync may; the others get 403 Access Denied.",
    ),
    batching: str = typer.Option(
        "combined",
        help="Batch cap on /users/track: combined (75 objects in all), per_array (75 per array, legacy rate "
        "limits) or combined50 (50 in all, MAU CY 24-25 contracts); over it: 400 Max Input Length Exceeded.",
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
        list[str] | None,
        typer.Option(
            "--canvas",
            help="A Canvas id /canvas/trigger/send accepts: ID or ID=active|paused|archived (repeatable). "
            "Other ids get 400 'canvas_id must be a string of the Canvas api identifier'.",
        ),
    ] = None,
    accept_any_canvas: bool = typer.Option(
        False,
        "--accept-any-canvas",
        help="Accept any canvas_id (as an active Canvas) on /canvas/trigger/send.",
    ),
    array_max_length: int = typer.Option(
        500,
        help="Maximum length of array attributes: /users/track keeps the newest values, /users/track/sync "
        "leaves a longer array unchanged (201).",
    ),
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
    """Serve the local Braze API emulator until Ctrl-C.

    It serves POST /users/track, /users/track/sync (a beta: --sync-beta, or a key listing users.track.sync), /canvas/trigger/send (the --canvas ids, or any with --accept-any-canvas), /messages/live_activity/update and /users/delete; any other route is a 404 that lists these.

    Inspection with the same key: GET /_emulator/stats, /_emulator/ledger, /_emulator/users/KIND/VALUE, /_emulator/dispatches; POST /_emulator/reset.
    """
    # Imported here, not at the top: the CLI registers this command on every start, `run` included.
    import asyncio

    from connector.emulator.faults import parse_fault
    from connector.emulator.handlers import BATCHING_MODES
    from connector.emulator.limits import parse_rate_limit
    from connector.emulator.server import build_config, serve  # aiohttp: imported only when serving
    from connector.emulator.store import LEDGER_DETAILS
    from connector.emulator.workspace import CANVAS_STATES

    try:
        limits = dict(parse_rate_limit(r) for r in rate_limit or [])
        faults = dict(parse_fault(f) for f in fault or [])
        for item in canvas or []:
            cid, _, state = item.partition("=")
            if not cid or state not in ("", *CANVAS_STATES):
                raise ValueError(f"--canvas {item!r}: expected ID or ID=active|paused|archived")
        if ledger_detail not in LEDGER_DETAILS:
            raise ValueError(f"--ledger-detail {ledger_detail!r}: use one of {', '.join(LEDGER_DETAILS)}")
        if batching not in BATCHING_MODES:
            raise ValueError(f"--batching {batching!r}: use {', '.join(BATCHING_MODES)}")
        mode = cast("Batching", batching)
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
            api_keys=keys, sync_beta=sync_beta, batching=mode, rate_limits=limits, latency_ms=latency_ms,
            fault_rate=fault_rate, faults=faults, seed=seed, canvases=canvas or [],
            accept_any_canvas=accept_any_canvas, array_max_length=array_max_length, slow_ms=slow_ms,
            burst_429=burst_429, nested_invalid=scope,
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
