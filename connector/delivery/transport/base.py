"""What every transport shares: the raw Answer, the two failure kinds, and the Transport protocol.

A transport sends one POST and returns the raw answer, or raises `NotSent` (nothing reached the server:
safe to resend) or `SentLost` (the connection failed after the request was sent: Braze may or may not have
applied it). Status codes, retries and the rate limiter are the client's business (delivery/client.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes


class NotSent(Exception):
    """The request never reached the server (refused, DNS, connect timeout, TLS): safe to resend."""


class SentLost(Exception):
    """The connection failed after the request was sent (reset, read timeout): outcome unknown."""


# Called right before a request leaves: returns when it may (its journal record is on disk), or raises to
# stop it (the exception reaches the sender; nothing was sent). The process transport calls it on its writer
# thread, so the senders do not each wait for the journal.
Gate = Callable[[], None]


class Transport(Protocol):
    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer: ...

    def close(self, wait_s: float | None = None) -> None:
        """Release the connections; `wait_s` bounds any wait for requests still in flight."""
        ...
