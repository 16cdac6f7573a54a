"""Alerts: after a run, check the `alerts:` triggers and post one message to the webhook if any fired.

Triggers: the run failed (any exit code but 0), rejects over a count or a fraction of the rows read, fewer
rows read than expected, a run longer than a limit. One run posts at most one message, listing every
trigger that fired: a JSON object whose `text` is what Slack (and Teams', Mattermost's, Discord's
Slack-compatible hooks) show, plus `pipeline`, `run_id`, `status`, `exit_code`, `counts`, `duration_s`,
`report` and `alerts` for other receivers. Posting never changes the run's outcome: a post that fails
(timed out, refused, not a 2xx) is a warning, and report.json's `alerts` says what fired and whether it
was delivered. The webhook URL comes from the environment variable `alerts.url_env` and appears nowhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.config import Alerts
from connector.report.document import EXIT_MEANINGS

log = logging.getLogger(__name__)

COUNT_KEYS = ("read", "delivered", "rejected", "failed", "skipped")


@dataclass(frozen=True)
class Fired:
    """One trigger that fired, and why in words."""

    trigger: str
    detail: str


def evaluate(alerts: Alerts, doc: Mapping[str, Any]) -> list[Fired]:
    """The triggers a finished run (its report.json document) trips."""
    rows, code = doc["rows"], int(doc["exit_code"] or 0)
    read, rejected = int(rows.get("read", 0)), int(rows.get("rejected", 0))
    out: list[Fired] = []
    if alerts.on_failure and code != 0:
        out.append(Fired("failure", f"exit code {code}: {_meaning(doc, code, 'failed')}"))
    if alerts.rejects_over is not None and rejected > alerts.rejects_over:
        out.append(Fired("rejects", f"{rejected:,} rows rejected, over the alert's {alerts.rejects_over:,}"))
    fraction = rejected / read if read else 0.0
    if alerts.reject_fraction_over is not None and fraction > alerts.reject_fraction_over:
        out.append(Fired("reject_fraction", f"{fraction:.2%} of the {read:,} rows read rejected ({rejected:,}), "
                                            f"over the alert's {alerts.reject_fraction_over:.2%}"))  # fmt: skip
    if alerts.rows_read_below is not None and read < alerts.rows_read_below:
        out.append(Fired("rows_read_below", f"{read:,} rows read, fewer than the {alerts.rows_read_below:,} expected"))
    duration = float(doc.get("duration_s") or 0.0)
    if alerts.duration_over_s is not None and duration > alerts.duration_over_s:
        out.append(Fired("duration", f"the run took {duration:,.1f} s, over the alert's {alerts.duration_over_s:g} s"))
    return out


def _meaning(doc: Mapping[str, Any], code: int, default: str) -> str:
    """The report's own words for its exit code (they name the figures, e.g. the share rejected), else the
    general ones (a report written before the run ended, or by an older version)."""
    said = doc.get("exit_meaning")
    return str(said) if said else EXIT_MEANINGS.get(code, default)


def _slack(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives a meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_message(doc: Mapping[str, Any], fired: list[Fired]) -> dict[str, Any]:
    """The JSON body posted to the webhook."""
    code = int(doc["exit_code"] or 0)
    status = "succeeded" if code == 0 else "failed"
    counts = {k: int(doc["rows"].get(k, 0)) for k in COUNT_KEYS} if doc.get("rows") else {}
    report = (doc.get("files") or {}).get("report_json")
    head = f"braze-connector: pipeline *{_slack(doc['pipeline'])}*"
    head += f" run `{_slack(str(doc['run_id']))}` {status}" if doc.get("run_id") else f" {status}"
    lines = [f"{head} (exit code {code})"]
    lines += [f"• {_slack(f.detail)}" for f in fired]
    if counts:
        took = doc.get("duration_s")
        lines.append(" · ".join(f"{k} {v:,}" for k, v in counts.items())
                     + (f" · {float(took):,.1f} s" if took is not None else ""))  # fmt: skip
    if report:
        lines.append(f"Report: {_slack(str(report))}")
    return {
        "text": "\n".join(lines),
        "pipeline": doc["pipeline"],
        "run_id": doc.get("run_id"),
        "status": status,
        "exit_code": code,
        "exit_meaning": _meaning(doc, code, "unknown"),
        "alerts": [{"trigger": f.trigger, "detail": f.detail} for f in fired],
        "counts": counts,
        "duration_s": doc.get("duration_s"),
        "report": report,
        "report_html": (doc.get("files") or {}).get("report_html"),
    }


def send_alerts(alerts: Alerts, doc: Mapping[str, Any], env: Mapping[str, str], *,
                detail: str | None = None) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    """Evaluate the triggers and post the message if any fired (`detail` adds to the failure's reason).

    Returns report.json's `alerts` entry and the warning to record when the post was not delivered.
    """
    fired = [Fired(f.trigger, f"{f.detail}: {detail}") if detail and f.trigger == "failure" else f
             for f in evaluate(alerts, doc)]  # fmt: skip
    summary: dict[str, Any] = {"url_env": alerts.url_env, "fired": [], "posted": False, "delivered": False,
                               "status": None, "error": None}  # fmt: skip
    if not fired:
        return summary, None
    # The HTTP client (http.client, urllib) only when a trigger fired: a run with no alert never loads it.
    from connector.report.webhook import PostResult, post_json, url_problem

    url = env.get(alerts.url_env, "").strip()
    problem = url_problem(url) if url else f"the environment variable {alerts.url_env} is not set"
    if problem is None:
        message = build_message(doc, fired)
        result = post_json(url, message if alerts.message == "full" else {"text": message["text"]}, alerts.timeout_s)
        summary["posted"] = True
    else:  # nothing sent: no URL, or one that cannot be posted to (the reason never quotes it)
        result = PostResult(False, None, problem)
    summary.update(delivered=result.delivered, status=result.status, error=result.error)
    summary["fired"] = [{"trigger": f.trigger, "detail": f.detail, "delivered": result.delivered} for f in fired]
    names = ", ".join(f.trigger for f in fired)
    if result.delivered:
        log.info("alert (%s) posted to the webhook from $%s (HTTP %s)", names, alerts.url_env, result.status)
        return summary, None
    return summary, (f"alert ({names}) not delivered to the webhook from ${alerts.url_env}: {result.error}; "
                     "the run's outcome is unchanged")  # fmt: skip
