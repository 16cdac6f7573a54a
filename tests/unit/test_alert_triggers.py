"""Alerts: the config block, which triggers a finished run trips, and the message posted (no network here;
tests/integration/test_alert_posts.py posts to a real receiver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from connector.config import Alerts, load_pipeline
from connector.errors import ConfigError
from connector.report.alerts import build_message, evaluate


def doc(read: int = 100, rejected: int = 0, exit_code: int = 0, duration: float = 2.0) -> dict[str, Any]:
    return {"pipeline": "users", "run_id": "20260101T000000Z-abc", "exit_code": exit_code, "duration_s": duration,
            "rows": {"read": read, "delivered": read - rejected, "rejected": rejected, "failed": 0, "skipped": 0,
                     "valid": read - rejected, "possibly_duplicated": 0},
            "files": {"report_json": "/r/report.json", "report_html": "/r/report.html"}}  # fmt: skip


def test_no_trigger_fires_on_a_clean_run_within_every_limit() -> None:
    a = Alerts(url_env="HOOK", rejects_over=5, reject_fraction_over=0.1, rows_read_below=50, duration_over_s=60)
    assert evaluate(a, doc(read=100, rejected=5, duration=59.9)) == []


def test_each_trigger_fires_past_its_limit() -> None:
    a = Alerts(url_env="HOOK", rejects_over=5, reject_fraction_over=0.05, rows_read_below=500, duration_over_s=60)
    fired = evaluate(a, doc(read=100, rejected=6, exit_code=1, duration=61))
    assert [f.trigger for f in fired] == ["failure", "rejects", "reject_fraction", "rows_read_below", "duration"]
    assert "exit code 1" in fired[0].detail
    assert "6 rows rejected, over the alert's 5" in fired[1].detail
    assert "6.00% of the 100 rows read" in fired[2].detail
    assert "100 rows read, fewer than the 500 expected" in fired[3].detail
    assert "61.0 s" in fired[4].detail


def test_on_failure_can_be_turned_off_but_not_every_trigger() -> None:
    assert evaluate(Alerts(url_env="HOOK", on_failure=False, rejects_over=10), doc(exit_code=4)) == []
    with pytest.raises(ValidationError, match="no trigger is on"):
        Alerts(url_env="HOOK", on_failure=False)


@pytest.mark.parametrize("secret", ["https://hooks.slack.com/services/T0/B0/very-secret-token",
                                    "https://bob:very-secret-token@hooks.example.com/alerts"])
def test_a_url_pasted_into_url_env_is_refused_without_echoing_it(tmp_path: Path, secret: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "alerts": {"url_env": secret},
                                    "streams": [{"name": "s", "source": {"path": "x.csv"}, "kind": "attributes",
                                                 "identifier": {"external_id": "id"}}]}))  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_pipeline(path)
    assert "alerts.url_env" in str(e.value) and "not the URL itself" in str(e.value)
    assert "very-secret-token" not in str(e.value) and "bob" not in str(e.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.slack.com/services/T0/B0/tok", None),
        ("http://127.0.0.1:8080/hook?key=tok@x", None),  # an @ after the host is the receiver's business
        ("https://bob:tok-42@hooks.example.com/x", "the URL holds credentials (user:password@ before the host)"),
        ("https://tok-42@hooks.example.com/x", "the URL holds credentials"),
        ("http://:tok-42@127.0.0.1:9/x", "the URL holds credentials"),
        ("ftp://hooks.example.com/x", "the URL is not an http:// or https:// URL"),
        ("https:///x", "the URL has no host"),
        ("http://127.0.0.1:99999/x", "the URL is malformed (its host or port)"),
        ("http://[::1/x", "the URL is malformed (its host or port)"),
    ],
)
def test_a_webhook_url_that_cannot_be_posted_to_is_named_without_quoting_it(url: str, problem: str | None) -> None:
    from connector.report.webhook import post_json, url_problem

    found = url_problem(url)
    assert found == problem if problem is None else found is not None and found.startswith(problem)
    if problem is not None:  # refused before any connection, with the same words
        result = post_json(url, {"text": "x"}, 1.0)
        assert (result.delivered, result.status, result.error) == (False, None, found)
        assert "tok-42" not in found and "bob" not in found and "example" not in found


def test_unknown_alert_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        Alerts.model_validate({"url_env": "HOOK", "on_sucess": True})


def test_the_message_has_slack_text_and_structured_fields() -> None:
    d = doc(read=1000, rejected=120, exit_code=1)
    d["pipeline"] = "users<&>"
    a = Alerts(url_env="HOOK", rejects_over=100)
    msg = build_message(d, evaluate(a, d))
    assert msg["status"] == "failed" and msg["exit_code"] == 1 and msg["run_id"] == "20260101T000000Z-abc"
    assert msg["counts"] == {"read": 1000, "delivered": 880, "rejected": 120, "failed": 0, "skipped": 0}
    assert msg["report"] == "/r/report.json" and msg["duration_s"] == 2.0
    assert [x["trigger"] for x in msg["alerts"]] == ["failure", "rejects"]
    text = msg["text"]
    assert text.startswith("braze-connector: pipeline *users&lt;&amp;&gt;* run `20260101T000000Z-abc` failed")
    assert "• 120 rows rejected, over the alert's 100" in text and "Report: /r/report.json" in text
    assert "read 1,000 · delivered 880 · rejected 120" in text


def test_the_failure_alert_carries_the_reports_own_figures() -> None:
    """The report names why exit code 1 happened (the share rejected); the alert says the same, not the general
    words. A document without them (an older report) still gets the general words."""
    d = doc(read=1000, rejected=120, exit_code=1)
    d["exit_meaning"] = "12.0 % of rows rejected (120 of 1,000), above max_reject_fraction 5 %"
    a = Alerts(url_env="HOOK")
    fired = evaluate(a, d)
    assert fired[0].detail == "exit code 1: 12.0 % of rows rejected (120 of 1,000), above max_reject_fraction 5 %"
    assert build_message(d, fired)["exit_meaning"] == d["exit_meaning"]
    del d["exit_meaning"]
    assert evaluate(a, d)[0].detail == "exit code 1: rows rejected over the threshold, or rows not delivered"
