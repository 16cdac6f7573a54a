"""CPU of short `braze-connector` commands (a fresh process each), this code vs a git ref, interleaved.

    python bench/cli_cpu.py [--repeat 7] [--before REF] [COMMAND ...]

Every command pays for the CLI's start (the interpreter, typer, the command's own imports), and the test
suite starts hundreds of CLI processes, so these milliseconds count for its time too. Each command runs as
`python -m connector ARGS` in the folder of a copy of pipelines/users.yaml (gx_speed.py's), with bytecode
cached (a temporary PYTHONPYCACHEPREFIX, as an installed package has it); the figure is the child's user +
system CPU (getrusage of children). Commands (default: --version, --help, `run --help`, `emulator --help`,
`check pipelines/users.yaml`, `schema`) alternate within each round, and so does which tree runs first;
the calibration loop is printed at every round. The first round only fills the bytecode caches and is not
counted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from calibration import calibration_s
from first_timeline import ROOT, extract
from gx_speed import _pipeline_folder

COMMANDS = ("--version", "--help", "run --help", "emulator --help", "check pipelines/users.yaml",
            "schema --out /dev/null")  # fmt: skip


def cpu_of(tree: Path, args: list[str], cwd: Path, pycache: Path) -> float:
    """User + system CPU seconds of one `python -m connector ARGS` run from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "connector", *args], cwd=cwd, env=env, capture_output=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--before", help="a git ref whose code to measure too (e.g. main)")
    ap.add_argument("commands", nargs="*", default=list(COMMANDS))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-cpu-") as tmp_s:
        tmp = Path(tmp_s)
        folder = _pipeline_folder(tmp, "http://127.0.0.1:9", gx_expectation=False).parent.parent
        trees = {"this code": ROOT}
        if a.before:
            trees[f"before ({a.before})"] = extract(a.before, tmp / "before")
        caches = {label: tmp / f"pycache-{i}" for i, label in enumerate(trees)}
        commands = [shlex.split(c) for c in a.commands]
        cpu: dict[tuple[str, int], list[float]] = {(label, i): [] for label in trees for i in range(len(commands))}
        for n in range(a.repeat + 1):
            loop = calibration_s()
            for i, args in enumerate(commands):
                for label in list(trees)[:: 1 if n % 2 == 0 else -1]:  # which tree goes first alternates
                    value = cpu_of(trees[label], args, folder, caches[label])
                    if n:
                        cpu[(label, i)].append(value)
            if n:
                print(f"round {n}: calibration loop {loop:.3f} s", flush=True)
        print(f"CPU seconds (user + system) of the command's process, median of {a.repeat} interleaved rounds:")
        print(f"  {'command':<32}" + "".join(f"{label:>24}" for label in trees))
        for i, args in enumerate(commands):
            row = "".join(f"{statistics.median(cpu[(label, i)]):24.3f}" for label in trees)
            print(f"  {' '.join(args):<32}{row}")


if __name__ == "__main__":
    main()
