"""kill -9 at random points of a bulk run of events and purchases, then `run --resume`, against the emulator.

Each trial starts the CLI (`braze-connector run ... -q`) in a child process, kills it with SIGKILL at a random
point (before the first request, after the k-th request record, at a random time, or while the report is
being written), sometimes kills the resumed run too, and resumes until a run finishes. Then the emulator's
ledger must show every valid row applied at least once, no invalid row applied, and every row applied more
than once listed in possibly_duplicated.csv; the report must count every valid row delivered.

The children are forked from a forkserver that has imported the connector once, so a trial costs its run,
not an interpreter start. Bounded by default (5 trials, 800 rows: each kill point once, one trial on the HTTP
child, one resumed run killed too); BRAZE_CONNECTOR_SOAK=1 runs 50 trials of 20,000 rows, and
BRAZE_CONNECTOR_CRASH_TRIALS / BRAZE_CONNECTOR_CRASH_ROWS set either.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from connector.emulator import EmulatorServer

SOAK = os.environ.get("BRAZE_CONNECTOR_SOAK") == "1"
TRIALS = int(os.environ.get("BRAZE_CONNECTOR_CRASH_TRIALS", "50" if SOAK else "5"))
ROWS = int(os.environ.get("BRAZE_CONNECTOR_CRASH_ROWS", "20000" if SOAK else "800"))
SEED = int(os.environ.get("BRAZE_CONNECTOR_CRASH_SEED", "20261202"))
KEY = "crash-key"
BAD_EVERY = 97  # events without a time: rejected locally, never sent

pytestmark = pytest.mark.timeout(120 + 20 * TRIALS)


def run_cli(args: list[str], env: dict[str, str], log: str) -> None:
    """The child: `braze-connector ARGS` with its output in `log` (runs in a forked process)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    from connector.cli import app

    app(args=args, prog_name="braze-connector")


def write_project(root: Path, rows: int, transport: str) -> tuple[Path, set[tuple[str, int]]]:
    """Events (Parquet) and purchases (CSV) with a row id in their properties; returns the valid rows."""
    n_events, n_purchases = rows * 3 // 4, rows // 4
    data = root / "data"
    data.mkdir(parents=True)
    ts = [None if i % BAD_EVERY == 5 else f"2026-01-{1 + i % 28:02d}T10:00:00Z" for i in range(n_events)]
    pq.write_table(pa.table({"user_id": [f"u{i % 40}" for i in range(n_events)], "ts": ts,
                             "rid": list(range(n_events))}), data / "events.parquet")  # fmt: skip
    lines = ["user_id,product_id,price,purchased_at,rid"]
    lines += [f"u{i % 40},sku{i % 7},{1 + i % 9}.5,2026-02-{1 + i % 28:02d}T09:00:00Z,{i}" for i in range(n_purchases)]
    (data / "purchases.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    valid = {("events", i) for i in range(n_events) if ts[i] is not None}
    valid |= {("purchases", i) for i in range(n_purchases)}
    doc = {
        "name": "crash",
        "destination": {"url": "http://127.0.0.1:9", "api_key_env": "BRAZE_API_KEY"},
        "write": {"mode": "bulk", "concurrency": 4, "max_objects_per_request": 20, "transport": transport,
                  "retry": {"max_attempts": 4, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}},
        "report": {"max_reject_fraction": 0.5},
        "streams": [
            {"name": "events", "source": {"path": "data/events.parquet", "chunk_rows": 200}, "kind": "events",
             "identifier": {"external_id": "user_id"},
             "event": {"name": {"value": "played"}, "time": {"column": "ts", "type": "time"},
                       "properties": {"columns": {"rid": "rid"}}}},
            {"name": "purchases", "source": {"path": "data/purchases.csv", "chunk_rows": 100},
             "kind": "purchases", "identifier": {"external_id": "user_id"},
             "purchase": {"product_id": "product_id", "currency": {"value": "USD"},
                          "price": {"column": "price", "type": "float"},
                          "time": {"column": "purchased_at", "type": "time"},
                          "properties": {"columns": {"rid": "rid"}}}},
        ],
    }  # fmt: skip
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path, valid


def settled(em: EmulatorServer, quiet_s: float = 0.3, limit_s: float = 10.0) -> int:
    """How many rows the emulator has applied, once that count held for `quiet_s` (bounded by `limit_s`)."""
    end, last, since = time.monotonic() + limit_s, -1, time.monotonic()
    while time.monotonic() < end:
        n = sum(applied(em).values())
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.05)
    return last


