"""Option types the commands share (cli.py's run and validate, upload_cli.py's upload): modes, log settings,
the report folder, --quiet and --overwrite."""

# No `from __future__ import annotations` here (a module of the CLI's commands): typer reads every command's signature at each start (twice per
# command), and string annotations make it evaluate them all again (~5 ms of every command's CPU). Names
# imported only for type checking are quoted instead.
import enum
from pathlib import Path
from typing import Annotated

import typer

ReportDirOpt = Annotated[
    Path | None, typer.Option("--report-dir", help="Report folder ({pipeline} and {run_id} are filled in).")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress display; only warnings in the log.")
]


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


LogFormatOpt = Annotated[
    LogFormat,
    typer.Option("--log-format", envvar="BRAZE_CONNECTOR_LOG_FORMAT",
                 help="Log lines as text or JSON lines (ts, level, logger, run_id, pipeline, stream, message)."),
]  # fmt: skip
LogLevelOpt = Annotated[
    LogLevel | None,
    typer.Option("--log-level", envvar="BRAZE_CONNECTOR_LOG_LEVEL",
                 help="debug, info, warning or error [default: info; warning with --quiet]."),
]  # fmt: skip
OverwriteOpt = Annotated[
    bool,
    typer.Option(help="Reuse a report folder that already holds a run (its files are replaced); by default "
                      "such a run writes to a new folder beside it."),
]  # fmt: skip


class Mode(enum.StrEnum):
    auto = "auto"
    bulk = "bulk"
    sync = "sync"
