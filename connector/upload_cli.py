"""`braze-connector upload FILE`: one file into Braze without writing a pipeline file first.

The flags become an UploadSpec; the file's columns and types are inferred (readers/infer.py) and the
pipeline built (config/upload.py); it then runs exactly as `run` does (cli._execute: progress, summary,
report, exit code), and the equivalent pipeline file is written beside the report, so `braze-connector run
<report dir>/pipeline.yaml` repeats the upload. cli.py registers the command; this module prints nothing.
"""

# No `from __future__ import annotations` here (a module of the CLI's commands): typer reads every command's signature at each start (twice per
# command), and string annotations make it evaluate them all again (~5 ms of every command's CPU). Names
# imported only for type checking are quoted instead.
import enum
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from connector.cli_options import (
    LogFormat,
    LogFormatOpt,
    LogLevelOpt,
    Mode,
    OverwriteOpt,
    QuietOpt,
    ReportDirOpt,
)

if TYPE_CHECKING:
    from connector.config import Pipeline
    from connector.config.upload import UploadSpec
    from connector.report import RunReport



class Kind(enum.StrEnum):
    attributes = "attributes"
    events = "events"
    purchases = "purchases"


class IdType(enum.StrEnum):
    external_id = "external_id"
    email = "email"
    phone = "phone"
    braze_id = "braze_id"
    user_alias = "user_alias"


def _col(help_text: str) -> Any:
    return typer.Option(metavar="COLUMN", help=help_text)


def upload_command(execute: Callable[..., None]) -> Callable[..., None]:
    """The typer command; `execute` is cli._execute."""

    def upload(
        file: Annotated[Path, typer.Argument(help="The CSV or Parquet file to send.")],
        kind: Annotated[Kind, typer.Option(help="What each row becomes: attributes, events or purchases.")],
        id_column: Annotated[str, typer.Option("--id", metavar="COLUMN", help="The column identifying the user.")],
        id_type: Annotated[IdType, typer.Option(help="What --id holds (user_alias: the alias name, with --alias-label).")] = IdType.external_id,
        alias_label: Annotated[str | None, _col("--id-type user_alias: the column holding the alias label.")] = None,
        map_: Annotated[list[str] | None, typer.Option("--map", metavar="COL[:TYPE][=ATTR]",
                        help="Send only these columns (repeat it), with an optional type and Braze name "
                             "(attributes; properties for events and purchases). Default: every column, types inferred.")] = None,
        name_column: Annotated[str | None, _col("Events: the column holding the event name (default: a column 'name').")] = None,
        event_name: Annotated[str | None, typer.Option(help="Events: one event name for every row.")] = None,
        time_column: Annotated[str | None, _col("Events and purchases: the column holding the time (default: a column 'time').")] = None,
        product_column: Annotated[str | None, _col("Purchases: product id column (default: 'product_id').")] = None,
        price_column: Annotated[str | None, _col("Purchases: price column (default: 'price').")] = None,
        currency_column: Annotated[str | None, _col("Purchases: ISO 4217 currency column (default: 'currency').")] = None,
        quantity_column: Annotated[str | None, _col("Purchases: quantity column (default: 'quantity' if the file has it).")] = None,
        date_format: Annotated[list[str] | None, typer.Option(metavar="FORMAT",
                               help="strptime format(s) of the time and date columns, tried in order (repeat it).")] = None,
        endpoint: Annotated[str, typer.Option(help="Braze REST endpoint, or 'local' for the embedded emulator.")] = "local",
        api_key_env: Annotated[str, typer.Option(help="The environment variable holding the API key.")] = "BRAZE_API_KEY",
        name: Annotated[str | None, typer.Option(help="Pipeline name (reports, history); default: upload-<file stem>.")] = None,
        mode: Annotated[Mode | None, typer.Option(help="auto, bulk or sync.")] = None,
        report_dir: ReportDirOpt = None,
        dry_run: Annotated[bool, typer.Option(help="Build the exact request bodies, write a sample, send nothing.")] = False,
        quiet: QuietOpt = False,
        overwrite: OverwriteOpt = False,
        log_level: LogLevelOpt = None,
        log_format: LogFormatOpt = LogFormat.text,
    ) -> None:  # fmt: skip
        """Send one CSV or Parquet file to Braze with inferred types; writes the equivalent pipeline file.

        `braze-connector run <report dir>/pipeline.yaml` repeats the upload. Exit codes as `run`.
        """
        from connector.config.upload import UploadSpec

        spec = UploadSpec(
            file=file, kind=kind.value, id_column=id_column, id_type=id_type.value,
            alias_label_column=alias_label, maps=tuple(map_ or ()), name_column=name_column,
            event_name=event_name, time_column=time_column, product_column=product_column,
            price_column=price_column, currency_column=currency_column, quantity_column=quantity_column,
            date_formats=tuple(date_format or ()), endpoint=endpoint, api_key_env=api_key_env, name=name,
            workdir=Path.cwd(), report_dir=report_dir,
        )  # fmt: skip
        built: list[Pipeline] = []

        def build() -> "Pipeline":
            built.append(build_pipeline(spec))
            return built[0]

        files: list[Path] = []

        def written(folder: Path) -> None:  # before the first row: a killed upload can still be resumed
            files.append(write_pipeline_file(built[0], folder, spec))

        def after(report: "RunReport") -> list[str]:
            return next_step(report, files[0], dry_run=dry_run)

        execute(build, mode=mode.value if mode else None, report_dir=report_dir, dry_run=dry_run,
                validate_only=False, quiet=quiet, overwrite=overwrite, after=after, on_report_dir=written,
                log_level=log_level.value if log_level else None, log_format=log_format.value)  # fmt: skip

    return upload


