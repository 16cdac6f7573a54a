"""Expectation suites: validation CPU per 1M rows (native plan vs GX) and time to the first request.

    python bench/gx_speed.py                      # every section, 200,000 rows per validation figure
    python bench/gx_speed.py cpu --rows 1000000   # validation CPU only
    python bench/gx_speed.py first --repeat 5     # process start -> first HTTP request only
    python bench/gx_speed.py first --no-pycache   # ... compiling every module on every run, if the
                                                  # environment sets PYTHONDONTWRITEBYTECODE

Figures are CPU seconds (time.process_time), not wall time: this machine may be shared. Each section
prints the calibration loop beside it (CPU seconds of a 10M-iteration Python `for` loop in this process;
issue 12's slow machine takes ~3.2 s) and the figure scaled to that machine.

- cpu: SuiteRunner.validate over 50k-row chunks, with the native plan (native.py) and with every
  expectation through GX (the plan switched off, as before issue 12). Two suites: the CSV-like one below
  (strings, ~1 % bad rows, an e-mail regex with \\s that pandas and so GX run with Python's re) and
  expectations/bench_users_suite.json on the Parquet users table of bench/data.py.
- first: `python -m connector run pipelines/users.yaml --mode bulk` (sample CSV, users_suite) against an
  nginx sink (bench/sink.py, 100 ms latency): seconds from process start to the first request's arrival,
  with the shipped suite (native, GX never imported) and with the same suite plus one expectation only GX
  evaluates (GX imported at start). Also `import great_expectations` alone in a fresh process. Bytecode is
  cached (in a temporary PYTHONPYCACHEPREFIX, after one untimed warm-up run of each case), as it is for an
  installed package, even where the environment sets PYTHONDONTWRITEBYTECODE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from connector.records import Chunk  # noqa: E402
from connector.validation import SuiteRunner  # noqa: E402

SLOW_MACHINE_LOOP_S = 3.2  # issue 12: a 10M-iteration loop on the slow 2-vCPU Xeon
TARGET_OBJECTS_PER_S = 75_000  # issue 12 goal 4: local stages with the suite, on the slow machine
TARGET_FIRST_REQUEST_S = 1.5  # issue 12 goal 3

SUITE = {
    "name": "bench_rows",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}, "meta": {}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "age", "min_value": 0, "max_value": 120},
            "meta": {},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "plan", "value_set": ["free", "pro", "team"]},
            "meta": {},
        },
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "email", "regex": r"^[^@\s]+@[^@\s]+\.[a-z]+$"},
            "meta": {},
        },
        {
            "type": "expect_column_value_lengths_to_be_between",
            "kwargs": {"column": "user_id", "min_value": 2, "max_value": 12},
            "meta": {},
        },
    ],
    "meta": {},
}


def calibration_loop() -> float:
    """CPU seconds of a 10M-iteration Python `for` loop (how fast this machine is, now; best of 3)."""
    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        for _ in range(10_000_000):
            pass
        best = min(best, time.process_time() - c0)
    return best


def make_chunk(start: int, n: int, rng: np.random.Generator) -> Chunk:
    """A CSV-like chunk (all strings) with ~1% bad rows."""
    ids = np.array([f"u{i}" for i in range(start, start + n)], dtype=object)
    ids[rng.random(n) < 0.002] = None
    ages = rng.integers(0, 100, n).astype(str).astype(object)
    ages[rng.random(n) < 0.002] = "150"
    plans = np.array(["free", "pro", "team"], dtype=object)[rng.integers(0, 3, n)]
    plans[rng.random(n) < 0.002] = "platinum"
    emails = np.array([f"u{i}@example.com" for i in range(start, start + n)], dtype=object)
    emails[rng.random(n) < 0.002] = "not-an-email"
    table = pa.table(
        {"user_id": pa.array(ids), "age": pa.array(ages), "plan": pa.array(plans), "email": pa.array(emails)}
    )
    return Chunk("bench.csv", table, list(range(start + 2, start + 2 + n)))


def _csv_chunks(rows: int, chunk_rows: int) -> list[Chunk]:
    rng = np.random.default_rng(3)
    return [make_chunk(s, min(chunk_rows, rows - s), rng) for s in range(0, rows, chunk_rows)]


def _parquet_chunks(rows: int, chunk_rows: int) -> list[Chunk]:
    from data import users_table

    table = users_table(rows)
    return [
        Chunk("users.parquet", table.slice(s, chunk_rows), list(range(s, min(s + chunk_rows, rows))))
        for s in range(0, rows, chunk_rows)
    ]


def _validate_cpu(names: list[str], folder: Path, chunks: list[Chunk], *, gx: bool) -> tuple[float, float, int]:
    """(setup CPU s, validation CPU s, rows rejected) for one runner over `chunks`."""
    c0 = time.process_time()
    if gx:
        with mock.patch("connector.validation.compile_native", lambda e, now: None):
            runner = SuiteRunner(names, folder)
    else:
        runner = SuiteRunner(names, folder)
    setup = time.process_time() - c0
    c0 = time.process_time()
    rejected = sum(len(runner.validate(c).rejects) for c in chunks)
    runner.finish()
    return setup, time.process_time() - c0, rejected


def bench_cpu(rows: int, chunk_rows: int) -> list[str]:
    calib = calibration_loop()
    slow = SLOW_MACHINE_LOOP_S / calib
    out = [
        f"## Validation CPU, {rows:,} rows in chunks of {chunk_rows:,} (calibration loop {calib:.2f} s CPU here, "
        f"slow machine {SLOW_MACHINE_LOOP_S} s: x{slow:.1f})"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_rows.json").write_text(json.dumps(SUITE))
        cases = [
            ("CSV strings, 5 expectations (e-mail regex with \\s)", ["bench_rows"], Path(tmp), _csv_chunks),
            ("Parquet users, expectations/bench_users_suite.json", ["bench_users_suite"], ROOT / "expectations",
             _parquet_chunks),
        ]  # fmt: skip
        for label, names, folder, make in cases:
            chunks = make(rows, chunk_rows)
            figures = {}
            for plan in ("native", "GX"):
                setup, cpu, rejected = _validate_cpu(names, folder, chunks, gx=plan == "GX")
                figures[plan] = cpu
                per_m = cpu * 1_000_000 / rows
                rate_slow = rows / (cpu * slow)
                out.append(
                    f"{label} [{plan}]: {per_m:.2f} CPU s per 1M rows ({rows / cpu:,.0f} rows/s here, "
                    f"~{rate_slow:,.0f} rows/s on the slow machine); setup {setup:.2f} s CPU; {rejected:,} rejected"
                )
            out.append(f"  native uses x{figures['GX'] / figures['native']:.1f} less CPU than GX")
    out.append(
        f"  (goal 4 is {TARGET_OBJECTS_PER_S:,} objects/s for all local stages on the slow machine; "
        f"validation alone must take well under 1/{TARGET_OBJECTS_PER_S:,} s per row there)"
    )
    return out


def _pipeline_folder(tmp: Path, url: str, *, gx_expectation: bool) -> Path:
    """A copy of pipelines/users.yaml pointing at `url`; with `gx_expectation`, a suite GX must evaluate."""
    (tmp / "pipelines").mkdir()
    (tmp / "sample_data").symlink_to(ROOT / "sample_data")
    (tmp / "expectations").mkdir()
    suite = json.loads((ROOT / "expectations" / "users_suite.json").read_text())
    if gx_expectation:
        suite["expectations"].append(
            {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": "plan", "type_list": ["str"]}}
        )
    (tmp / "expectations" / "users_suite.json").write_text(json.dumps(suite))
    text = (ROOT / "pipelines" / "users.yaml").read_text().replace("url: local", f"url: {url}")
    path = tmp / "pipelines" / "users.yaml"
    path.write_text(text)
    return path


_PYCACHE: Path | None = None  # where the measured processes keep their bytecode (None: as the environment says)


def _env() -> dict[str, str]:
    """The measured processes' environment. With `_PYCACHE` set, bytecode is cached there (outside the tree),
    as an installed package has it: PYTHONDONTWRITEBYTECODE, set in some shells and containers (this one),
    would make every run compile the connector's ~120 modules again (0.15-0.2 s of CPU here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if _PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    return env


