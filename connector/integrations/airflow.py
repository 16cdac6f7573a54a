"""Airflow 3.x: `BrazeHook` (the API key and endpoint from an Airflow Connection) and
`BrazeConnectorOperator` (runs a pipeline; pushes the report's paths and counts to XCom; fails the task
when the run's exit code is not 0).

The Connection (default id `braze_default`, any connection type): the API key in `password`; the REST
endpoint in `extra` as `{"endpoint": "https://rest.iad-01.braze.com"}`, or as `host` (a full URL, or a
host name with `schema` http/https (default https) and an optional `port`). With no endpoint the
pipeline file's `destination.url` is used.

    BrazeConnectorOperator(task_id="braze_users", pipeline="/opt/etl/pipelines/users.yaml")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException

from connector.integrations import failure_message, run_for_scheduler, run_summary

XCOM_KEY = "braze_report"


class BrazeHook(BaseHook):
    """Reads the Braze API key and REST endpoint from an Airflow Connection."""

    conn_name_attr = "braze_conn_id"
    default_conn_name = "braze_default"
    conn_type = "generic"
    hook_name = "Braze"

    def __init__(self, braze_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.braze_conn_id = braze_conn_id

    def get_conn(self) -> tuple[str | None, str | None]:
        """(api_key, endpoint) of the connection."""
        return self.get_credentials()

    def get_credentials(self) -> tuple[str | None, str | None]:
        """(api_key, endpoint); the endpoint is None when the connection names none."""
        conn = self.get_connection(self.braze_conn_id)
        extra = conn.extra_dejson or {}
        endpoint = extra.get("endpoint") or None
        host = (conn.host or "").strip()
        if endpoint is None and host:
            if host.startswith(("http://", "https://")):
                endpoint = host.rstrip("/")
            else:
                endpoint = f"{conn.schema or 'https'}://{host}"
            if conn.port and endpoint.count(":") < 2:
                endpoint += f":{conn.port}"
        return (conn.password or None), endpoint


class BrazeConnectorOperator(BaseOperator):
    """Runs a braze-connector pipeline; the run's summary is the task's return value and XCom `braze_report`.

    The task fails (AirflowException) when the run's exit code is not 0: rejects over the threshold or
    rows not delivered (1), a pipeline-file or source error (2), a refused key or an unreachable API (3).
    The summary is pushed before the task fails, so a downstream task with `trigger_rule="all_done"` can
    still read where the report is.
    """

    template_fields: Sequence[str] = ("pipeline", "report_dir", "mode")

    def __init__(
        self,
        *,
        pipeline: str | Path,
        braze_conn_id: str = BrazeHook.default_conn_name,
        mode: str | None = None,
        report_dir: str | Path | None = None,
        dry_run: bool = False,
        full: bool = False,
        ignore_unfinished: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = str(pipeline)
        self.braze_conn_id = braze_conn_id
        self.mode = mode
        self.report_dir = str(report_dir) if report_dir is not None else None
        self.dry_run = dry_run
        self.full = full
        self.ignore_unfinished = ignore_unfinished  # a retried task after a kill would send its events again

    def execute(self, context: Any) -> dict[str, Any]:
        api_key, endpoint = (None, None) if self.dry_run else BrazeHook(self.braze_conn_id).get_credentials()
        report = run_for_scheduler(self.pipeline, api_key=api_key, endpoint=endpoint, mode=self.mode,
                                   report_dir=self.report_dir, dry_run=self.dry_run, full=self.full,
                                   ignore_unfinished=self.ignore_unfinished)  # fmt: skip
        summary = run_summary(report)
        context["ti"].xcom_push(key=XCOM_KEY, value=summary)
        if report.exit_code:
            raise AirflowException(failure_message(report))
        return summary
