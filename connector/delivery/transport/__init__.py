"""Transports: one POST, its raw answer, or NotSent (safe to resend) / SentLost (outcome unknown).

Interface: `make_transport(kind, base_url, headers, *, concurrency, timeout_s) -> Transport` with kind
`requests` (pooled Session; sync runs), `aiohttp` (an event-loop thread) or `aiohttp-process` (a child
process, process.py; bulk runs: it sends with libcurl's multi interface, curl_child.py, or with aiohttp,
child.py); `Transport.send(url, body) -> Answer`, `close()`.
The client (delivery/client.py) owns status codes, retries and the rate limiter.
"""

from __future__ import annotations

import logging
from typing import Any

from connector.delivery.transport.base import CONNECT_TIMEOUT_S, Answer, Gate, NotSent, SentLost, Transport

__all__ = ["CONNECT_TIMEOUT_S", "Answer", "Gate", "NotSent", "SentLost", "Transport", "make_transport"]

logger = logging.getLogger(__name__)


def make_transport(
    kind: str, base_url: str, headers: dict[str, str], *, concurrency: int, timeout_s: float
) -> Transport:
    """`requests`, `aiohttp` or `aiohttp-process` (the client resolves `auto` before calling)."""
    if kind == "aiohttp-process":
        from connector.delivery.transport.process import ProcessTransport, ProcessTransportError

        try:
            return ProcessTransport(base_url, headers, concurrency=concurrency, timeout_s=timeout_s)
        except ProcessTransportError as exc:
            logger.warning("%s; sending from this process instead (slower on a busy run)", exc)
            kind = "aiohttp"
    if kind == "aiohttp":
        from connector.delivery.transport.aiohttp_transport import AiohttpTransport

        cls: Any = AiohttpTransport
    else:
        from connector.delivery.transport.requests_transport import RequestsTransport

        cls = RequestsTransport
    return cls(base_url, headers, concurrency=concurrency, timeout_s=timeout_s)  # type: ignore[no-any-return]