@contextlib.contextmanager
def cached_bytecode() -> Iterator[Path]:
    """Measured processes cache their bytecode in a temporary folder until the block ends (see `_env`)."""
    global _PYCACHE
    _PYCACHE = Path(tempfile.mkdtemp(prefix="bench-pycache-"))
    try:
        yield _PYCACHE
    finally:
        shutil.rmtree(_PYCACHE, ignore_errors=True)
        _PYCACHE = None


def warm_up() -> None:
    """Compile, untimed, what a run imports (with `cached_bytecode`, the first run would compile it)."""
    _fresh_cpu("import connector.cli, connector.pipeline, connector.delivery.transport.child")


def _first_request(path: Path, sink: object, report_dir: Path) -> tuple[float, float]:
    """(seconds from process start to the first request's arrival at the sink, child CPU s for the run)."""
    env = {**_env(), "BRAZE_API_KEY": "bench-key-not-secret"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "connector", "run", str(path), "--mode", "bulk", "--quiet", "--report-dir",
         str(report_dir)],
        env=env, capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    arrivals = [t for t, _status in sink.requests()]  # type: ignore[attr-defined]
    first = min((t for t in arrivals if t >= t0), default=float("nan"))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return first - t0, cpu


def _fresh_cpu(code: str) -> float:
    """CPU seconds (user + system) of `python -c code` in a fresh process."""
    env = _env()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def bench_first(repeat: int, import_figures: bool = True) -> list[str]:
    """The first request's time and CPU, native plan and GX, after the fresh-process import figures (three
    more interpreters, one importing GX: ~6 s of CPU; `import_figures=False` leaves them out)."""
    from sink import NginxSink, nginx_available

    calib = calibration_loop()
    out = [
        f"## Time to the first request (calibration loop {calib:.2f} s CPU here, slow machine "
        f"{SLOW_MACHINE_LOOP_S} s: x{SLOW_MACHINE_LOOP_S / calib:.1f})"
    ]
    reason = nginx_available()
    if reason:
        return [*out, f"skipped: {reason}"]
    if _PYCACHE is not None:  # compile once, untimed: every measured process then loads cached bytecode
        warm_up()
        _fresh_cpu("import great_expectations")
    out.append(f"bytecode: {'cached in ' + str(_PYCACHE) if _PYCACHE else 'as the environment says'}"
               f" (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} here)")
    if import_figures:
        python = _fresh_cpu("pass")
        gx_import = _fresh_cpu("import great_expectations") - python
        connector_import = _fresh_cpu("import connector.cli, connector.pipeline") - python
        out.append(
            f"fresh-process CPU beyond a bare interpreter ({python:.2f} s): `import great_expectations` "
            f"{gx_import:.2f} s, `import connector.cli, connector.pipeline` {connector_import:.2f} s"
        )
    else:
        out.append("fresh-process import figures: not measured (--no-import-figures)")
    for gx_expectation in (False, True):
        label = "users_suite + 1 expectation GX evaluates" if gx_expectation else "users_suite (native, no GX import)"
        firsts, cpus = [], []
        for i in range(repeat + (_PYCACHE is not None)):
            tmp = Path(tempfile.mkdtemp(prefix="bench-first-"))
            try:
                with NginxSink(latency_ms=100, access_log=True) as sink:
                    path = _pipeline_folder(tmp, sink.url, gx_expectation=gx_expectation)
                    first, cpu = _first_request(path, sink, tmp / "reports")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if _PYCACHE is not None and i == 0:
                continue  # the warm-up run: it compiled what the import above did not
            firsts.append(first)
            cpus.append(cpu)
        median = statistics.median(firsts)
        status = "met here" if median <= TARGET_FIRST_REQUEST_S else "not met here"
        out.append(
            f"{label}: first request {median:.2f} s after process start (median of {repeat}: "
            f"{', '.join(f'{f:.2f}' for f in firsts)}); the whole run {statistics.median(cpus):.2f} s CPU "
            f"(main process and HTTP child); target {TARGET_FIRST_REQUEST_S} s on the slow machine: {status}"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("section", nargs="?", choices=("all", "cpu", "first"), default="all")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--no-pycache", action="store_true",
        help="first: leave bytecode caching to the environment (PYTHONDONTWRITEBYTECODE compiles every run)",
    )  # fmt: skip
    ap.add_argument("--no-import-figures", action="store_true",
                    help="first: leave out the fresh-process import CPU figures (the test suite's smoke run)")
    a = ap.parse_args()
    lines: list[str] = []
    if a.section in ("all", "first"):
        with contextlib.nullcontext() if a.no_pycache else cached_bytecode():
            lines += bench_first(a.repeat, import_figures=not a.no_import_figures)
    if a.section in ("all", "cpu"):
        lines += bench_cpu(a.rows, a.chunk_rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
