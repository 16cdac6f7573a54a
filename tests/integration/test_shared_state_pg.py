"""State in PostgreSQL shared by machines (issue 13, item 5): watermarks and the run lock live in the state
database, so two checkouts of one pipeline with nothing on disk in common (two "machines") continue each
other's watermark and never run at once. Real PostgreSQL on loopback (the `postgres_url` fixture)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sql_helpers import pg_exec
from test_incremental import last_seq, sent, ticks_stream
from test_pipeline_run import project

from connector.delta.marks import PgMarks
from connector.delta.pg import PgRunLock
from connector.delta.watermark import Watermarks, encode
from connector.errors import RunLocked
from connector.pipeline import run_pipeline
from connector.records import RowRef
from connector.runlock import RunLocks

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def machine(tmp_path: Path, name: str, table: str, pipeline_name: str, **stream: Any) -> Any:
    """A checkout of the pipeline in a folder of its own: its own reports, lock files and state.path."""
    root = tmp_path / name
    root.mkdir()
    return project(root, [{**ticks_stream(50, table), **stream}], state={"url_env": "STATE_PG_URL"}, name=pipeline_name)


def run(pipeline: Any, em: Any, pg: str, out: Path, **kw: Any) -> dict[str, Any]:
    env = {"PG_URL": pg, "STATE_PG_URL": pg, "BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}
    run_pipeline(pipeline, mode="bulk", report_dir=out, env=env, raise_on_failure=False, **kw)
    return dict(json.loads((out / "report.json").read_text(encoding="utf-8")))


def test_two_machines_continue_one_watermark(postgres_url: str, emulator: Any, tmp_path: Path) -> None:
    pg_exec(postgres_url, "DROP TABLE IF EXISTS shared_ticks",
            "CREATE TABLE shared_ticks (id int PRIMARY KEY, v int, updated_at timestamptz)",
            "INSERT INTO shared_ticks SELECT g, 1, timestamptz '2024-01-01' + (g / 3) * interval '1 minute' "
            "FROM generate_series(1, 120) g")  # fmt: skip
    name = f"shared-wm-{tmp_path.name}"
    a, b = machine(tmp_path, "a", "shared_ticks", name), machine(tmp_path, "b", "shared_ticks", name)
    first = run(a, emulator, postgres_url, tmp_path / "a" / "r1")
    assert first["rows"]["delivered"] == 120 and first["exit_code"] == 0
    assert not list(tmp_path.rglob("*.sqlite"))  # nothing of the state on either machine's disk

    # Machine b has never run: the watermark it reads is a's. New rows, one of them a tie at the watermark.
    mark = last_seq(emulator)
    pg_exec(postgres_url, "INSERT INTO shared_ticks VALUES (121, 1, timestamptz '2024-01-01' + 40 * interval "
            "'1 minute'), (122, 1, timestamptz '2024-02-01')")  # fmt: skip
    second = run(b, emulator, postgres_url, tmp_path / "b" / "r1")
    assert second["rows"]["delivered"] == 2 and second["rows"]["read"] <= 4  # ties at W are read, not resent
    assert sent(emulator, mark) == Counter({"u121": 1, "u122": 1})
    env = {"STATE_PG_URL": postgres_url}  # a partition of the pipeline (file sources) keeps a watermark of its own
    assert Watermarks(PgMarks("STATE_PG_URL", name, "all", env, read_only=True)).stored("ticks", "updated_at")
    assert Watermarks(PgMarks("STATE_PG_URL", name, "p1of2", env, read_only=True)).stored("ticks", "updated_at") is None


def test_a_run_on_another_machine_holds_the_lock(postgres_url: str, emulator: Any, tmp_path: Path) -> None:
    pg_exec(postgres_url, "DROP TABLE IF EXISTS locked_ticks",
            "CREATE TABLE locked_ticks (id int PRIMARY KEY, v int, updated_at timestamptz)",
            "INSERT INTO locked_ticks VALUES (1, 1, now())")  # fmt: skip
    name = f"shared-lock-{tmp_path.name}"
    b = machine(tmp_path, "b", "locked_ticks", name)
    env = {"STATE_PG_URL": postgres_url}
    holder = PgRunLock("STATE_PG_URL", name, None, env)  # machine a's run, in the middle of its work
    assert holder.acquire("machine-a", 4242, "2026-12-02T10:00:00Z")
    try:
        with pytest.raises(RunLocked, match=r"already running against its shared state \(\$STATE_PG_URL\).*pid 4242 on machine-a"):
            run(b, emulator, postgres_url, tmp_path / "b" / "r1")
        assert len(emulator.ledger()) == 0
    finally:
        holder.release()
    assert run(b, emulator, postgres_url, tmp_path / "b" / "r3")["rows"]["delivered"] == 1


def test_partitions_share_the_database_but_not_a_partition(postgres_url: str) -> None:
    env = {"STATE_PG_URL": postgres_url}
    p1, p2 = (PgRunLock("STATE_PG_URL", "parts", f"p{k}of2", env) for k in (1, 2))
    again = PgRunLock("STATE_PG_URL", "parts", "p1of2", env)
    whole = PgRunLock("STATE_PG_URL", "parts", None, env)
    try:
        assert p1.acquire("h", 1, "t") and p2.acquire("h", 2, "t")  # two partitions at once
        assert not again.acquire("h", 3, "t")  # but not one partition twice
        assert not whole.acquire("h", 4, "t")  # nor the whole pipeline beside its partitions
        p1.release()
        assert again.acquire("h", 3, "t")
    finally:
        for lock in (p1, p2, again, whole):
            lock.release()


def test_partitions_of_another_count_are_refused(postgres_url: str, tmp_path: Path) -> None:
    """p1of2 running on one machine: p1of3 (another split of the same rows) is refused, and runs once it ended."""
    env = {"STATE_PG_URL": postgres_url}
    two = PgRunLock("STATE_PG_URL", "counts", "p1of2", env)
    three = PgRunLock("STATE_PG_URL", "counts", "p3of3", env)
    try:
        assert two.acquire("a", 1, "t")
        assert not three.acquire("b", 2, "t") and three.other_count == "p1of2"
        assert [h[0] for h in two.holders()] == ["p1of2"]  # the refused partition is not named as a holder
        pipeline = machine(tmp_path, "m", "ticks_counts", "counts")  # an incremental stream: it keeps state
        locks = RunLocks()
        with pytest.raises(RunLocked, match=r"partitions of another count \(p1of2\)"):
            locks.acquire_database(pipeline, env, "p2of3")
        two.release()
        assert three.acquire("b", 2, "t")  # the other count ended
        again = PgRunLock("STATE_PG_URL", "counts", "p2of2", env)
        assert not again.acquire("a", 1, "t") and again.other_count == "p3of3"
        again.release()
    finally:
        two.release()
        three.release()


HOLD = """
import sys, time
from connector.delta.pg import PgRunLock
lock = PgRunLock("STATE_PG_URL", sys.argv[1], None, {"STATE_PG_URL": sys.argv[2]})
assert lock.acquire("h", 1, "t")
print("held", flush=True)
time.sleep(120)
"""


def test_a_killed_holder_frees_the_lock(postgres_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, "killed", postgres_url], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        mine = PgRunLock("STATE_PG_URL", "killed", None, {"STATE_PG_URL": postgres_url})
        assert not mine.acquire("h", 2, "t")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30  # the server notices the dead connection and drops its locks
        while not mine.acquire("h", 2, "t"):
            assert time.monotonic() < deadline, "the lock of a killed run was never released"
            time.sleep(0.2)
        mine.release()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "values",
    [
        [1, 5, 2**62, 7],
        [1.5, -2.25, 1e300, 3.0],
        [Decimal("1.10"), Decimal("99999999999999999999.5"), Decimal("-3")],
        ["a", "b\u00e9", "B", "zz"],
        [datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 6, 1, 12, tzinfo=UTC)],
    ],
)
def test_watermark_rows_prune_in_the_cursors_order(postgres_url: str, values: list[Any], tmp_path: Path) -> None:
    """D's rows below a new watermark are pruned in PostgreSQL exactly as in the state file."""
    part = f"prune-{tmp_path.name}"
    env = {"STATE_PG_URL": postgres_url}
    for where in (tmp_path / "s.sqlite", PgMarks("STATE_PG_URL", "prune", part, env, read_only=False)):
        db = Watermarks(where).db
        rows = [(f"id{i}", *encode(v)) for i, v in enumerate(values)]
        db.add_done("s", rows)
        cut = sorted(values)[len(values) // 2]
        db.prune("s", encode(cut)[1])
        left = sorted(db.done("s", [r[0] for r in rows]))
        assert left == sorted((r[0], r[1]) for r, v in zip(rows, values, strict=True) if not v < cut), where
        db.close()


def test_a_read_only_run_before_any_run_sees_no_watermark(postgres_url: str) -> None:
    pg_exec(postgres_url, "DROP TABLE IF EXISTS braze_connector_watermark_done", "DROP TABLE IF EXISTS braze_connector_watermark")
    marks = Watermarks(PgMarks("STATE_PG_URL", "ro", "all", {"STATE_PG_URL": postgres_url}, read_only=True), read_only=True)
    assert marks.stored("s", "updated_at") is None
    assert marks.mark("s", "updated_at", ordered=True).value is None
    marks.close()


def test_a_full_run_forgets_the_done_rows_in_postgresql_too(postgres_url: str, tmp_path: Path) -> None:
    env = {"STATE_PG_URL": postgres_url}
    part = f"full-{tmp_path.name}"

    def marks(full: bool = False) -> Watermarks:
        return Watermarks(PgMarks("STATE_PG_URL", "full", part, env, read_only=False), full=full)

    first = marks()
    rows = [RowRef("src", 1, "id=1"), RowRef("src", 2, "id=2")]
    first.mark("s", "c", ordered=True).take(rows, [10, 30], ["id=1", "id=2"], below=False)
    first.settle("s", rows, "delivered")
    first.mark("s", "c", ordered=True).finish(True)
    first.close()
    assert marks().db.done("s", ["id=2"]) == [("id=2", "i:30")]
    full = marks(full=True)
    full.mark("s", "c", ordered=True)  # a --full run starts: nothing is done any more
    assert full.db.done("s", ["id=1", "id=2"]) == []
    full.close()
