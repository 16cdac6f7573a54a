"""Stopping a run from outside: a StopToken that the pipeline loop, the writer and the client check.

The first `request()` asks for a graceful stop: nothing more is read or sent, requests in flight get
`write.stop_grace_s` for their answers, and the report lists every row not processed. A second request
(or `request(now=True)`) stops at once: requests in flight are given up (their rows are `unknown`) and
rows not yet read are not listed. The CLI turns SIGINT and SIGTERM into requests (`handle_signals`); an
embedder (Airflow, a thread of its own) calls `request()` directly.

Signal handlers run on the main thread between two bytecodes, possibly while that thread holds a lock
the token's waiters need; so the handler only writes the signal number to a pipe, and a relay thread
turns it into a `request()` (the self-pipe pattern).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

logger = logging.getLogger(__name__)

__all__ = ["StopToken", "handle_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopToken:
    """Asks a run to stop: once gracefully, twice (or with now=True) at once. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._graceful = threading.Event()
        self._immediate = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self.reason = ""
        self.signum: int | None = None
        self.requested_at: float | None = None

    def request(self, reason: str = "stopped by the caller", *, now: bool = False,
                signum: int | None = None) -> None:  # fmt: skip
        """Ask the run to stop; a second request (or now=True) asks it to stop at once.

        Not for a signal handler (it takes locks): use handle_signals().
        """
        with self._lock:
            first = not self._graceful.is_set()
            if first:
                self.reason = reason
                self.signum = signum
                self.requested_at = self._clock()
            elif not self._immediate.is_set():
                now = True
                if signum is not None:
                    self.signum = signum
            callbacks = list(self._callbacks) if first else []
            if now:
                self._immediate.set()
            self._graceful.set()
        if first:
            logger.warning("%s: stopping gracefully (nothing new is read or sent)", reason)
        if now:
            logger.warning("%s: stopping at once", reason if first else "second stop request")
        for cb in callbacks:
            cb()

    @property
    def stopping(self) -> bool:
        """A stop was requested (graceful or immediate)."""
        return self._graceful.is_set()

    @property
    def immediate(self) -> bool:
        """The run must stop at once (a second request)."""
        return self._immediate.is_set()

    def deadline(self, grace_s: float) -> float | None:
        """When requests in flight stop being waited for (the token's clock); None before a request."""
        with self._lock:
            if self.requested_at is None:
                return None
            return self.requested_at if self._immediate.is_set() else self.requested_at + grace_s

    def remaining(self, grace_s: float) -> float | None:
        """Seconds left of the grace period (0 once over or stopped at once); None before a request."""
        end = self.deadline(grace_s)
        return None if end is None else max(0.0, end - self._clock())

    def sleep(self, seconds: float) -> None:
        """time.sleep that returns early once a stop is requested (backoff and rate-limit waits)."""
        if seconds > 0:
            self._graceful.wait(seconds)

    def wait_immediate(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a request to stop at once; True when there is one."""
        return self._immediate.wait(timeout)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the requesting thread) at the first request; at once if it was already made."""
        with self._lock:
            if not self._graceful.is_set():
                self._callbacks.append(callback)
                return
        callback()

    @property
    def exit_code(self) -> int:
        """4 after a graceful stop; 128 + the signal number when a signal stopped the run at once."""
        if self._immediate.is_set() and self.signum is not None:
            return 128 + self.signum
        return 4


def signal_reason(signum: int) -> str:
    """'stopped by SIGTERM' and the like."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"stopped by {name}"


@contextlib.contextmanager
def handle_signals(token: StopToken, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[bool]:
    """While inside, SIGINT and SIGTERM ask `token` to stop; the third restores the default (kills).

    Yields whether the handlers were installed: only the main thread of the main interpreter can install
    them; anywhere else nothing changes (the caller's own handling stays).
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    seen = [0]

    def handler(signum: int, frame: FrameType | None) -> None:
        seen[0] += 1
        if seen[0] >= 2:  # a third signal must be able to kill a run that is stuck anyway
            for s in signals:
                signal.signal(s, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.write(write_fd, bytes([signum]))

    def relay() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            for signum in data:
                if signum == 0:  # our own end marker
                    return
                token.request(signal_reason(signum), signum=signum)
            if not data:
                return

    thread = threading.Thread(target=relay, name="braze-stop-signals", daemon=True)
    thread.start()
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        with contextlib.suppress(OSError):
            os.write(write_fd, b"\0")
        thread.join(5)
        os.close(write_fd)
        os.close(read_fd)
