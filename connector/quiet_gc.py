"""Garbage-collector settings while the command starts (cli.py) and while a run streams rows (pipeline.run_pipeline)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Cyclic-GC thresholds while rows stream: a run allocates millions of short-lived dicts (freed by reference
# counting), which trigger full collections over every long-lived object (Great Expectations alone brings
# hundreds of thousands). Each stops every thread for tens of milliseconds; in a bulk run that showed as
# dips of 15 % in requests/s (BENCHMARKS.md). Frozen objects are skipped by the collector.
GC_THRESHOLDS = (50_000, 20, 100)

# Whether pause_for_startup() turned the collector off (and it is still off on that account).
_paused = False


def pause_for_startup() -> bool:
    """No cyclic collections while the command starts, until end_startup_pause() or quiet_gc() begins.

    Before its first request a run imports typer, pydantic, numpy, pyarrow and the connector and builds the
    pipeline's models: objects that all live, which the collector walked ~130 times (3 full collections) to
    free nothing, ~10 % of the main process's CPU to the first request (BENCHMARKS.md). Returns whether this
    call turned the collector off: a pause already begun, or a collector already off (an embedding
    program's choice), is left as it is.
    """
    global _paused
    if not gc.isenabled():
        return False
    gc.disable()
    _paused = True
    return True


def end_startup_pause() -> None:
    """The collector back on if pause_for_startup() turned it off (idempotent).

    Everything allocated during the pause is young then, and the next allocation collects it once; only
    quiet_gc() avoids that pass, by freezing it first.
    """
    global _paused
    if _paused:
        _paused = False
        gc.enable()


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Freeze what exists (modules, suites) and collect less often during the run; restore afterwards."""
    before = gc.get_threshold()
    if _paused:
        # Everything since the pause began is the start-up's (modules, models): frozen as it is. A young
        # collection would walk all of it once (~40 ms) for the little garbage it holds, freed after the run.
        gc.freeze()
        end_startup_pause()
    else:
        # The young generations only: a full collection here walks every object of the process (35 ms after
        # the imports, more in a long-lived one), and garbage frozen with the rest is freed after the run.
        gc.collect(1)
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
