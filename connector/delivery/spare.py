"""The HTTP child of a bulk run started at the command's start (a "spare"), then handed to the transport.

Why: the child (delivery/transport/child.py) needs ~0.15 s from its spawn to its first answer (Python,
asyncio, its HTTP engine), more on a slow machine. Spawned when the run builds its client, the first request of
the sample users run waited ~0.1 s for it after the main process had its body ready (BENCHMARKS.md, "Time
to the first request"). `braze-connector run` knows from the pipeline file and its flags alone, before it
imports pyarrow, whether a run will send through the child (`wanted`); `start` spawns it then, so the
child imports while the main process does, and ProcessTransport takes it (`take`) instead of spawning one.

The key: a spare is spawned without its config frame (headers, the API key). The child reads that frame
only after its imports, so the key still reaches it on its stdin, when the transport is built, never in
argv or the environment (`child_env`; `take` refuses a spare whose environment holds the run's key).

Lifetime: one spare per process at most. The command calls `discard` however it ends (done, a config
error, a refused lock, Ctrl-C before its signal handlers): a spare never taken is killed there. A parent
killed outright (SIGTERM before its handlers, kill -9) closes the spare's stdin, and the spare, which reads
its config once its imports are done, reads EOF instead and exits.

This module imports neither asyncio nor the transports: it runs before the CLI imports the pipeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from connector.config import Pipeline
from connector.config.destination import resolve_destination
from connector.delivery.mode import early_mode, transport_kind
from connector.errors import ConfigError

__all__ = ["child_env", "discard", "spawn", "start", "take", "wanted"]

CHILD_MODULE = "connector.delivery.transport.child"
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET")


def package_root() -> Path:
    """The folder holding the `connector` package this module belongs to (the child imports the same code)."""
    return Path(__file__).resolve().parents[2]


def child_env(environ: Mapping[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    """The child's environment: ours without the API key, which reaches it only in the config frame.

    Left out: any variable whose value holds one of `secrets` (the key, whatever variable
    destination.api_key_env names), and any BRAZE_* variable named like a key, token or secret.
    """
    out: dict[str, str] = {}
    for name, value in environ.items():
        upper = name.upper()
        if "BRAZE" in upper and any(w in upper for w in _SECRET_WORDS):
            continue
        if any(s and s in value for s in secrets):
            continue
        out[name] = value
    return out


def spawn(secrets: tuple[str, ...], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start an HTTP child: it imports, then waits for its config frame on stdin. Its environment is `env`
    (child_env's of ours by default) with this package first on PYTHONPATH.

    Raises:
        OSError: the process could not be started.
    """
    root = str(package_root())
    env = dict(child_env(os.environ, secrets) if env is None else env)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, "-m", CHILD_MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        # A session of its own: Ctrl-C in a terminal (SIGINT to the whole foreground process group)
        # must not kill requests in flight; the parent stops the child by closing its stdin.
        start_new_session=True,
    )


@dataclass
class _Spare:
    proc: subprocess.Popen[bytes]
    env_values: tuple[str, ...]  # what its environment held, to check against the run's key at `take`


_lock = threading.Lock()
_spare: _Spare | None = None


def wanted(
    pipeline: Pipeline, mode: str | None, *, offline: bool, resume: bool, environ: Mapping[str, str] = os.environ
) -> tuple[str, ...] | None:
    """The secrets to keep out of the child's environment when this command's run will send through the HTTP
    child; None when it will not, or cannot tell yet (mode auto, --resume without --mode), or the run will be
    refused for its destination anyway (no key, a bad URL: the run says so)."""
    if offline:
        return None
    mode = early_mode(pipeline, mode, resume=resume)
    if mode is None or transport_kind(pipeline, mode) != "aiohttp-process":
        return None
    try:
        dest = resolve_destination(pipeline, environ, offline=False)
    except ConfigError:
        return None
    # The embedded emulator's key is made up at random and never in the environment.
    return (dest.api_key,) if dest.kind == "rest" and dest.api_key else ()


def start(pipeline: Pipeline, mode: str | None, *, offline: bool, resume: bool) -> int | None:
    """Spawn the spare if the run will want one (see `wanted`): its pid, else None. If it cannot be spawned,
    the transport tries again when the run builds it (and reports the failure there)."""
    secrets = wanted(pipeline, mode, offline=offline, resume=resume)
    if secrets is None:
        return None
    discard()
    env = child_env(os.environ, secrets)
    try:
        proc = spawn(secrets, env)
    except OSError:
        return None
    global _spare
    with _lock:
        _spare = _Spare(proc, tuple(env.values()))
    return proc.pid


def take(secrets: tuple[str, ...]) -> subprocess.Popen[bytes] | None:
    """The spare, now the caller's, if there is one still running whose environment holds none of
    `secrets` (the run's key); else None (a spare not fit for this run is stopped)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is None:
        return None
    if spare.proc.poll() is None and not any(s and s in v for s in secrets for v in spare.env_values):
        return spare.proc
    _stop(spare.proc)
    return None


def discard() -> None:
    """Stop the spare if no transport took it (the run ended, failed or was refused before its client)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is not None:
        _stop(spare.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a spare (it holds no request: nothing to let finish), and close our ends of its pipes."""
    try:
        proc.kill()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