def applied(em: EmulatorServer) -> Counter[tuple[str, int]]:
    """(stream, rid) -> how many times the emulator applied that row's event or purchase."""
    out: Counter[tuple[str, int]] = Counter()
    since = 0
    while True:
        entries = em.ledger(since=since)
        if not entries:
            return out
        for e in entries:
            since = max(since, int(e["seq"]))
            for a in e["applied"]:
                if a["array"] in ("events", "purchases"):
                    out[(a["array"], int(a["object"]["properties"]["rid"]))] += 1


def settled_ledger(em: EmulatorServer) -> Counter[tuple[str, int]]:
    """The ledger once it stopped growing (a killed run's HTTP child may still finish its requests)."""
    last = applied(em)
    while True:
        time.sleep(0.1)
        now = applied(em)
        if now == last:
            return now
        last = now


def sends(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b' ["s",')
    except OSError:
        return -1


def kill_at(ctx: Any, args: list[str], env: dict[str, str], log: str, run_dir: Path | None, how: str,
            k: int, delay: float) -> int | None:  # fmt: skip
    """Start the CLI, kill -9 it at the chosen point; returns its exit code if it finished first."""
    proc = ctx.Process(target=run_cli, args=(args, env, log))
    proc.start()
    deadline = time.monotonic() + 60
    t0 = time.monotonic()
    while proc.is_alive() and time.monotonic() < deadline:
        if run_dir is None:  # a fresh run: its folder is the only one under runs/
            dirs = [d for d in Path(args[args.index("--report-dir") + 1]).parent.glob("*") if d.is_dir()]  # not the lock
            journal = dirs[0] / "journal.log" if dirs else None
        else:
            journal = run_dir / "journal.log"
        if journal is not None:
            if how == "requests" and sends(journal) >= k:
                break
            if how == "report" and (journal.parent / "report.json").exists():
                break
        if how == "time" and time.monotonic() - t0 >= delay:
            break
        time.sleep(0.001)
    proc.kill()
    proc.join(30)
    return None if proc.exitcode == -9 else proc.exitcode


def finish(ctx: Any, args: list[str], env: dict[str, str], log: str) -> int:
    proc = ctx.Process(target=run_cli, args=(args, env, log))
    proc.start()
    proc.join(120)
    assert proc.exitcode is not None, "a resumed run did not finish"
    return int(proc.exitcode)


@pytest.fixture(scope="module")
def forkserver() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["test_crash_resume", "connector.cli", "connector.pipeline",
                                "connector.delivery.writer", "connector.delivery.client", "connector.readers",
                                "connector.delivery.transport.aiohttp_transport", "aiohttp"])  # fmt: skip
    return ctx


