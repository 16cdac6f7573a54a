"""Garbage-collector settings while a run streams rows (used by pipeline.run_pipeline)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Cyclic-GC thresholds while rows stream: a run allocates millions of short-lived dicts (freed by reference
# counting), which trigger full collections over every long-lived object (Great Expectations alone brings
# hundreds of thousands). Each stops every thread for tens of milliseconds; in a bulk run that showed as
# dips of 15 % in requests/s (BENCHMARKS.md). Frozen objects are skipped by the collector.
GC_THRESHOLDS = (50_000, 20, 100)


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Freeze what exists (modules, suites) and collect less often during the run; restore afterwards."""
    before = gc.get_threshold()
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
