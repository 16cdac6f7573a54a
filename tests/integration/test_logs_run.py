"""Log lines of a whole run: retries against a closed port are summed up, not one WARNING per attempt."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import yaml

from connector import load_pipeline, run_pipeline

pytestmark = pytest.mark.timeout(120)


def test_a_closed_port_gives_a_few_summed_up_retry_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "users.csv").write_text("user_id,age\n" + "".join(f"u{i},{i}\n" for i in range(200)))
    doc = {
        "name": "closed",
        "write": {"concurrency": 4, "max_objects_per_request": 10, "transport": "requests",
                  "retry": {"max_attempts": 6, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_elapsed_s": 5}},
        "streams": [{"name": "users", "source": {"path": "users.csv"}, "kind": "attributes",
                     "identifier": {"external_id": "user_id"}, "attributes": [{"column": "age", "type": "integer"}]}],
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    caplog.set_level(logging.DEBUG, logger="connector.delivery.client")
    env = {"BRAZE_REST_ENDPOINT": f"http://127.0.0.1:{port}", "BRAZE_API_KEY": "closed-port-key"}
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), mode="bulk", report_dir=tmp_path / "out", env=env, raise_on_failure=False)
    assert report.exit_code == 3
    client = [r for r in caplog.records if r.name == "connector.delivery.client"]
    detail = [r for r in client if r.levelno == logging.DEBUG and "attempt" in r.getMessage()]
    summed = [r for r in client if r.levelno == logging.WARNING]
    assert len(detail) >= 10  # each attempt at debug level
    assert 1 <= len(summed) <= 3, [r.getMessage() for r in summed]  # the run lasts well under 5 s
    assert sum(r.counters["retries"] for r in summed) == len(detail)  # type: ignore[attr-defined]
