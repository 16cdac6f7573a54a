"""What the run journal costs a bulk run: the same delivery with and without it, alternated, on one sink.

    python bench/journal_cost.py [--rows 300000] [--repeat 3]

Two settings on the nginx sink (bench/sink.py), users table with the 5-expectation suite, bulk mode:
- at the limit: 1,000 requests/s, 100 ms latency (what a run against Braze does): requests/s while sending;
- unthrottled: no rate limit worth the name, 2 ms latency: the connector's own ceiling, where any CPU or
  fdatasync the journal adds shows up in full.
Variants: no journal (the journal factory patched out), the journal as shipped (fdatasync before requests
leave, group-committed), and the journal without fdatasync (to tell the sync's share from the encoding's).
Runs alternate variant by variant and the best of `--repeat` counts, so machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from data import write_parquet  # noqa: E402
from run import KEY, users_pipeline  # noqa: E402
from sink import NginxSink, nginx_available  # noqa: E402

import connector.delivery.resume as resume_module  # noqa: E402
from connector.pipeline import run_pipeline  # noqa: E402

SHIPPED = resume_module.open_journal


def _no_journal(*args: Any, **kwargs: Any) -> None:
    return None


def _no_sync(*args: Any, **kwargs: Any) -> Any:
    journal = SHIPPED(*args, **kwargs)
    journal._sync = False
    return journal


VARIANTS: dict[str, Callable[..., Any]] = {"no journal": _no_journal, "journal": SHIPPED, "journal, no fdatasync": _no_sync}


def _once(pipeline: Any, factory: Callable[..., Any]) -> tuple[float, float, float]:
    """(requests/s while sending, wall s, CPU µs per request in this process) of one run with this factory."""
    resume_module.open_journal = factory  # type: ignore[assignment]
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = run_pipeline(pipeline, env={**os.environ, "BENCH_BRAZE_KEY": KEY})
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        resume_module.open_journal = SHIPPED
    doc = report.to_dict()
    assert doc["rows"]["delivered"] == doc["rows"]["read"], doc["rows"]
    return float(doc["throughput"]["requests_per_s_sending"]), wall, cpu / doc["requests"]["total"] * 1e6


def _sender(journal: Any, mapped: Any, tokens: list[int], n: int) -> None:
    for _ in range(n):
        rid = journal.sending("users", mapped, tokens)
        journal.delivered(rid, mapped)


def journal_alone(requests: int = 20_000, threads: int = 32) -> list[str]:
    """The journal by itself: `threads` senders recording 75-row requests (sending, then delivered)."""
    import threading

    import pyarrow as pa

    from connector.delivery.journal import Journal
    from connector.records import Chunk, MappedChunk

    rows = list(range(2, 77))
    chunk = Chunk("data/users.parquet", pa.table({"i": rows}), rows)
    mapped = MappedChunk("attributes", chunk, [{}] * 75, list(range(75)), ["k"] * 75)
    tokens = list(range(75))
    out = [f"journal alone: {requests:,} requests of 75 rows from {threads} threads (sending + delivered records)"]
    with tempfile.TemporaryDirectory() as tmp:
        for sync in (True, False):
            journal = Journal(Path(tmp) / f"journal-{sync}.log", {"run_id": "bench"}, sync=sync)
            per = requests // threads
            t0, c0 = time.perf_counter(), time.process_time()
            workers = [threading.Thread(target=_sender, args=(journal, mapped, tokens, per)) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            journal.close(exit_code=0)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            n = per * threads
            label = "with fdatasync" if sync else "no fdatasync  "
            out.append(f"  {label}: {n / wall:8,.0f} requests/s, {cpu / n * 1e6:5.0f} µs CPU per request "
                       f"({(Path(tmp) / f'journal-{sync}.log').stat().st_size / n:.0f} bytes per request)")  # fmt: skip
    return out


def bench_journal(rows: int, repeat: int) -> list[str]:
    path = write_parquet("users", rows)
    out = [f"## Run journal cost: {rows:,}-row users Parquet, bulk, 75 objects/request, best of {repeat}"]
    settings = [("at the limit: 1,000 requests/s, 100 ms", 1000, 100.0, 160),
                ("unthrottled: 100,000 requests/s, 2 ms", 100_000, 2.0, 64)]  # fmt: skip
    for label, rps, latency, concurrency in settings:
        best: dict[str, tuple[float, float, float]] = {}
        cpu: dict[str, list[float]] = {}
        with NginxSink(latency_ms=latency, limit_rps=None if rps > 10_000 else rps, burst=rps // 10) as sink:
            pipeline = users_pipeline(path, sink.url, rps=rps, concurrency=concurrency)
            for _ in range(repeat):
                for name, factory in VARIANTS.items():
                    result = _once(pipeline, factory)
                    cpu.setdefault(name, []).append(result[2])
                    if name not in best or result[0] > best[name][0]:
                        best[name] = result
        base = best["no journal"][0]
        out.append(f"{label}:")
        base_cpu = min(cpu["no journal"])
        for name, (rate, wall, _cpu) in best.items():
            cost = "" if name == "no journal" else f" ({(base - rate) / base:+.1%} cost)".replace("+-", "-")
            extra = "" if name == "no journal" else f" ({min(cpu[name]) - base_cpu:+.0f} µs)"
            out.append(f"  {name:<22} {rate:8,.0f} requests/s while sending{cost}; wall {wall:.1f} s; main-process "
                       f"CPU {min(cpu[name]):.0f} µs per request{extra} (least of {repeat})")  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if reason := nginx_available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    print(f"# bench/journal_cost.py --rows {a.rows} --repeat {a.repeat}  (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, report folders under {tempfile.gettempdir()})")  # fmt: skip
    for line in journal_alone() + bench_journal(a.rows, a.repeat):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
