"""The emulator's HTTP layer (aiohttp): auth, permissions, rate limits, faults, parsing, inspection routes.

One catch-all handler keeps the hot path short. Everything runs on one event loop, so store writes are
serialised; injected latency uses asyncio.sleep and never blocks other requests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from connector.emulator import deletes, handlers, rules
from connector.emulator.faults import ERROR_MESSAGES, FaultInjector
from connector.emulator.limits import ENDPOINTS, PATH_TO_ENDPOINT, RateLimits
from connector.emulator.store import IDENTIFIER_KINDS, LedgerEntry, Store
from connector.emulator.workspace import Workspace

logger = logging.getLogger(__name__)

_EMPTY_LIMIT_HEADERS = {"X-RateLimit-Limit": "", "X-RateLimit-Remaining": "", "X-RateLimit-Reset": ""}
# As recorded from the live API (braze_ruby VCR cassettes): 200/201 answers carry the first; errors and the
# 202s (queued catalog writes) the second.
_CACHE_OK = {"Cache-Control": "max-age=0, private, must-revalidate"}
_CACHE_ERROR = {"Cache-Control": "no-cache"}
SERVED = tuple(f"POST {path}" for path in ENDPOINTS.values())


def not_served(method: str, path: str) -> dict[str, Any]:
    """The 404 body for a route the emulator does not serve: Braze's "Not Found", and what it does serve.

    Braze answers an invalid URL with 404 Not Found (errors.md); the emulator names the request and lists
    its endpoints, so that a call to a Braze endpoint it does not model is not mistaken for a typo.
    """
    return {
        "message": f"Not Found: the Braze emulator does not serve {method} {path}; it serves "
        + ", ".join(SERVED),
        "served": list(SERVED),
    }


@dataclass
class EmulatorConfig:
    """Everything the running app needs; built by EmulatorServer or the CLI."""

    workspace: Workspace
    behaviour: handlers.Behaviour = field(default_factory=handlers.Behaviour)
    rate_limits: dict[str, Any] | None = None
    latency_ms: float = 0.0
    slow_ms: float = 1500.0
    fault_rate: float = 0.0
    faults: dict[str, float] | None = None
    seed: int = 0
    burst_429: int = 1
    # A fault for the client's tests: every API reply echoes the caller's key (in `message`, and in a 2xx's
    # `errors[]` naming the request's first object), as a careless server might.
    echo_key: bool = False


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={**(_CACHE_OK if status in (200, 201) else _CACHE_ERROR), **(headers or {})},
    )


def _broadcast_audience(raw: bytes) -> str | None:
    """The unique audience of a broadcast canvas trigger (Canvas id + `audience` object), or None.

    Only `broadcast: true` calls target a segment or connected audience; calls naming recipients (with or
    without `audience`) count against the shared 250,000/h bucket (braze-api.md §7.4).
    """
    if len(raw) > rules.MAX_BODY_BYTES:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("broadcast") is not True:
        return None
    return orjson.dumps([body.get("canvas_id"), body.get("audience")], option=orjson.OPT_SORT_KEYS).decode()


def _echo_key(response: web.StreamResponse, key: str, raw: bytes) -> None:
    """Put the caller's key into a JSON reply: its message, and for a 2xx an error on the first object."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return
    try:
        reply, sent = orjson.loads(response.body), orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(reply, dict):
        return
    reply["message"] = f"{reply.get('message', '')} (request made with key {key})"
    arrays = [a for a in ("attributes", "events", "purchases", "recipients") if isinstance(sent, dict) and sent.get(a)]
    if 200 <= response.status < 300 and arrays:
        found = reply.get("errors")
        errors: list[Any] = found if isinstance(found, list) else []
        reply["errors"] = [*errors, {"type": f"key {key} is not allowed here", "input_array": arrays[0], "index": 0}]
    response.body = orjson.dumps(reply)


