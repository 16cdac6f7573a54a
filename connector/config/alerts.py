"""The `alerts:` block of a pipeline file: a webhook (its URL from the environment) and when to post to it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from connector.config.mappings import _Model

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


class Alerts(_Model):
    """Post one JSON message (Slack-compatible `text`) to a webhook when a finished run trips a trigger.

    The URL is a secret, like the API key: it is read from the environment variable `url_env`, never
    from the file, and is never logged or written. A trigger left null is off; `on_failure` is on.
    """

    url_env: str
    # Any exit code but 0 (rejects over report.max_reject_fraction, rows failed, stopped, fatal, ...).
    on_failure: bool = True
    # Rejected rows over this count, or over this fraction of the rows read.
    rejects_over: Annotated[int, Field(ge=0)] | None = None
    reject_fraction_over: Annotated[float, Field(ge=0, le=1)] | None = None
    # Fewer rows read than this (an upstream export that came out short).
    rows_read_below: Annotated[int, Field(ge=1)] | None = None
    # A run that took longer than this many seconds.
    duration_over_s: Annotated[float, Field(gt=0)] | None = None
    # Seconds the post may take before it counts as not delivered (it never changes the run's outcome).
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # full: `text` plus the structured fields; text: only {"text": ...}, for receivers that refuse unknown
    # fields (Google Chat's webhooks do).
    message: Literal["full", "text"] = "full"
    # Also alert on `validate` and `--dry-run` runs (by default only runs that send).
    dry_runs: bool = False

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not ENV_NAME.fullmatch(name):
            # Never echo the value: it may be the webhook URL itself, pasted by mistake.
            raise ValueError(
                "url_env names the environment variable that holds the webhook URL (letters, digits and '_', "
                "e.g. BRAZE_ALERT_WEBHOOK), not the URL itself: the URL is a secret and stays out of the file"
            )
        return name

    @model_validator(mode="after")
    def _some_trigger(self) -> Alerts:
        triggers = (self.rejects_over, self.reject_fraction_over, self.rows_read_below, self.duration_over_s)
        if not self.on_failure and all(t is None for t in triggers):
            raise ValueError(
                "alerts: no trigger is on; set on_failure: true or one of rejects_over, reject_fraction_over, "
                "rows_read_below, duration_over_s"
            )
        return self
