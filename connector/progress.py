"""Run progress: a two-line live display on a terminal, plain periodic log lines otherwise.

The display fits the terminal's width (80 columns and less): the first line has a bar of the rows
*settled* (delivered, rejected, skipped or failed; reading runs ahead of delivery, so rows read would
say "done" while most rows are still unsent), requests/s and an ETA from the settling rate; the second
line has the counts. Log records go through the same rich Console (connector/logs.py), so they scroll
above the display and never into it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

log = logging.getLogger(__name__)

COUNTERS = ("read", "delivered", "rejected", "skipped", "failed", "requests")
SETTLED = ("delivered", "rejected", "skipped", "failed")
RATE_WINDOW_S = 30.0  # the ETA follows the settling rate of the last half minute


class Progress:
    """Thread-safe run progress; use as a context manager around the run.

    Counts come from `follow(source)` (a callable returning the current counts, polled by the display) or
    from `update()` increments. On a terminal (or `terminal=True`) a rich live display shows them;
    otherwise one INFO line every `interval_s` seconds (and a final line on exit). `Progress.disabled()`
    does nothing and costs almost nothing.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        interval_s: float = 10.0,
        terminal: bool | None = None,
        stream: TextIO | None = None,
        console: Console | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.total_exact = True  # False: the total is an estimate (a CSV's rows before reading it)
        self.interval_s = interval_s
        self.enabled = enabled
        self._console = console
        self._stream = stream or (console.file if console is not None else sys.stderr)
        self.terminal = (console is not None or self._stream.isatty()) if terminal is None else terminal
        self._clock = clock
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._source: Callable[[], Mapping[str, int]] | None = None
        self._t0 = clock()
        self._requests: deque[tuple[float, int]] = deque(maxlen=64)  # (time, requests) for a rolling req/s
        self._settled: deque[tuple[float, int]] = deque(maxlen=256)  # (time, rows settled) for the ETA
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None

    @classmethod
    def disabled(cls) -> Progress:
        """A Progress that shows and logs nothing (tests, library use)."""
        return cls(enabled=False, terminal=False)

    # ---- counters -------------------------------------------------------------------------------
    def set_total(self, n: int | None, *, exact: bool = True) -> None:
        """Set the expected number of rows (enables the bar and the ETA); `exact` False: an estimate,
        shown as "~N"."""
        with self._lock:
            self.total = n
            self.total_exact = exact

    def follow(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Read the counts from `source()` (keys of COUNTERS) whenever the display needs them."""
        with self._lock:
            self._source = source

    def update(
        self,
        *,
        read: int = 0,
        delivered: int = 0,
        rejected: int = 0,
        skipped: int = 0,
        failed: int = 0,
        requests: int = 0,
    ) -> None:
        """Add these increments to the counters."""
        if not self.enabled:
            return
        with self._lock:
            for key, value in zip(COUNTERS, (read, delivered, rejected, skipped, failed, requests), strict=True):
                self.counts[key] += value
        self.refresh()

    def refresh(self) -> dict[str, int]:
        """Take the current counts (from the followed source, if any) and note them for the rates."""
        with self._lock:
            if self._source is not None:
                fresh = self._source()
                self.counts = {k: int(fresh.get(k, 0)) for k in COUNTERS}
            now = self._clock()
            c = dict(self.counts)
            if not self._requests or self._requests[-1][1] != c["requests"]:
                self._requests.append((now, c["requests"]))
            settled = sum(c[k] for k in SETTLED)
            if not self._settled or self._settled[-1][1] != settled:
                self._settled.append((now, settled))
            return c

    def requests_per_s(self) -> float:
        """Requests per second over the last few seconds (over the whole run when it just started)."""
        with self._lock:
            return self._rate(self._requests, 5.0, self.counts["requests"])

    def _rate(self, samples: deque[tuple[float, int]], window_s: float, count: int) -> float:
        now = self._clock()
        recent = [(t, n) for t, n in samples if now - t <= window_s]
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            return (recent[-1][1] - recent[0][1]) / max(recent[-1][0] - recent[0][0], now - recent[0][0])
        elapsed = now - self._t0
        return count / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds until every row is settled, at the settling rate of the last half minute."""
        with self._lock:
            total = self.total
            settled = sum(self.counts[k] for k in SETTLED)
            if not total or not settled:
                return None
            rate = self._rate(self._settled, RATE_WINDOW_S, settled)
        if rate <= 0:
            return None
        return max(0.0, (total - settled) / rate)

    def line(self) -> str:
        """The plain log line for the current state."""
        c = self.refresh()
        with self._lock:
            total, about = self.total, "" if self.total_exact else "~"
        of = f"/{about}{total:,}" if total else ""
        eta = self.eta_s()
        text = (
            f"progress: read {c['read']:,}{of} rows, delivered {c['delivered']:,}, rejected {c['rejected']:,}, "
            f"skipped {c['skipped']:,}, failed {c['failed']:,}, requests {c['requests']:,} "
            f"({self.requests_per_s():.1f}/s)"
        )
        return text + (f", ETA {duration_text(eta)}" if eta is not None else "")

    # ---- display --------------------------------------------------------------------------------
    def render_lines(self, width: int) -> list[str]:
        """The two lines of the terminal display, each at most `width` characters (plain text)."""
        c = self.refresh()
        with self._lock:
            total, exact = self.total, self.total_exact
        eta = self.eta_s()
        return _fit_display(c, total, self.requests_per_s(), eta, self._clock() - self._t0, width, exact=exact)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = self._console or Console(file=self._stream, force_terminal=True)
        self._live = Live(_Display(self), console=console, refresh_per_second=4, transient=False)
        self._live.start()

    def _log_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._log_line("progress:")

    def _log_line(self, head: str) -> None:
        line = self.line()
        log.info("%s", line.replace("progress:", head, 1), extra={"counters": dict(self.counts)})

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        self._t0 = self._clock()
        if self.terminal:
            self._start_live()
        else:
            self._thread = threading.Thread(target=self._log_loop, name="progress-log", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.enabled:
            return
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._log_line("done:")


class _Display:
    """The live renderable: asks the Progress for its lines at the console's current width."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        styles = {"delivered": "green", "rejected": "yellow", "skipped": "cyan", "failed": "red"}
        for line in self.progress.render_lines(options.max_width):
            text = Text(line, no_wrap=True, overflow="crop")
            for word, style in styles.items():
                text.highlight_regex(rf"\b{word} [0-9.,kM]+", style=style)
            yield text


def _fit_display(c: Mapping[str, int], total: int | None, rps: float, eta: float | None, elapsed: float,
                 width: int, *, exact: bool = True) -> list[str]:  # fmt: skip
    """Two lines within `width`: progress (bar when the total is known, "~N" when it is an estimate) and
    the counts."""
    settled = sum(c[k] for k in SETTLED)
    rate = f"{rps:,.1f} req/s"
    when = f"ETA {duration_text(eta)}" if eta is not None else "ETA -"
    clock = _clock_text(elapsed)
    if total:
        frac = min(1.0, settled / total)
        head = f"{frac:4.0%} of {'' if exact else '~'}{total:,} rows"
        tail = f"{rate}  {when}  {clock}"
        room = width - len(head) - len(tail) - 4
        if room < 8:
            tail = f"{rate}  {when}"
            room = width - len(head) - len(tail) - 4
        bar = _bar(frac, room) + "  " if room >= 8 else ""
        first = f"{bar}{head}  {tail}"
    else:
        first = f"read {c['read']:,} rows  {rate}  {clock}"
    counts = [("read", c["read"]), *((k, c[k]) for k in SETTLED)]
    for fmt in (_full, _short):
        second = "  ".join(f"{k} {fmt(n)}" for k, n in counts)
        if len(second) <= width:
            break
    return [first[:width], second[:width]]


def _bar(frac: float, width: int) -> str:
    filled = int(round(frac * width))
    return "━" * filled + "─" * (width - filled)


def _full(n: int) -> str:
    return f"{n:,}"


def _short(n: int) -> str:
    """1,234 / 12.3k / 1.23M: a count in at most six characters."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def _clock_text(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def duration_text(seconds: float) -> str:
    """42s, 3m05s, 2h10m."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