class EmulatorApp:
    """Holds the state (store, limits, faults) and the request handler."""

    def __init__(self, config: EmulatorConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.limits = RateLimits(config.rate_limits)
        self.faults = FaultInjector(
            fault_rate=config.fault_rate, faults=config.faults, seed=config.seed, burst_429=config.burst_429
        )

    def build(self) -> web.Application:
        """The aiohttp application (bodies up to 16 MB are read so that 4 MB+ gets Braze's 413)."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def _key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request (echoing the key into the reply with `echo_key`)."""
        response = await self._route(request)
        if self.config.echo_key and not request.path.startswith("/_emulator/"):
            _echo_key(response, self._key(request) or "", await request.read())
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        key = self._key(request)
        workspace = self.config.workspace
        valid = workspace.knows(key)
        if path.startswith("/_emulator/"):
            if not valid:
                return _json(
                    401,
                    {"message": f"Invalid API key: {key}" if key else "Invalid API Key"},
                    _EMPTY_LIMIT_HEADERS,
                )
            return await self.inspect(request, path)
        endpoint = PATH_TO_ENDPOINT.get(path)
        if not valid:  # Braze checks the key before the route: a bad key gets 401 on any path (recorded)
            self.store.record(LedgerEntry(path, 401))
            return _json(
                401,
                {"message": f"Invalid API key: {key}" if key else "Invalid API Key"},
                _EMPTY_LIMIT_HEADERS,
            )
        if endpoint is None or request.method != "POST":
            self.store.record(LedgerEntry(path, 404))
            return _json(404, not_served(request.method, path), _EMPTY_LIMIT_HEADERS)
        if not workspace.allows(key, endpoint):  # type: ignore[arg-type]
            # The key lacks the endpoint's permission (for /users/track/sync: the workspace is not in the
            # beta, so no key carries it): errors.md's "403 Access Denied".
            self.store.record(LedgerEntry(path, 403))
            return _json(403, {"message": "Access Denied"}, self.limits.peek(endpoint))
        audience = _broadcast_audience(await request.read()) if endpoint == "canvas_trigger_send" else None
        if audience is None:
            decision = self.limits.admit(endpoint)
        else:
            decision = self.limits.admit_broadcast(audience)
        if not decision.allowed:
            self.store.record(LedgerEntry(path, 429))
            return _json(429, {"message": "Rate Limited"}, decision.headers)
        return await self._serve(request, endpoint, path, decision.headers)

    async def _serve(
        self, request: web.Request, endpoint: str, path: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        raw = await request.read()
        if len(raw) > rules.MAX_BODY_BYTES:
            self.store.record(LedgerEntry(path, 413))
            return _json(413, {"message": "Payload Too Large"}, headers)
        fault = self.faults.draw(endpoint) if self.faults.enabled else None
        delay = self.config.latency_ms + (self.config.slow_ms if fault == "slow" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if fault in ERROR_MESSAGES:
            status = int(fault)
            self.store.record(LedgerEntry(path, status, fault=fault))
            if status == 429:
                return _json(429, {"message": "Rate Limited"}, {"X-Ratelimit-Retry-After": "1"})
            return _json(status, {"message": ERROR_MESSAGES[fault]}, headers)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.store.record(LedgerEntry(path, 400, fault=fault))
            return _json(400, rules.MALFORMED_JSON_BODY, headers)
        dropped = fault == "drop"
        cfg = self.config
        if endpoint == "users_track" or endpoint == "users_track_sync":
            status, reply, entry = handlers.track(
                self.store,
                body,
                cfg.behaviour,
                endpoint=path,
                sync=endpoint == "users_track_sync",
                dropped=dropped,
                fault=fault,
            )
        elif endpoint == "canvas_trigger_send":
            status, reply, entry = handlers.canvas_trigger(
                self.store, body, cfg.behaviour, cfg.workspace, endpoint=path, dropped=dropped, fault=fault
            )
        elif endpoint == "users_delete":
            status, reply, entry = deletes.users_delete(
                self.store, body, endpoint=path, dropped=dropped, fault=fault
            )
        else:
            status, reply, entry = handlers.live_activity(
                self.store, body, endpoint=path, dropped=dropped, fault=fault
            )
        if dropped:
            # Applied and committed; now the client never hears back (the case that makes clients resend).
            logger.debug("dropping connection after applying %s (ledger status %s)", path, entry.status)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return _json(status, reply, headers)

    async def inspect(self, request: web.Request, path: str) -> web.Response:
        """GET /_emulator/stats | ledger | users/<kind>/<value> | dispatches; POST /_emulator/reset."""
        sub = path[len("/_emulator/") :]
        if request.method == "POST" and sub == "reset":
            self.store.reset()
            return _json(200, {"message": "reset"})
        if request.method != "GET":
            return _json(404, {"message": "Not Found"})
        if sub == "stats":
            return _json(200, self.store.stats())
        if sub == "ledger":
            try:
                since = int(request.query.get("since", "0"))
                limit = min(int(request.query.get("limit", "1000")), 10_000)
            except ValueError:
                return _json(400, {"message": "since and limit must be integers"})
            entries = self.store.ledger(since, limit + 1)
            more = len(entries) > limit  # a page: the caller asks again with since=next_since
            entries = entries[:limit]
            if request.query.get("applied") == "0":
                for e in entries:
                    e.pop("applied")
            page = {"more": more, "next_since": entries[-1]["seq"] if entries else since, "limit": limit}
            return _json(200, {"entries": entries, **page})
        if sub == "dispatches":
            return _json(200, {"dispatches": self.store.dispatches()})
        if sub.startswith("users/"):
            kind, _, value = sub[len("users/") :].partition("/")
            if kind not in IDENTIFIER_KINDS or not value:
                return _json(
                    400, {"message": f"identifier kind must be one of {', '.join(IDENTIFIER_KINDS)}"}
                )
            profile = self.store.profile(kind, value)
            if profile is None:
                return _json(404, {"message": f"no profile with {kind} {value!r}"})
            return _json(200, profile)
        return _json(404, {"message": "Not Found"})


__all__ = ["ENDPOINTS", "SERVED", "EmulatorApp", "EmulatorConfig", "not_served"]