def next_step(report: "RunReport", path: Path, *, dry_run: bool) -> list[str]:
    """The summary's last lines: the pipeline file written, and the command that finishes (a stopped run),
    sends for real (a dry run) or repeats the upload."""
    lines = [f"  pipeline file: {path}"]
    if report.stopped:  # rows left to send: resuming the run sends only those
        lines.append(f"    braze-connector run {path} --resume {report.report_dir}   # finishes this upload")
    elif dry_run:
        lines.append(f"    braze-connector run {path}   # sends this upload for real (this was a dry run)")
    else:
        lines.append(f"    braze-connector run {path}   # repeats this upload")
    return lines


def build_pipeline(spec: "UploadSpec") -> "Pipeline":
    """The file's inferred column types -> the upload's pipeline (SourceError, ConfigError: exit 2)."""
    from connector.config import Source
    from connector.config.upload import build_upload
    from connector.errors import SourceError
    from connector.readers.infer import infer_types

    if not spec.file.exists():
        raise SourceError(f"{spec.file}: file not found")
    if not spec.file.is_file():
        raise SourceError(f"{spec.file}: not a file; upload takes one CSV or Parquet file (write a pipeline file "
                          "for a folder or a glob)")  # fmt: skip

    types = infer_types(Source(path=str(spec.file.resolve())), Path.cwd(), date_formats=spec.date_formats)
    return build_upload(spec, types)


def write_pipeline_file(pipeline: "Pipeline", folder: Path, spec: "UploadSpec") -> Path:
    """Write the upload's pipeline file into its report folder; returns its path."""
    from connector.config import dump_pipeline

    header = (f"Written by `braze-connector upload` of {spec.file} (--kind {spec.kind}): the same run as a "
              "pipeline file.\nRun it again with: braze-connector run <this file>  (the API key is read from "
              f"${spec.api_key_env} for a real endpoint)")  # fmt: skip
    from connector.errors import ConfigError
    from connector.report.paths import PIPELINE_FILE

    path = folder / PIPELINE_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_pipeline(pipeline, header), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the upload's pipeline file ({e.strerror or e}); nothing was sent") from None
    return path
