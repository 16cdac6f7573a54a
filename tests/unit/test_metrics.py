"""The OpenMetrics file for node_exporter's textfile collector: parsed by prometheus_client's own parsers
(OpenMetrics and the Prometheus text format node_exporter reads), written atomically."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from connector import load_pipeline, run_pipeline
from connector.report.metrics import metrics_path, render_metrics, write_metrics

pytestmark = pytest.mark.timeout(120)


def doc(exit_code: int = 0) -> dict[str, Any]:
    return {"pipeline": "users", "exit_code": exit_code, "started_at": "2026-03-01T02:00:00.000Z",
            "finished_at": "2026-03-01T02:00:42.500Z", "duration_s": 42.5,
            "streams": [{"name": "users", "read": 10, "delivered": 7, "rejected": 2, "failed": 1, "skipped": 0},
                        {"name": 'we"ird\\name', "read": 3, "delivered": 3, "rejected": 0, "failed": 0, "skipped": 0}],
            "requests": {"total": 12, "rate_limited": 3, "retries": 4}}  # fmt: skip


def samples(text: str, parse: Callable[[str], Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in parse(text) for s in fam.samples}


@pytest.mark.parametrize("parse", [parse_openmetrics, parse_prometheus], ids=["openmetrics", "prometheus-text"])
def test_the_text_parses_in_both_formats_with_the_run_s_values(parse: Callable[[str], Any]) -> None:
    got = samples(render_metrics(doc(exit_code=1)), parse)
    p = (("pipeline", "users"),)
    assert got[("braze_connector_last_run_timestamp_seconds", p)] == 1772330442.5
    assert got[("braze_connector_last_run_success", p)] == 0
    assert got[("braze_connector_last_run_exit_code", p)] == 1
    assert got[("braze_connector_last_run_duration_seconds", p)] == 42.5
    assert got[("braze_connector_last_run_rows_read", (("pipeline", "users"), ("stream", "users")))] == 10
    assert got[("braze_connector_last_run_rows_failed", (("pipeline", "users"), ("stream", "users")))] == 1
    assert got[("braze_connector_last_run_rows_read", (("pipeline", "users"), ("stream", 'we"ird\\name')))] == 3
    assert got[("braze_connector_last_run_requests", p)] == 12
    assert got[("braze_connector_last_run_rate_limited", p)] == 3
    assert got[("braze_connector_last_run_retries", p)] == 4
    assert len(got) == 4 + 5 * 2 + 3


def test_every_family_is_a_gauge_and_the_text_ends_with_eof() -> None:
    text = render_metrics(doc())
    assert text.endswith("# EOF\n")
    assert {f.type for f in parse_openmetrics(text)} == {"gauge"}


def test_the_file_is_replaced_atomically_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "braze_users.prom"
    assert write_metrics(path, doc())
    first_inode = path.stat().st_ino
    assert write_metrics(path, doc(exit_code=3))
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one, never rewritten in place
    assert os.listdir(path.parent) == ["braze_users.prom"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "braze_connector_last_run_exit_code{pipeline=\"users\"} 3" in path.read_text()


def test_an_unwritable_folder_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert write_metrics(blocker / "m.prom", doc()) is False
    assert "could not write the metrics file" in caplog.text


def test_the_path_follows_the_pipeline_and_partition(make_project: Callable[..., Path], tmp_path: Path) -> None:
    p = load_pipeline(make_project(name="m", csv="user_id,a\nu1,1\n", attributes=[{"column": "a"}],
                                   metrics_file="metrics/{pipeline}.prom"))  # fmt: skip
    assert metrics_path(p) == tmp_path / "metrics" / "m.prom"
    assert metrics_path(p, {"k": 2, "n": 4}) == tmp_path / "metrics" / "m.p2of4.prom"
    assert metrics_path(load_pipeline(make_project(name="n", csv="user_id,a\nu1,1\n", attributes=[{"column": "a"}]))) is None


def test_validate_and_dry_runs_leave_the_file_alone(make_project: Callable[..., Path], tmp_path: Path) -> None:
    p = load_pipeline(make_project(name="m", csv="user_id,a\nu1,1\n", attributes=[{"column": "a"}],
                                   metrics_file="{pipeline}.prom"))  # fmt: skip
    run_pipeline(p, validate_only=True, env={})
    run_pipeline(p, dry_run=True, env={})
    assert not (tmp_path / "m.prom").exists()


def test_only_the_pipeline_placeholder_is_allowed(make_project: Callable[..., Path]) -> None:
    from connector.errors import ConfigError

    path = make_project(name="m", csv="user_id,a\nu1,1\n", attributes=[{"column": "a"}], metrics_file="m/{run_id}.prom")
    with pytest.raises(ConfigError, match=r"report.metrics_file: only the placeholder \{pipeline\} is allowed"):
        load_pipeline(path)


def test_a_partition_failing_before_its_first_row_writes_its_own_file(make_project: Callable[..., Path],
                                                                      tmp_path: Path) -> None:  # fmt: skip
    from connector.errors import SourceError
    from connector.report.publish import publish_failure

    p = load_pipeline(make_project(name="m", csv="user_id,a\nu1,1\n", attributes=[{"column": "a"}],
                                   metrics_file="{pipeline}.prom"))  # fmt: skip
    publish_failure(p, SourceError("data/users.csv: gone"), {}, offline=False, partition={"k": 2, "n": 4})
    got = samples((tmp_path / "m.p2of4.prom").read_text(), parse_openmetrics)
    assert got[("braze_connector_last_run_success", (("pipeline", "m"),))] == 0
    assert got[("braze_connector_last_run_exit_code", (("pipeline", "m"),))] == 2
    assert not (tmp_path / "m.prom").exists()
