"""`braze-connector` with the shared limiter's grants recorded: for bench/shared_limits.py --trace.

    python bench/traced_worker.py TRACE_FILE run PIPELINE --partition K/N ...

Runs the CLI unchanged, except that every slot the shared limiter grants is appended to TRACE_FILE when
the process ends, as one line `slot returned` (epoch seconds): when the budget put the request, and when
acquire() handed it to the client. Compared with the sink's log of arrivals, this tells whether requests
bunch in the limiter or after it (the HTTP child, the sink).
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Any

from connector.cli import main
from connector.delivery.shared_limits import SharedRateLimiter

_lines: list[str] = []
_lock = threading.Lock()
_mine = threading.local()
_reserve = SharedRateLimiter._reserve
_acquire = SharedRateLimiter.acquire


def _to_epoch(local: float) -> float:
    return local + time.time() - time.monotonic()


def _traced_reserve(self: SharedRateLimiter, *args: Any) -> Any:
    got = _reserve(self, *args)
    if got is not None:
        _mine.slot = _to_epoch(got[0])
    return got


def _traced_acquire(self: SharedRateLimiter, *args: Any, **kw: Any) -> float:
    waited = _acquire(self, *args, **kw)
    with _lock:
        _lines.append(f"{getattr(_mine, 'slot', 0.0):.6f} {time.time():.6f}\n")
    return waited


def _write(path: str) -> None:
    with open(path, "w") as f:
        f.writelines(_lines)


if __name__ == "__main__":
    trace = sys.argv.pop(1)
    SharedRateLimiter._reserve = _traced_reserve  # type: ignore[method-assign]
    SharedRateLimiter.acquire = _traced_acquire  # type: ignore[method-assign]
    atexit.register(_write, trace)
    sys.argv[0] = "braze-connector"
    main()
