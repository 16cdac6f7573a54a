"""Run the emulator: in-process on a background thread (`EmulatorServer`), as a subprocess, or in the foreground."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from connector.emulator.app import EmulatorApp, EmulatorConfig
from connector.emulator.handlers import BATCHING_MODES, Batching, Behaviour
from connector.emulator.nested import NESTED_SCOPES, NestedScope
from connector.emulator.store import Store
from connector.emulator.workspace import Workspace, parse_api_keys, parse_canvases

logger = logging.getLogger(__name__)


def build_config(
    *,
    api_keys: Any = ("test-key",),
    sync_beta: bool = False,
    batching: Batching = "combined",
    rate_limits: dict[str, Any] | None = None,
    latency_ms: float = 0.0,
    fault_rate: float = 0.0,
    faults: dict[str, float] | None = None,
    seed: int = 0,
    canvases: Any = None,
    accept_any_canvas: bool = False,
    array_max_length: int = 500,
    slow_ms: float = 1500.0,
    burst_429: int = 1,
    nested_invalid: NestedScope = "request",
    echo_key: bool = False,
) -> EmulatorConfig:
    """Validate options and build the app config (ValueError with a clear message when one is wrong).

    `api_keys`: strings `KEY` or `KEY:perm1,perm2`, or a dict key -> permissions (None = a plain key).
    A plain key may call every endpoint but the beta `/users/track/sync`; `sync_beta=True` grants that one
    to every key. `canvases`: the Canvas ids `/canvas/trigger/send` accepts, as `ID` / `ID=state` strings or
    a dict id -> active|paused|archived; `accept_any_canvas=True` accepts any id (as active).
    """
    if batching not in BATCHING_MODES:
        raise ValueError(f"batching must be one of {', '.join(BATCHING_MODES)}, not {batching!r}")
    if nested_invalid not in NESTED_SCOPES:
        raise ValueError(f"nested_invalid must be 'request' or 'attribute', not {nested_invalid!r}")
    keys = parse_api_keys(api_keys)
    if not keys:
        raise ValueError("at least one API key is required")
    workspace = Workspace(
        api_keys=keys,
        sync_beta=bool(sync_beta),
        canvases=parse_canvases(canvases),
        accept_any_canvas=bool(accept_any_canvas),
    )
    return EmulatorConfig(
        workspace=workspace,
        behaviour=Behaviour(
            batching=batching, array_max_length=array_max_length, nested_invalid=nested_invalid
        ),
        rate_limits=rate_limits,
        latency_ms=latency_ms,
        slow_ms=slow_ms,
        fault_rate=fault_rate,
        faults=faults,
        seed=seed,
        burst_429=burst_429,
        echo_key=echo_key,
    )


async def _start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


class EmulatorServer:
    """The emulator in a background thread with its own event loop; a context manager.

    Options are build_config's: `sync_beta=True` serves /users/track/sync to every key (else only keys listing
    `users.track.sync`), `canvases=("ID", "ID2=paused")` registers Canvas ids, `accept_any_canvas=True`
    takes any id. `start()` binds (port 0 = a free port) and sets `.url`; `stop()` shuts down cleanly. Helpers `stats()`,
    `ledger()`, `user()`, `reset()` call the inspection endpoints with the first API key.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, db: str = ":memory:", api_keys: Any = ("test-key",),
                 ledger_detail: str = "full", *, sync_beta: bool = False, canvases: Any = None,
                 accept_any_canvas: bool = False, **options: Any) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.db = db
        self.ledger_detail = ledger_detail
        self.config = build_config(api_keys=api_keys, sync_beta=sync_beta, canvases=canvases,
                                   accept_any_canvas=accept_any_canvas, **options)  # fmt: skip
        self.api_key = next(iter(self.config.workspace.api_keys))
        self.url = ""
        self.store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> EmulatorServer:
        """Start serving; returns self once the socket is bound."""
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.store = Store(self.db, self.ledger_detail)
                app = EmulatorApp(self.config, self.store).build()
                self._runner, self.port = loop.run_until_complete(_start_site(app, self.host, self.port))
            except BaseException as e:  # report bind errors to the caller
                error.append(e)
                ready.set()
                return
            self.url = f"http://{self.host}:{self.port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            self.store.close()
            loop.close()

        self._thread = threading.Thread(target=run, name="braze-emulator", daemon=True)
        self._thread.start()
        ready.wait(30)
        if error:
            raise error[0]
        logger.info("emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop the server and wait for the thread to end."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"Bearer {self.api_key}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def stats(self) -> dict[str, Any]:
        """GET /_emulator/stats."""
        return self._call("GET", "/_emulator/stats")  # type: ignore[no-any-return]

    def ledger(self, since: int = 0, applied: bool = True) -> list[dict[str, Any]]:
        """Every ledger entry with seq > since (pages through GET /_emulator/ledger)."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", f"/_emulator/ledger?since={since}&limit=1000&applied={int(applied)}")[
                "entries"
            ]
            if not page:
                return out
            out.extend(page)
            since = page[-1]["seq"]

    def user(self, kind: str, value: str) -> dict[str, Any] | None:
        """GET /_emulator/users/<kind>/<value>; None when there is no such profile."""
        return self._call("GET", f"/_emulator/users/{kind}/{urllib.parse.quote(value, safe='|')}")  # type: ignore[no-any-return]

    def dispatches(self) -> list[dict[str, Any]]:
        """GET /_emulator/dispatches."""
        return self._call("GET", "/_emulator/dispatches")["dispatches"]  # type: ignore[no-any-return]

    def reset(self) -> None:
        """POST /_emulator/reset."""
        self._call("POST", "/_emulator/reset")


class EmulatorProcess:
    """An emulator running as a child process (`python -m connector emulator ...`)."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> None:
        """SIGTERM, then wait (kill after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_subprocess(
    *args: str, api_keys: Sequence[str] = ("test-key",), host: str = "127.0.0.1", timeout: float = 30.0
) -> EmulatorProcess:
    """Start `braze-connector emulator --port 0 ...` in a child process and wait for its URL."""
    cmd = [sys.executable, "-m", "connector", "emulator", "--host", host, "--port", "0"]
    for key in api_keys:
        cmd += ["--api-key", key]
    cmd += list(args)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("listening on "):
                url = line.split()[-1]
                threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
                return EmulatorProcess(proc, url)
    finally:
        timer.cancel()
    proc.kill()
    raise RuntimeError(f"emulator subprocess exited before listening (exit code {proc.wait()})")


async def serve(
    config: EmulatorConfig, host: str, port: int, db: str, announce: Any = print, ledger_detail: str = "full"
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; `announce` gets the `listening on URL` line."""
    store = Store(db, ledger_detail)
    runner, bound = await _start_site(EmulatorApp(config, store).build(), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    shown = f"[{host}]" if ":" in host else host
    announce(f"listening on http://{shown}:{bound}")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        store.close()
