"""OrderGate: keeps each user's requests in source order across concurrent workers (strict FIFO admission)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Ticket:
    """Admission to the OrderGate: its FIFO sequence number and the user keys it holds."""

    seq: int
    keys: frozenset[str]
    done: bool = field(default=False)


class OrderGate:
    """Keeps each user's requests in source order across concurrent workers (strict FIFO admission).

    `enter(keys)` registers the request immediately (in call order) and blocks until no earlier, still
    unfinished request shares a user key with it; `leave(ticket)` once the request has its final outcome
    (retries and splits included). A later request never overtakes an earlier conflicting one; requests
    for different users run concurrently.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queues: dict[str, deque[int]] = {}
        self._seq = 0

    def enter(self, user_keys: Iterable[str], timeout: float | None = None) -> Ticket:
        """Register and wait for the turn of a request touching `user_keys`.

        Raises:
            TimeoutError: `timeout` seconds passed first (the ticket is withdrawn).
        """
        with self._cv:
            ticket = Ticket(self._seq, frozenset(user_keys))
            self._seq += 1
            for k in ticket.keys:
                self._queues.setdefault(k, deque()).append(ticket.seq)
            if not self._cv.wait_for(lambda: self._is_first(ticket), timeout):
                self._remove(ticket)
                raise TimeoutError(
                    f"request {ticket.seq} waited over {timeout} s for an earlier request of its users"
                )
            return ticket

    def leave(self, ticket: Ticket) -> None:
        """The request is finished: let the next request of its users go."""
        with self._cv:
            if not ticket.done:
                self._remove(ticket)

    def pending(self) -> int:
        """User keys with a registered, unfinished request (for tests and progress)."""
        with self._cv:
            return len(self._queues)

    def _is_first(self, ticket: Ticket) -> bool:
        return all(self._queues[k][0] == ticket.seq for k in ticket.keys)

    def _remove(self, ticket: Ticket) -> None:
        ticket.done = True
        for k in ticket.keys:
            q = self._queues[k]
            q.remove(ticket.seq)
            if not q:
                del self._queues[k]
        self._cv.notify_all()
