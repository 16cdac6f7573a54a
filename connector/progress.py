"""Run progress: a rich progress bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

log = logging.getLogger(__name__)

COUNTERS = ("read", "delivered", "rejected", "failed", "requests")


class Progress:
    """Thread-safe run progress. `update()` adds deltas; use as a context manager around the run.

    On a terminal (or `terminal=True`) it shows a rich progress display: rows, delivered, rejected, failed,
    requests/s and an ETA once `set_total(n)` is known. Otherwise it logs one INFO line every `interval_s`
    seconds (and a final line on exit). `Progress.disabled()` does nothing and costs almost nothing.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        interval_s: float = 10.0,
        terminal: bool | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.interval_s = interval_s
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self.terminal = self._stream.isatty() if terminal is None else terminal
        self._clock = clock
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._t0 = clock()
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)  # (time, requests) for a rolling req/s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich: Any = None
        self._task: Any = None

    @classmethod
    def disabled(cls) -> Progress:
        """A Progress that shows and logs nothing (tests, library use)."""
        return cls(enabled=False, terminal=False)

    # ---- counters -------------------------------------------------------------------------------
    def set_total(self, n: int | None) -> None:
        """Set the expected number of rows (enables the ETA)."""
        with self._lock:
            self.total = n
        if self._rich is not None:
            self._rich.update(self._task, total=n)

    def update(
        self, *, read: int = 0, delivered: int = 0, rejected: int = 0, failed: int = 0, requests: int = 0
    ) -> None:
        """Add these increments to the counters."""
        if not self.enabled:
            return
        with self._lock:
            for key, value in zip(COUNTERS, (read, delivered, rejected, failed, requests), strict=True):
                self.counts[key] += value
            if requests:
                self._recent.append((self._clock(), self.counts["requests"]))
            snapshot = dict(self.counts)
        if self._rich is not None:
            self._rich.update(self._task, completed=snapshot["read"], **self._fields(snapshot))

    def requests_per_s(self) -> float:
        """Requests per second over the last few seconds (over the whole run when it just started)."""
        with self._lock:
            now = self._clock()
            recent = [(t, n) for t, n in self._recent if now - t <= 5.0]
            if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
                return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
            elapsed = now - self._t0
            return self.counts["requests"] / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the average rate so far, when the total is known."""
        with self._lock:
            read, total, elapsed = self.counts["read"], self.total, self._clock() - self._t0
        if not total or not read or elapsed <= 0:
            return None
        return max(0.0, (total - read) * elapsed / read)

    def line(self) -> str:
        """The plain log line for the current state."""
        with self._lock:
            c, total = dict(self.counts), self.total
        of = f"/{total:,}" if total else ""
        eta = self.eta_s()
        text = (
            f"progress: read {c['read']:,}{of} rows, delivered {c['delivered']:,}, rejected {c['rejected']:,}, "
            f"failed {c['failed']:,}, requests {c['requests']:,} ({self.requests_per_s():.1f}/s)"
        )
        return text + (f", ETA {_duration(eta)}" if eta is not None else "")

    # ---- display --------------------------------------------------------------------------------
    def _fields(self, c: dict[str, int]) -> dict[str, Any]:
        return {
            "delivered": f"{c['delivered']:,}",
            "rejected": f"{c['rejected']:,}",
            "failed": f"{c['failed']:,}",
            "rps": f"{self.requests_per_s():.1f}",
        }

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._rich = RichProgress(
            TextColumn("[bold]rows"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]delivered {task.fields[delivered]}"),
            TextColumn("[yellow]rejected {task.fields[rejected]}"),
            TextColumn("[red]failed {task.fields[failed]}"),
            TextColumn("{task.fields[rps]} req/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=self._stream, force_terminal=True),
            transient=False,
        )
        self._task = self._rich.add_task("rows", total=self.total, **self._fields(self.counts))
        self._rich.start()

    def _log_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            log.info("%s", self.line())

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        self._t0 = self._clock()
        if self.terminal:
            self._start_rich()
        else:
            self._thread = threading.Thread(target=self._log_loop, name="progress-log", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.counts["read"], **self._fields(self.counts))
            self._rich.stop()
            self._rich = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            log.info("%s", self.line().replace("progress:", "done:", 1))


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