def test_kill_9_at_random_points_then_resume_applies_every_row_and_lists_every_duplicate(
    forkserver: Any, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    hows = ["requests", "requests", "time", "report", "first"]
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        transport = "aiohttp-process" if trial % 5 == 4 else "aiohttp"
        pipeline, valid = write_project(root, ROWS, transport)
        n_requests = len(valid) // 20 + 2
        with EmulatorServer(api_keys=(KEY,), latency_ms=rng.choice([0, 5, 20])) as em:
            env = {"BRAZE_API_KEY": KEY, "BRAZE_REST_ENDPOINT": em.url}
            log = str(root / "cli.log")
            runs = root / "runs"
            how = hows[trial % len(hows)]
            k = 0 if how == "first" else rng.randint(1, n_requests)
            delay = rng.uniform(0.0, 2.0)
            args = ["run", str(pipeline), "--report-dir", str(runs / "{run_id}"), "-q"]
            kill_at(forkserver, args, env, log, None, "requests" if how == "first" else how, k, delay)
            if not list(runs.glob("*/journal.log")):  # killed before its journal: nothing sent, start again
                assert not applied(em), f"trial {trial}: rows applied by a run that left no journal"
                for d in runs.glob("*"):
                    shutil.rmtree(d)
                kill_at(forkserver, args, env, log, None, "requests", rng.randint(1, n_requests), delay)
            [run_dir] = [d for d in runs.iterdir() if d.is_dir()]
            resume = ["run", str(pipeline), "--resume", str(run_dir), "-q"]
            if trial % 3 == 2:  # kill the resumed run too
                kill_at(forkserver, resume, env, log, run_dir, "requests", rng.randint(1, n_requests), delay)
            code = finish(forkserver, resume, env, log)
            ledger = settled_ledger(em)
        context = f"trial {trial} ({how}, k={k}, {transport}); log {log}"
        assert code == 0, context
        doc = yaml.safe_load((run_dir / "report.json").read_text(encoding="utf-8"))
        assert doc["invariant_ok"] is True and doc["rows"]["delivered"] == len(valid), context
        assert set(ledger) == valid, context  # every valid row applied, no invalid row
        listed: set[tuple[str, int]] = set()
        dup_file = run_dir / "possibly_duplicated.csv"
        if dup_file.exists():
            with dup_file.open(encoding="utf-8", newline="") as f:
                listed = {(r["_stream"], _rid(r)) for r in csv.DictReader(f)}
        twice = {row for row, n in ledger.items() if n > 1}
        assert twice <= listed, f"{context}: applied twice but not listed: {sorted(twice - listed)[:5]}"
        assert doc["rows"]["possibly_duplicated"] == len(listed), context


def _rid(row: dict[str, str]) -> int:
    """The rid of a listed row: Parquet rows are 1-based indices, CSV rows physical lines (header = 1)."""
    n = int(row["_row_number"])
    return n - 1 if row["_source_file"].endswith(".parquet") else n - 2


def test_a_plain_run_after_a_kill_9_is_refused_unless_told_and_names_the_resume_command(
    forkserver: Any, tmp_path: Path
) -> None:
    """A new run (not --resume) after a killed one, over the same files, would apply the events and purchases
    that run delivered a second time (neither stream keeps state): it is refused (exit 2) with the --resume
    command; with --ignore-unfinished it runs and warns how many rows were in flight; a run after a finished
    one says nothing. A stop by SIGTERM (exit 4) is refused the same way; new source files are not."""
    pipeline, valid = write_project(tmp_path, ROWS, "aiohttp")
    with EmulatorServer(api_keys=(KEY,), latency_ms=20) as em:
        env = {"BRAZE_API_KEY": KEY, "BRAZE_REST_ENDPOINT": em.url}
        log = str(tmp_path / "cli.log")
        runs = tmp_path / "runs"
        args = ["run", str(pipeline), "--report-dir", str(runs / "{run_id}"), "-q"]
        assert kill_at(forkserver, args, env, log, None, "requests", 3, 0.0) is None, "the run finished first"
        [killed] = [d for d in runs.iterdir() if d.is_dir()]
        before = settled(em)  # requests the killed run had on the wire are still applied after the kill
        assert finish(forkserver, args, env, log) == 2
        said = Path(log).read_text(encoding="utf-8")
        assert f"the last run of this pipeline, {killed.name} ({killed}), did not finish" in said
        assert f"--resume {killed}" in said and f"To send those rows again anyway: braze-connector run {pipeline} --ignore-unfinished." in said and "events (" in said
        assert [d for d in runs.iterdir() if d.is_dir()] == [killed], "a refused run writes no report folder"
        assert sum(applied(em).values()) == before, "a refused run sends nothing"
        assert finish(forkserver, [*args, "--ignore-unfinished"], env, log) == 0
        [second] = [d for d in runs.iterdir() if d.is_dir() and d != killed]
        warnings = yaml.safe_load((second / "report.json").read_text(encoding="utf-8"))["warnings"]
        [w] = [w for w in warnings if "did not finish" in w]
        assert killed.name in w and f"--resume {killed}" in w and "sent without seeing Braze's answer" in w
        # no delta, no incremental: the re-run sent every row again, the killed run's delivered ones too
        assert "keep no state" in w and "those that run delivered included" in w and " confirmed)" in w
        assert finish(forkserver, args, env, log) == 0
        [third] = [d for d in runs.iterdir() if d.is_dir() and d not in (killed, second)]
        warnings = yaml.safe_load((third / "report.json").read_text(encoding="utf-8"))["warnings"]
        assert not [w for w in warnings if "did not finish" in w], warnings


def _stopped_midway(pipeline: Any, runs: Path, env: dict[str, str], em: EmulatorServer) -> Any:
    """Run the pipeline in a thread and stop it (the API's stop token, as SIGTERM does) once Braze has
    answered 5 requests; returns its report (exit code 4)."""
    from connector import run_pipeline
    from connector.stop import StopToken

    def answered() -> int:
        return sum(int(n) for n in em.stats()["requests"].get("/users/track", {}).values())

    stop, out, start = StopToken(), [], answered()
    t = threading.Thread(target=lambda: out.append(run_pipeline(pipeline, report_dir=runs, env=env, stop=stop,
                                                                raise_on_failure=False)))  # fmt: skip
    t.start()
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        if answered() - start >= 5:
            stop.request("stopped by the test")
            break
        time.sleep(0.002)
    t.join(60)
    [report] = out
    assert report.exit_code == 4, "the run finished before the test could stop it"
    assert 0 < report.rows["delivered"] < report.rows["read"]
    return report


def test_a_plain_run_after_a_stop_is_refused_for_the_same_files_not_for_new_ones(tmp_path: Path) -> None:
    """A stop (SIGTERM, exit 4) leaves delivered events behind too: the same command again is refused until the
    run is resumed (or --ignore-unfinished), and then the stopped run cannot be resumed behind it; tonight's
    new export (the files changed) is a new run and goes ahead, warned; a run stopped before it sent anything
    refuses nothing."""
    from connector import load_pipeline, run_pipeline
    from connector.delivery.resume import ResumeSet
    from connector.errors import ConfigError, UnfinishedRun
    from connector.stop import StopToken

    pipeline_file, valid = write_project(tmp_path, 2000, "aiohttp")
    pipeline = load_pipeline(pipeline_file)
    runs = tmp_path / "runs" / "{run_id}"
    with EmulatorServer(api_keys=(KEY,), latency_ms=50) as em:
        env = {"BRAZE_API_KEY": KEY, "BRAZE_REST_ENDPOINT": em.url}
        early = StopToken()
        early.request("stopped by the test")  # before the first row: nothing sent
        assert run_pipeline(pipeline, report_dir=runs, env=env, stop=early, raise_on_failure=False).exit_code == 4
        stopped = _stopped_midway(pipeline, runs, env, em)  # the stop before it sent nothing refused nothing
        sent = sum(applied(em).values())
        with pytest.raises(UnfinishedRun, match=r"was stopped before it finished.*--resume .*--ignore-unfinished"):
            run_pipeline(pipeline, report_dir=runs, env=env)
        assert sum(applied(em).values()) == sent, "a refused run sends nothing"
        resumed = run_pipeline(pipeline, report_dir=runs, env=env, resume=ResumeSet(stopped.report_dir))
        assert resumed.exit_code == 0 and set(applied(em)) == valid and max(applied(em).values()) == 1
        again = run_pipeline(pipeline, report_dir=runs, env=env)  # the latest run finished: sent as asked
        assert again.exit_code == 0 and not [w for w in again.warnings if "before it finished" in w]
        older = _stopped_midway(pipeline, runs, env, em)
        anyway = run_pipeline(pipeline, report_dir=runs, env=env, ignore_unfinished=True)
        assert anyway.exit_code == 0 and [w for w in anyway.warnings if "was stopped before it finished" in w]
        # The stopped run is no longer the latest: resuming it would send its rows again after that run's.
        with pytest.raises(ConfigError, match=r"is not this pipeline's latest run"):
            run_pipeline(pipeline, report_dir=runs, env=env, resume=ResumeSet(older.report_dir))
        _stopped_midway(pipeline, runs, env, em)
        write_project(tmp_path / "tonight", 2000, "aiohttp")  # a new export replaces both files
        for name in ("events.parquet", "purchases.csv"):
            (tmp_path / "tonight" / "data" / name).replace(tmp_path / "data" / name)
        tonight = run_pipeline(pipeline, report_dir=runs, env=env)  # goes ahead, warned: it may hold the same rows
        assert tonight.exit_code == 0
        [w] = [w for w in tonight.warnings if "was stopped before it finished" in w]
        assert "keep no state" in w and "applies them twice" in w
        _stopped_midway(pipeline, runs, env, em)
    # The embedded emulator (destination: local) starts empty every run: nothing there to apply twice.
    local = pipeline.model_copy(update={"destination": pipeline.destination.model_copy(update={"url": "local"})})
    assert run_pipeline(local, report_dir=runs, env={}).exit_code == 0


def test_the_warning_after_a_stop_names_only_the_streams_it_delivered_or_sent_rows_of(tmp_path: Path) -> None:
    """Stopped while still on events, the run sent no purchase: a re-run with --ignore-unfinished applies the
    delivered events twice, not purchases (none was sent), so its warning names events alone."""
    from connector import load_pipeline, run_pipeline

    pipeline_file, _ = write_project(tmp_path, 2000, "aiohttp")
    pipeline = load_pipeline(pipeline_file)
    runs = tmp_path / "runs" / "{run_id}"
    with EmulatorServer(api_keys=(KEY,), latency_ms=50) as em:
        env = {"BRAZE_API_KEY": KEY, "BRAZE_REST_ENDPOINT": em.url}
        stopped = _stopped_midway(pipeline, runs, env, em)
        assert stopped.streams["events"]["delivered"] > 0 and stopped.streams["purchases"]["delivered"] == 0
        anyway = run_pipeline(pipeline, report_dir=runs, env=env, ignore_unfinished=True)
    [w] = [w for w in anyway.warnings if "was stopped before it finished" in w]
    assert "Stream(s) events keep no state" in w and "for the other streams" in w, w
