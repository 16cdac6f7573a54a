"""CPU per request of the writer's sending side alone: packing, the per-user queue, the client's retry
policy and limiter, outcome mapping and the report, with a transport that answers at once in-process.

    python bench/sender_cost.py --objects 150000

No HTTP and no child process, so what is left is the Python cost a request pays in the main process on
top of the HTTP exchange (issue 12: no thread per request in flight). CPU comes from time.process_time
(and time.thread_time for the writer's event-loop thread where the code has one); the figures do not
depend on the wall clock, but a loaded machine still inflates them (caches, hyperthreads).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import pyarrow as pa  # noqa: E402
from calibration import calibration_s  # noqa: E402

from connector import config  # noqa: E402
from connector.delivery.client import client_for  # noqa: E402
from connector.delivery.transport import Answer, Gate  # noqa: E402
from connector.delivery.writer import Writer  # noqa: E402
from connector.records import Chunk, MappedChunk  # noqa: E402
from connector.report import RunReport  # noqa: E402

BODY = b'{"message":"success","attributes_processed":75}'
HEADERS = {"content-type": "application/json"}


class Instant:
    """A transport answering 201 at once, in-process."""

    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        if gate is not None:
            gate()
        return Answer(201, HEADERS, BODY)

    async def send_async(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        return self.send(url, body, gate)

    def close(self, wait_s: float | None = None) -> None:
        pass


def measure(n: int) -> str:
    pipeline = config.Pipeline.model_validate({
        "name": "sender_cost",
        "destination": {"url": "http://127.0.0.1:9", "api_key_env": "X"},
        "write": {"concurrency": 160, "rate_limits": {"users_track": {"requests": 10**6, "per_seconds": 1}}},
        "streams": [{"name": "s", "source": {"path": "people.csv"}, "kind": "attributes",
                     "identifier": {"external_id": "id"}, "attributes": [{"column": "plan"}]}],
    })  # fmt: skip
    objects: list[dict[str, Any]] = [{"external_id": f"u{i}", "plan": "pro"} for i in range(n)]
    chunk = Chunk("people.csv", pa.table({"id": [f"u{i}" for i in range(n)]}), [i + 2 for i in range(n)])
    mapped = MappedChunk("attributes", chunk, objects, list(range(n)), [f"external_id:u{i}" for i in range(n)])
    report = RunReport("bench", report_dir=Path(tempfile.mkdtemp()) / "report")
    client = client_for(pipeline, "http://127.0.0.1:9", "k", "sync")
    client._transport = Instant()  # type: ignore[assignment]
    loop_cpu = _time_sender_thread()
    c0, m0 = time.process_time(), time.thread_time()
    writer = Writer(pipeline, client, report, mode="bulk")
    writer.submit(pipeline.streams[0], mapped)
    writer.close()
    cpu, main = time.process_time() - c0, time.thread_time() - m0
    requests = report.to_dict()["requests"]["total"]
    per = 1e6 / requests
    split = f"; submitting thread {main * per:.0f} us, event-loop thread {loop_cpu[0] * per:.0f} us" if loop_cpu[0] else ""
    return (f"{n:,} objects in {requests:,} requests: {cpu * per:.0f} us of CPU per request "
            f"(= {cpu * 1e6 / n:.2f} s per 1M objects){split}")  # fmt: skip


def _time_sender_thread() -> list[float]:
    """The CPU seconds of the writer's event-loop thread, once it ends (0 where the code has none)."""
    out = [0.0]
    try:
        from connector.delivery.sender import Sender
    except ImportError:
        return out
    main = Sender._main

    def timed(self: Sender) -> None:
        try:
            main(self)
        finally:
            out[0] = time.thread_time()

    Sender._main = timed  # type: ignore[method-assign]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=150_000)
    a = ap.parse_args()
    print(f"# bench/sender_cost.py --objects {a.objects}  ({os.cpu_count()} cores)")
    print(f"calibration loop (10M-iteration for): {calibration_s():.2f} s CPU")
    print(measure(a.objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
