"""The `braze-connector` command: run, validate, emulator, schema. Only this module prints."""

from __future__ import annotations

import enum
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from connector.config import load_pipeline, pipeline_json_schema
from connector.errors import ConfigError, ConnectorError
from connector.report.document import EXIT_MEANINGS

if TYPE_CHECKING:
    from connector.report import RunReport

app = typer.Typer(
    name="braze-connector",
    help="Move CSV and Parquet tables into Braze: validate, preview, deliver, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


PipelineArg = Annotated[Path, typer.Argument(help="Pipeline YAML file.")]
ReportDirOpt = Annotated[
    Path | None, typer.Option("--report-dir", help="Report folder ({pipeline} and {run_id} are filled in).")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress display; only warnings in the log.")
]


# Exit codes 0/1 of validate and dry runs: nothing was sent, so "delivered" does not apply.
OFFLINE_MEANINGS = {
    0: "nothing sent; rejects under the threshold",
    1: "nothing sent; rejects over the threshold, or a table check failed",
}


class Mode(enum.StrEnum):
    auto = "auto"
    bulk = "bulk"
    sync = "sync"


def _fail(err: ConnectorError) -> NoReturn:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=err.exit_code)


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option(help="Write the JSON Schema here instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of pipeline files (for editor completion)."""
    text = json.dumps(pipeline_json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command()
def check(pipeline: PipelineArg) -> None:
    """Check a pipeline file's syntax only (no data is read)."""
    try:
        p = load_pipeline(pipeline)
    except ConnectorError as e:
        _fail(e)
    typer.echo(f"{pipeline}: ok ({len(p.streams)} stream(s))")


def _setup_logging(quiet: bool) -> None:
    if logging.getLogger().handlers:  # an embedding program (or pytest) configured logging: leave it
        return
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _summary(report: RunReport, paths: dict[str, Path]) -> list[str]:
    """The few lines a person reads after a run: counts, mode, top reject rules with an example, files."""
    r = report.rows
    head = (
        "validate"
        if report.mode_reason.startswith("validate only")
        else ("dry run" if report.dry_run else "run")
    )
    meaning = EXIT_MEANINGS.get(report.exit_code, "")
    if report.dry_run and report.exit_code in OFFLINE_MEANINGS:
        meaning = OFFLINE_MEANINGS[report.exit_code]
    lines = [
        f"{head} {report.pipeline_name} (run {report.run_id}): exit code {report.exit_code}, {meaning}",
        f"  mode: {report.mode} ({report.mode_reason})",
        f"  rows: read {r['read']:,}, delivered {r['delivered']:,}, rejected {r['rejected']:,}, "
        f"failed {r['failed']:,}, skipped {r['skipped']:,}",
    ]
    if report.retry:
        lines.append(f"  retry of {report.retry['failed_file']}: {report.retry['rows']:,} failed row(s) sent again")
    for w in report.warnings:
        if w.startswith("retry:"):
            lines.append(f"  warning: {w}")
    if report.skipped_by_reason:
        lines.append(
            "  skipped: " + ", ".join(f"{n:,} {why}" for why, n in report.skipped_by_reason.most_common())
        )
    if report.by_rule:
        lines.append("  top reject rules:")
        examples = {s["rule"]: s for s in reversed(report.sample)}
        for rule, n in report.by_rule.most_common(5):
            lines.append(f"    {rule}: {n:,}")
            ex = examples.get(rule)
            if ex is not None:
                where = f"{ex['file']}, row {ex['row']}" + (
                    f", column '{ex['column']}'" if ex.get("column") else ""
                )
                lines.append(f"      e.g. {where}: [{rule}] {ex['reason']}")
    for c in report.table_checks:
        if not c["success"]:
            lines.append(
                f"  table check failed ({c['action']}): {c['stream']}: {c['expectation']} {c['detail']}"
            )
    lines.append(f"  report: {paths.get('report_json')}")
    lines.append(f"          {paths.get('report_html')}")
    if r["rejected"]:
        lines.append(f"  rejects: {report.rejects.path}")
    if r["failed"]:
        lines.append(f"  failed: {report.failed.path}")
    if report.sample_files:
        lines.append(f"  sample request bodies: {report.sample_files[0].parent}")
    return lines


def _execute(pipeline: Path, *, mode: str | None, report_dir: Path | None, dry_run: bool, validate_only: bool,
             quiet: bool, retry_failed: Path | None = None, include_unknown: bool = False,
             full: bool = False, partition: str | None = None) -> None:  # fmt: skip
    _setup_logging(quiet)
    from connector.pipeline import run_pipeline
    from connector.progress import Progress

    try:
        p = load_pipeline(pipeline)
        retry = None
        if retry_failed is not None:
            from connector.readers import load_failed

            retry = load_failed(retry_failed, include_unknown=include_unknown)
        elif include_unknown:
            raise ConfigError("--include-unknown goes with --retry-failed")
        part = None
        if partition is not None:
            from connector.readers.partition import Partition

            part = Partition.parse(partition)
        progress = Progress.disabled() if quiet else Progress()
        report = run_pipeline(
            p,
            mode=mode,
            report_dir=report_dir,
            dry_run=dry_run,
            validate_only=validate_only,
            progress=progress,
            retry=retry,
            full=full,
            partition=part,
        )
    except ConnectorError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("interrupted: the report of the rows handled so far was written", err=True)
        raise typer.Exit(code=130) from None
    paths = {
        "report_json": report.report_dir / "report.json",
        "report_html": report.report_dir / "report.html",
    }
    for line in _summary(report, paths):
        typer.echo(line)
    if report.exit_code >= 2:
        for w in report.warnings:
            if w.startswith("run stopped"):
                typer.echo(f"error: {w}", err=True)
    raise typer.Exit(code=report.exit_code)


@app.command()
def run(
    pipeline: PipelineArg,
    mode: Annotated[Mode | None, typer.Option(help="Override write.mode: auto, bulk or sync.")] = None,
    report_dir: ReportDirOpt = None,
    dry_run: Annotated[
        bool, typer.Option(help="Build the exact request bodies, write a sample, send nothing.")
    ] = False,
    quiet: QuietOpt = False,
    retry_failed: Annotated[
        Path | None,
        typer.Option(help="Send again only the rows of an earlier run's failed.csv (or its report folder)."),
    ] = None,
    include_unknown: Annotated[
        bool,
        typer.Option(help="With --retry-failed: also resend rows whose outcome was unknown (at least once)."),
    ] = False,
    full: Annotated[
        bool, typer.Option(help="Delta streams: send every row even if unchanged (the state is refreshed).")
    ] = False,
    partition: Annotated[
        str | None,
        typer.Option(help="K/N: process only partition K of N of each stream (whole files, or rows by identifier)."),
    ] = None,
) -> None:
    """Read, validate, map and deliver a pipeline's streams to Braze; exit code 0/1/2/3 (see README)."""
    _execute(pipeline, mode=mode.value if mode else None, report_dir=report_dir, dry_run=dry_run,
             validate_only=False, quiet=quiet, retry_failed=retry_failed,
             include_unknown=include_unknown, full=full, partition=partition)  # fmt: skip


@app.command()
def validate(pipeline: PipelineArg, report_dir: ReportDirOpt = None, quiet: QuietOpt = False) -> None:
    """Read, validate and map every row without any network; report what would be rejected and why."""
    _execute(pipeline, mode=None, report_dir=report_dir, dry_run=False, validate_only=True, quiet=quiet)


def _register_emulator() -> None:
    # The emulator's options live beside the emulator (connector/emulator/cli.py).
    from connector.emulator.cli import emulator_command

    app.command("emulator")(emulator_command)


_register_emulator()

report_app = typer.Typer(help="Work with run reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("merge")
def report_merge(
    dirs: Annotated[list[Path], typer.Argument(help="Report folders of the partitions of one run.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the merged report (default: merged/ beside them).")] = None,
) -> None:
    """Combine the reports of a partitioned run (--partition K/N) into one report.json and report.html.

    Exit code: the merged run's (the worst partition's); 2 when the reports cannot be merged.
    """
    from connector.report.merge import write_merged

    try:
        doc, folder = write_merged(dirs, out)
    except ConnectorError as e:
        _fail(e)
    r, part = doc["rows"], doc["partition"]
    typer.echo(f"merged {len(part['k'])} of {part['n']} partition(s) of {doc['pipeline']}: exit code {doc['exit_code']}, "
               f"{doc['exit_meaning']}")  # fmt: skip
    typer.echo(f"  rows: read {r['read']:,}, delivered {r['delivered']:,}, rejected {r['rejected']:,}, "
               f"failed {r['failed']:,}, skipped {r['skipped']:,}; invariant {'holds' if doc['invariant_ok'] else 'BROKEN'}")  # fmt: skip
    for w in doc["warnings"][:1] if part["missing"] else []:
        typer.echo(f"  warning: {w}")
    typer.echo(f"  report: {folder / 'report.json'}")
    typer.echo(f"          {folder / 'report.html'}")
    raise typer.Exit(code=int(doc["exit_code"]))


def main() -> None:
    app()
