"""The requests on the wire, so that a stopped run can stop waiting for them without counting a row twice.

A worker registers each request before it is sent (`begin`) and claims the outcome when the answer (or the
error) comes back (`end`). The writer's close() waits for the jobs (`wait_for_jobs`); when a stopped run's
grace period (`write.stop_grace_s`) is over first, it calls `give_up()`: every request still on the wire is
handed over, with the requests its job had left, and the worker that later gets its answer records
nothing; requests not yet taken by a worker are drained from the queue. Each row thus gets exactly one
outcome, from exactly one thread: unknown (on the wire) or not sent.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector.delivery.batching import Request

if TYPE_CHECKING:
    from connector.delivery.schedule import OrderedQueue
    from connector.stop import StopToken

logger = logging.getLogger(__name__)
# Seconds a worker not on the wire may take to finish its job once the run gave up (local work only).
SETTLE_S = 5.0


def wait_for_jobs(queue: OrderedQueue, token: StopToken | None, grace_s: float) -> bool:
    """Wait until every job of the closed queue is done; False when a stop's grace period ran out first."""
    while not queue.wait_idle(0.2):
        left = token.remaining(grace_s) if token is not None else None
        if left is not None and left <= 0:
            return False
    return True


def waiting_over(token: StopToken, grace_s: float) -> str:
    """The error of rows given up on: why their answer was not waited for."""
    waited = "no wait: stopped at once" if token.immediate else f"write.stop_grace_s {grace_s:g} s"
    return f"no answer before the run {token.reason} ({waited}); Braze may have applied it"


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

    def give_up(self, queue: OrderedQueue, error: str, *, unknown: Callable[[Any, Request, str], None],
                not_sent: Callable[[Any, Request], None]) -> None:  # fmt: skip
        """Record the requests on the wire as `unknown` (with `error`) and the rest of their jobs and every
        queued request as `not_sent`; then let the workers not on the wire finish (briefly)."""
        given_up = self.take_over()
        for g in given_up:
            unknown(g.batch, g.request, error)
            for rest in g.rest:
                not_sent(g.batch, rest)
        for batch, request in queue.drain():
            not_sent(batch, request)
        if given_up:
            logger.warning("gave up waiting for %d request(s) in flight; their rows are failed as unknown",
                           len(given_up))  # fmt: skip
        queue.wait_idle(SETTLE_S, allow=len(given_up))

    def take_over(self) -> list[GivenUp]:
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
