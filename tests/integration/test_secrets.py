"""The API key reaches no output: a run against a server that echoes the key in every reply, 2xx included.

The emulator's `echo_key` puts the caller's key into each reply's message and, for a 2xx, into an
`errors[]` entry that rejects the request's first object; a seeded share of the requests fail with 503
(their message lands in failed.csv). The CLI runs as a user runs it; stdout, stderr (logs at INFO) and
every file of the report folder are searched for the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.timeout(180)

SECRET = "sk-Echoed-91c4e7d2-KEY"


def test_an_echoed_key_is_masked_in_every_output(emulator_factory: Any, tmp_path: Path) -> None:
    server = emulator_factory(api_keys=(SECRET,), echo_key=True, faults={"503": 0.4}, seed=3)
    (tmp_path / "users.csv").write_text(
        "user_id,plan\n" + "".join(f"u{i},pro\n" for i in range(30)), encoding="utf-8"
    )
    stream = {"name": "users", "source": {"path": "users.csv"}, "kind": "attributes",
              "identifier": {"external_id": "user_id"}, "attributes": [{"column": "plan"}]}  # fmt: skip
    retry = {"max_attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_elapsed_s": 5}
    doc = {"name": "echo", "streams": [stream], "report": {"max_reject_fraction": 1.0},
           "write": {"max_objects_per_request": 1, "retry": retry}}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")}
    env.update(BRAZE_REST_ENDPOINT=server.url, BRAZE_API_KEY=SECRET)
    out = tmp_path / "report"
    res = subprocess.run(
        [sys.executable, "-m", "connector", "run", "p.yaml", "--mode", "bulk", "--report-dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr  # some rows failed (503 after the retries)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"report.json", "report.html", "rejects.csv", "failed.csv"}
    for name, text in [("stdout", res.stdout), ("stderr", res.stderr)] + [(str(p), p.read_text("utf-8")) for p in files]:
        assert SECRET not in text, f"the key leaked into {name}"
    # The server did echo it: the masked text is there, in the rejects (2xx) and the failed rows (503).
    assert "key *** is not allowed here" in (out / "rejects.csv").read_text("utf-8")
    assert "request made with key ***" in (out / "failed.csv").read_text("utf-8")
    assert "key ***" in (out / "report.html").read_text("utf-8")
