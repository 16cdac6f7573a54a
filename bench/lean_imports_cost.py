"""CPU of the two imports connector/lean_imports.py changes, with and without it, in fresh processes.

    python bench/lean_imports_cost.py [--repeat 10]

Each process imports what precedes them on the way to a run's first request (typer, pydantic, numpy,
pyarrow), then times (user + system CPU) building a first pydantic model (pydantic's plugin scan) and
`import pyarrow.compute`; also the third-party imports alone, the floor under any connector code. The two
cases alternate in each round; the calibration loop is printed at every round. Bytecode is cached in a
temporary PYTHONPYCACHEPREFIX (one untimed warm-up run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from calibration import calibration_s

ROOT = Path(__file__).resolve().parent.parent

CODE = r"""
import gc, json, resource, sys
gc.disable()
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = cpu()
if sys.argv[1] == "lean":
    from connector import lean_imports
    lean_imports.install()
import asyncio, typer, yaml, pydantic, pydantic.main, pydantic.fields, numpy, pyarrow
t1 = cpu()
class M(pydantic.BaseModel):
    x: int
t2 = cpu()
import pyarrow.compute
t3 = cpu()
print(json.dumps({"interpreter": t0, "other libraries": t1 - t0, "first model": t2 - t1,
                  "pyarrow.compute": t3 - t2, "all": t3}))
"""


def measure(case: str, pycache: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": pycache, "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run([sys.executable, "-c", CODE, case], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    cases = ("plain", "lean")
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="bench-lean-") as cache:
        for c in cases:
            measure(c, cache)
        for i in range(a.repeat):
            row = [f"round {i + 1}: calibration loop {calibration_s():.3f} s"]
            for c in cases:
                m = measure(c, cache)
                runs[c].append(m)
                row.append(f"{c}: first model {m['first model']:.3f}, "
                           f"pyarrow.compute {m['pyarrow.compute']:.3f}, all {m['all']:.3f}")  # fmt: skip
            print(" | ".join(row), flush=True)
    print(f"CPU seconds, median of {a.repeat} rounds (plain -> lean):")
    for key in runs["plain"][0]:
        before, after = (statistics.median(r[key] for r in runs[c]) for c in cases)
        print(f"  {key:<16} {before:.3f} -> {after:.3f}")


if __name__ == "__main__":
    main()
