"""The requests on the wire, so that a stopped run can stop waiting for them without counting a row twice.

A worker registers each request before it is sent (`begin`) and claims the outcome when the answer (or the
error) comes back (`end`). When a stopped run's grace period is over, the writer calls `give_up()`: every
request still on the wire is handed over, with the requests its job had left, and the worker that later
gets its answer records nothing. Each row thus gets exactly one outcome, from exactly one thread.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

from connector.delivery.batching import Request


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A request whose answer the run stopped waiting for, and the requests of its job not yet sent."""

    batch: Any
    request: Request
    rest: list[Request]


class InFlight:
    """Requests on the wire; each one's outcome is recorded by its worker, unless the run gave up on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts: dict[int, tuple[Any, Request, list[Request]]] = {}
        self._ids = itertools.count(1)
        self._gave_up = False

    def begin(self, batch: Any, request: Request, rest: list[Request]) -> int | None:
        """Register a request about to be sent (`rest`: its job's requests still to send, shared with the
        worker); returns its ticket, or None once the run gave up (then it must not be sent)."""
        with self._lock:
            if self._gave_up:
                return None
            ticket = next(self._ids)
            self._posts[ticket] = (batch, request, rest)
            return ticket

    def end(self, ticket: int) -> bool:
        """The request's answer or error came back: True when the caller still owns its outcome."""
        with self._lock:
            return self._posts.pop(ticket, None) is not None

    def give_up(self) -> list[GivenUp]:
        """Take over every request still on the wire (their workers will record nothing); no new ones."""
        with self._lock:
            self._gave_up = True
            posts, self._posts = self._posts, {}
            out = []
            for batch, request, rest in posts.values():
                out.append(GivenUp(batch, request, list(rest)))
                rest.clear()  # its worker is waiting on the wire and touches the list only after end()
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._posts)
