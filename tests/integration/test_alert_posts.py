"""Alerts end to end: real pipeline runs against the emulator post to a real HTTP receiver on 127.0.0.1
(tests/webhook_receiver.py); a receiver that is down, slow or failing never changes the run's exit code."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.emulator import EmulatorServer
from connector.errors import SourceError
from connector.report.webhook import post_json

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from redis_server import free_port  # noqa: E402
from webhook_receiver import WebhookReceiver  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# 10 rows, 2 rejected (age is not an integer): 20 % rejected.
CSV = "user_id,age\n" + "".join(f"u{i},{'x' if i < 2 else 30 + i}\n" for i in range(10))
HOOK = "TEST_ALERT_WEBHOOK"
SECRET = "secret-token-1234"


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Callable[..., Path]:
    """A pipeline with `alerts` (url_env HOOK) and the given triggers; rejects over 50 % fail the run."""

    def make(max_reject_fraction: float = 0.5, **alerts: Any) -> Path:
        path = make_project(name="alerting", csv=CSV, max_reject_fraction=max_reject_fraction,
                            attributes=[{"column": "age", "type": "integer"}])  # fmt: skip
        doc = yaml.safe_load(path.read_text())
        doc["alerts"] = {"url_env": HOOK, **alerts}
        path.write_text(yaml.safe_dump(doc))
        return path

    return make


def env_for(em: EmulatorServer, url: str | None) -> dict[str, str]:
    env = {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}
    if url is not None:
        env[HOOK] = url
    return env


def report_json(report: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize(
    ("settings", "triggers", "exit_code"),
    [
        ({"max_reject_fraction": 0.1}, ["failure"], 1),
        ({"rejects_over": 1}, ["rejects"], 0),
        ({"reject_fraction_over": 0.15}, ["reject_fraction"], 0),
        ({"rows_read_below": 11}, ["rows_read_below"], 0),
        ({"duration_over_s": 0.001}, ["duration"], 0),
    ],
    ids=["failure", "rejects", "reject_fraction", "rows_read_below", "duration"],
)
def test_each_trigger_posts_one_message_from_a_real_run(
    project: Callable[..., Path], emulator: EmulatorServer, settings: dict[str, Any], triggers: list[str],
    exit_code: int,
) -> None:
    p = load_pipeline(project(**settings))
    with WebhookReceiver() as hook:
        report = run_pipeline(p, env=env_for(emulator, hook.url()), raise_on_failure=False)
    assert report.exit_code == exit_code
    assert len(hook.posts) == 1
    path, headers, body = hook.posts[0]
    assert path == "/services/T000/B000/secret-token-1234" and headers["Content-Type"] == "application/json"
    assert [a["trigger"] for a in body["alerts"]] == triggers
    assert body["pipeline"] == "alerting" and body["run_id"] == report.run_id
    assert body["status"] == ("failed" if exit_code else "succeeded") and body["exit_code"] == exit_code
    assert body["counts"] == {"read": 10, "delivered": 8, "rejected": 2, "failed": 0, "skipped": 0}
    assert body["report"] == str(report.report_dir / "report.json")
    assert body["text"].startswith("braze-connector: pipeline *alerting*") and "Report: " in body["text"]
    assert emulator.stats()["objects_applied"]["attributes"] == 8  # the run really delivered
    alerts = report_json(report)["alerts"]
    assert alerts["delivered"] is True and alerts["status"] == 200 and alerts["error"] is None
    assert [(f["trigger"], f["delivered"]) for f in alerts["fired"]] == [(t, True) for t in triggers]


def test_a_run_within_every_limit_posts_nothing(project: Callable[..., Path], emulator: EmulatorServer) -> None:
    p = load_pipeline(project(rejects_over=2, reject_fraction_over=0.2, rows_read_below=10, duration_over_s=600))
    with WebhookReceiver() as hook:
        report = run_pipeline(p, env=env_for(emulator, hook.url()))
    assert report.exit_code == 0 and hook.posts == []
    assert report_json(report)["alerts"] == {"url_env": HOOK, "fired": [], "posted": False, "delivered": False,
                                             "status": None, "error": None}  # fmt: skip


def test_a_dead_receiver_does_not_change_the_exit_code_and_the_url_stays_secret(
    project: Callable[..., Path], emulator: EmulatorServer, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/services/T0/B0/{SECRET}"  # nothing listens there
    p = load_pipeline(project(max_reject_fraction=0.1, rejects_over=0))
    baseline = run_pipeline(load_pipeline(project(max_reject_fraction=0.1, rejects_over=0)),
                            env=env_for(emulator, None), raise_on_failure=False)  # fmt: skip
    caplog.set_level(logging.DEBUG)
    report = run_pipeline(p, env=env_for(emulator, dead), raise_on_failure=False)
    assert report.exit_code == baseline.exit_code == 1
    assert report.rows == baseline.rows
    data = report_json(report)
    assert data["alerts"]["posted"] is True and data["alerts"]["delivered"] is False
    assert data["alerts"]["error"] == "connection refused" and data["alerts"]["status"] is None
    assert [f["delivered"] for f in data["alerts"]["fired"]] == [False, False]
    assert any("not delivered to the webhook from $TEST_ALERT_WEBHOOK: connection refused" in w
               for w in data["warnings"])  # fmt: skip
    # The baseline had no URL at all: its alert is recorded as not delivered, for that reason.
    assert report_json(baseline)["alerts"]["error"] == "the environment variable TEST_ALERT_WEBHOOK is not set"
    written = "".join(f.read_text(errors="replace") for f in report.report_dir.iterdir() if f.is_file())
    out = capsys.readouterr()
    for text in (written, caplog.text, out.out, out.err):
        assert SECRET not in text and dead not in text
    assert "connection refused" in caplog.text


@pytest.mark.parametrize("userinfo", [f"bob:{SECRET}@", f"{SECRET}@", f":{SECRET}@"])
def test_a_url_with_credentials_is_refused_with_a_clear_message_that_never_shows_them(
    project: Callable[..., Path], emulator: EmulatorServer, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str], userinfo: str,
) -> None:
    """user:password@host: nothing is posted (no connection, no name lookup of the password), and the error
    says why in words that hold neither the URL nor the credentials."""
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver() as hook:
        url = hook.url().replace("http://", f"http://{userinfo}")
        report = run_pipeline(load_pipeline(project(rejects_over=0)), env=env_for(emulator, url))
        assert hook.posts == [] and hook.gets == []
    alerts = report_json(report)["alerts"]
    assert report.exit_code == 0 and alerts["posted"] is False and alerts["delivered"] is False
    assert alerts["error"].startswith("the URL holds credentials (user:password@ before the host)")
    assert any("not delivered to the webhook from $TEST_ALERT_WEBHOOK: the URL holds credentials" in w
               for w in report_json(report)["warnings"])  # fmt: skip
    written = "".join(f.read_text(errors="replace") for f in report.report_dir.iterdir() if f.is_file())
    out = capsys.readouterr()
    for text in (written, caplog.text, out.out, out.err):
        assert SECRET not in text and "bob" not in text


@pytest.mark.parametrize(("status", "delay", "error"), [(500, 0.0, "HTTP 500"), (200, 3.0, "timed out after 0.5 s")])
def test_a_failing_or_slow_receiver_is_a_warning(
    project: Callable[..., Path], emulator: EmulatorServer, status: int, delay: float, error: str
) -> None:
    p = load_pipeline(project(rejects_over=0, timeout_s=0.5))
    with WebhookReceiver(status=status, delay_s=delay) as hook:
        report = run_pipeline(p, env=env_for(emulator, hook.url()))
    assert report.exit_code == 0 and len(hook.posts) == 1
    alerts = report_json(report)["alerts"]
    assert alerts["delivered"] is False and alerts["error"] == error
    assert any(error in w for w in report_json(report)["warnings"])


def test_a_run_failing_before_its_first_row_still_alerts(project: Callable[..., Path], emulator: EmulatorServer,
                                                         tmp_path: Path) -> None:  # fmt: skip
    path = project()
    (tmp_path / "data" / "users.csv").unlink()
    with WebhookReceiver() as hook, pytest.raises(SourceError):
        run_pipeline(load_pipeline(path), env=env_for(emulator, hook.url()))
    assert len(hook.posts) == 1
    body = hook.posts[0][2]
    assert body["exit_code"] == 2 and body["status"] == "failed" and body["run_id"] is None
    assert body["alerts"][0]["trigger"] == "failure" and "users.csv" in body["alerts"][0]["detail"]


def test_dry_runs_do_not_alert_unless_asked(project: Callable[..., Path]) -> None:
    with WebhookReceiver() as hook:
        run_pipeline(load_pipeline(project(rejects_over=0)), dry_run=True, env={HOOK: hook.url()})
        assert hook.posts == []
        run_pipeline(load_pipeline(project(rejects_over=0, dry_runs=True)), dry_run=True, env={HOOK: hook.url()})
        assert [b["alerts"][0]["trigger"] for _, _, b in hook.posts] == ["rejects"]


def test_a_redirect_is_not_followed() -> None:
    with WebhookReceiver() as target, WebhookReceiver(status=302, redirect_to=None) as hook:
        hook.redirect_to = target.url("/elsewhere")
        result = post_json(hook.url(), {"text": "x"}, 2.0)
    assert (result.delivered, result.status, result.error) == (False, 302, "HTTP 302")
    assert target.posts == [] and target.gets == []


def test_the_cli_exit_code_is_the_same_with_a_dead_receiver_and_its_output_never_shows_the_url(
    project: Callable[..., Path], tmp_path: Path
) -> None:
    import subprocess

    path = project(max_reject_fraction=0.1)  # 20 % rejected: exit 1; the embedded emulator (url: local)
    dead = f"http://127.0.0.1:{free_port()}/services/T0/B0/{SECRET}"
    base = {k: v for k, v in os.environ.items() if k != HOOK}
    base.update(BRAZE_API_KEY="test-key", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    codes, outputs = [], []
    for env in (base, {**base, HOOK: dead}):
        done = subprocess.run([sys.executable, "-m", "connector", "run", str(path), "--mode", "bulk", "--log-level", "debug"],
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        codes.append(done.returncode)
        outputs.append(done.stdout + done.stderr)
    assert codes == [1, 1]
    assert "not delivered to the webhook from $TEST_ALERT_WEBHOOK: connection refused" in outputs[1]
    assert "  warning: alert (failure) not delivered" in outputs[1]  # in the summary on stdout too
    assert SECRET not in outputs[1] and dead not in outputs[1]
    reports = "".join(f.read_text(errors="replace") for f in (tmp_path / "reports").rglob("*") if f.is_file())
    assert "connection refused" in reports and SECRET not in reports


def test_a_bug_while_alerting_is_a_warning_that_never_quotes_the_url(
    project: Callable[..., Path], emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import connector.report.alerts as alerts_module

    def broken(*args: Any) -> Any:
        raise RuntimeError(f"boom near {SECRET}")

    monkeypatch.setattr(alerts_module, "build_message", broken)
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver() as hook:
        report = run_pipeline(load_pipeline(project(rejects_over=0)), env=env_for(emulator, hook.url()))
    assert report.exit_code == 0 and hook.posts == []
    data = report_json(report)
    assert "alert not sent: RuntimeError" in data["warnings"] and data["alerts"]["delivered"] is False
    assert SECRET not in caplog.text and "RuntimeError" in caplog.text


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout() -> None:
    """Each byte comes within the socket's timeout, so only a deadline for the whole post ends it."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for i in range(len(answer)):
                try:
                    conn.sendall(answer[i : i + 1])
                except OSError:
                    return
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        result = post_json(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", {"text": "x"}, 0.5)
    finally:
        listener.close()
    assert (result.delivered, result.error) == (False, "timed out after 0.5 s")


def test_message_text_posts_only_the_text(project: Callable[..., Path], emulator: EmulatorServer) -> None:
    with WebhookReceiver() as hook:
        run_pipeline(load_pipeline(project(rejects_over=0, message="text")), env=env_for(emulator, hook.url()))
    assert len(hook.posts) == 1 and list(hook.posts[0][2]) == ["text"]
    assert "• 2 rows rejected, over the alert's 0" in hook.posts[0][2]["text"]
