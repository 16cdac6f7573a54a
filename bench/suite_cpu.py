"""Where the test suite's CPU goes: a pytest plugin that charges every test (and fixture set-up) the CPU of
its worker and of every process the worker started, daemons included (PostgreSQL, redis-server, nginx,
emulators, CLI children), then a report of the top tests, fixtures and files.

Linux cgroup v1 cpuacct (as root): each pytest process (the xdist controller and each worker) moves itself
into a cgroup of its own under /sys/fs/cgroup/cpuacct/<tag>/, which every process it starts inherits, so a
test's figure is the cgroup's cpuacct.usage delta over its setup, call and teardown (a module or session
fixture is charged to the test that set it up or tore it down; a daemon's idle work to whichever test was
running). Unlike getrusage(RUSAGE_CHILDREN) this counts processes that daemonize (pg_ctl's postmaster) or
are never waited for. Where no cgroup can be made, getrusage(SELF + CHILDREN) is used instead.

    SUITE_CPU_OUT=/tmp/cpu-run python -m pytest -q -p no:cacheprovider -p bench.suite_cpu [tests...]
    python bench/suite_cpu.py /tmp/cpu-run [--top 30]          # report
    python bench/suite_cpu.py /tmp/cpu-before /tmp/cpu-after   # per-file before/after

Runs with the README's command plus `-p bench.suite_cpu` (the workers inherit `-p`); it is off unless
SUITE_CPU_OUT is set.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

CGROOT = Path("/sys/fs/cgroup/cpuacct")


class _Meter:
    def __init__(self, out: Path, tag: str, name: str) -> None:
        self.out, self.name = out, name
        self.cg: Path | None = None
        try:
            cg = CGROOT / tag / name
            cg.mkdir(parents=True, exist_ok=True)
            (cg / "cgroup.procs").write_text(str(os.getpid()))
            self.cg = cg
        except OSError:
            self.cg = None
        self.rows: list[dict[str, Any]] = []
        self.fixtures: list[dict[str, Any]] = []

    def cpu(self) -> float:
        if self.cg is not None:
            return int((self.cg / "cpuacct.usage").read_text()) / 1e9
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def dump(self) -> None:
        total = self.cpu()
        doc = {"worker": self.name, "cgroup": str(self.cg) if self.cg else None, "total_cpu_s": total,
               "tests": self.rows, "fixtures": self.fixtures}  # fmt: skip
        (self.out / f"{self.name}.json").write_text(json.dumps(doc), encoding="utf-8")


_meter: _Meter | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _meter
    out = os.environ.get("SUITE_CPU_OUT")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    tag = os.environ.setdefault("SUITE_CPU_TAG", f"suitecpu-{os.getpid()}")  # workers inherit the tag
    name = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    _meter = _Meter(Path(out), tag, name)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _meter is not None:
        _meter.dump()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, None]:
    if _meter is None:
        yield
        return
    phases: dict[str, float] = {}
    item.stash[_PHASES] = phases
    c0, w0, t0 = _meter.cpu(), time.monotonic(), time.time()
    yield
    _meter.rows.append({"nodeid": item.nodeid, "cpu": _meter.cpu() - c0, "wall": time.monotonic() - w0,
                        "start": t0, "failed": item.stash.get(_FAILED, False), **phases})  # fmt: skip


_PHASES = pytest.StashKey[dict[str, float]]()
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    if outcome.get_result().failed:
        item.stash[_FAILED] = True


def _phase(item: pytest.Item, name: str) -> Generator[None, Any, None]:
    if _meter is None:
        yield
        return
    c0 = _meter.cpu()
    yield
    phases = item.stash.get(_PHASES, None)
    if phases is not None:
        phases[name] = _meter.cpu() - c0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, None]:
    yield from _phase(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    yield from _phase(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    yield from _phase(item, "teardown")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Generator[None, Any, None]:
    if _meter is None:
        yield
        return
    c0 = _meter.cpu()
    yield
    _meter.fixtures.append({"fixture": fixturedef.argname, "scope": fixturedef.scope,
                            "nodeid": request.node.nodeid, "cpu": _meter.cpu() - c0})  # fmt: skip


# --------------------------------------------------------------------------- report


def _load(folder: Path) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
    total, tests, fixtures = 0.0, [], []
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        total += doc["total_cpu_s"]
        tests += doc["tests"]
        fixtures += doc["fixtures"]
    return total, tests, fixtures


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _by_file(tests: list[dict[str, Any]]) -> dict[str, float]:
    files: dict[str, float] = defaultdict(float)
    for row in tests:
        files[_file(row["nodeid"])] += row["cpu"]
    return files


def report(folder: Path, top: int) -> None:
    total, tests, fixtures = _load(folder)
    in_tests = sum(r["cpu"] for r in tests)
    failed = [r["nodeid"] for r in tests if r.get("failed")]
    print(f"{folder}: {len(tests)} tests, suite CPU {total:.1f} s (in tests {in_tests:.1f} s, "
          f"outside any test {total - in_tests:.1f} s)")  # fmt: skip
    for nodeid in failed:
        print(f"failed: {nodeid}")
    print(f"\ntop {top} tests by CPU (s: total = setup + call + teardown; wall s)")
    for r in sorted(tests, key=lambda r: -r["cpu"])[:top]:
        print(f"{r['cpu']:7.2f} = {r.get('setup', 0):6.2f} + {r.get('call', 0):6.2f} + {r.get('teardown', 0):6.2f}"
              f"  wall {r['wall']:6.2f}  {r['nodeid']}")  # fmt: skip
    agg: dict[tuple[str, str], list[float]] = defaultdict(list)
    for f in fixtures:
        agg[(f["fixture"], f["scope"])].append(f["cpu"])
    print(f"\ntop {top} fixtures by set-up CPU (s: total, times set up, mean)")
    for (name, scope), cpus in sorted(agg.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"{sum(cpus):7.2f}  x{len(cpus):4d}  {sum(cpus) / len(cpus):6.3f}  {name} ({scope})")
    print(f"\ntop {top} files by CPU (s, tests)")
    counts: dict[str, int] = defaultdict(int)
    for r in tests:
        counts[_file(r["nodeid"])] += 1
    for name, cpu in sorted(_by_file(tests).items(), key=lambda kv: -kv[1])[:top]:
        print(f"{cpu:7.2f}  {counts[name]:4d}  {name}")


def compare(before: Path, after: Path) -> None:
    tb, b_tests, _ = _load(before)
    ta, a_tests, _ = _load(after)
    fb, fa = _by_file(b_tests), _by_file(a_tests)
    print(f"{'before':>8} {'after':>8} {'change':>8}  file")
    for name in sorted(set(fb) | set(fa), key=lambda n: -fb.get(n, 0.0)):
        b, a = fb.get(name, 0.0), fa.get(name, 0.0)
        print(f"{b:8.1f} {a:8.1f} {a - b:+8.1f}  {name}")
    print(f"{sum(fb.values()):8.1f} {sum(fa.values()):8.1f} {sum(fa.values()) - sum(fb.values()):+8.1f}  in tests")
    print(f"{tb:8.1f} {ta:8.1f} {ta - tb:+8.1f}  suite (every process, in and between tests)")


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # | head
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 30
    args = [a for a in args if a != str(n)] if "--top" in sys.argv else args
    if len(args) == 2:
        compare(Path(args[0]), Path(args[1]))
    else:
        report(Path(args[0]), n)
