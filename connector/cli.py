"""The `braze-connector` command: run, validate, emulator, schema. Only this module prints."""

# No `from __future__ import annotations` here: typer reads every command's signature at each start (twice per
# command), and string annotations make it evaluate them all again (~5 ms of every command's CPU). Names
# imported only for type checking are quoted instead.
# ruff: noqa: E402 (the collector is paused before the imports below)
from connector.quiet_gc import end_startup_pause, pause_for_startup

# typer (and, for the commands that read a pipeline file, pydantic and the pipeline models, imported when the
# command runs: --help, --version, emulator and report merge need none of them) import hundreds of modules
# whose objects all live: the cyclic collector is off while they import rather than walking them again and
# again. The command (__main__.main) paused it already and keeps it paused into a run; another importer (a
# test, a program) gets it back at the end.
_PAUSED_HERE = pause_for_startup()

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

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
from connector.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from rich.console import Console

    from connector.config import Pipeline
    from connector.delivery.resume import ResumeSet
    from connector.report import RunReport

app = typer.Typer(
    name="braze-connector",
    help="Move CSV, Parquet and SQL tables into Braze: validate, preview, deliver, report.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


PipelineArg = Annotated[Path, typer.Argument(help="Pipeline YAML file.")]
# Exit codes 0/1 of validate and dry runs: nothing was sent, so "delivered" does not apply.
OFFLINE_MEANINGS = {
    0: "nothing sent; rejects under the threshold",
    1: "nothing sent; rejects over the threshold, or a table check failed",
}


# Warnings the summary repeats (the others are in the report): retry notes, empty sources, a stop, alerts, dates
# read as day/month or month/day with nothing to tell which (mapping/dates.py), removed users (mirror mode), a
# delta state that could not be written (delta/unrecorded.py).
SUMMARY_WARNINGS = ("retry:", "empty source:", "stopped:", "lock file", "ambiguous dates:", "alert ",
                    "removed users:", "delta state", "incremental state", "the last run of this pipeline")


def _version(value: bool) -> None:
    if value:
        from connector.version import __version__

        typer.echo(f"braze-connector {__version__}")
        raise typer.Exit()


# The commands that run a pipeline (through _execute): the collector's start-up pause goes on into them.
RUN_COMMANDS = ("run", "validate", "upload")
# Those that read a pipeline file or reports without running a pipeline: the pause goes on until they have
# imported the pipeline models (pydantic), which they do when they run; then the collector is on as usual.
MODEL_COMMANDS = ("check", "history", "schema", "report")


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Move CSV, Parquet and SQL tables into Braze: validate, preview, deliver, report."""
    if ctx.invoked_subcommand not in RUN_COMMANDS + MODEL_COMMANDS:
        end_startup_pause()  # the emulator: the collector as usual


def _fail(err: ConnectorError) -> NoReturn:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=err.exit_code)


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option(help="Write the JSON Schema here instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of pipeline files (for editor completion)."""
    from connector.config import pipeline_json_schema

    end_startup_pause()  # (MODEL_COMMANDS)
    text = json.dumps(pipeline_json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command()
def check(pipeline: PipelineArg) -> None:
    """Check a pipeline file's syntax only (no data is read)."""
    from connector.config import load_pipeline

    end_startup_pause()  # (MODEL_COMMANDS)
    try:
        p = load_pipeline(pipeline)
    except ConnectorError as e:
        _fail(e)
    typer.echo(f"{pipeline}: ok ({len(p.streams)} stream(s))")


def _setup_logging(quiet: bool, level: str | None, fmt: str) -> "Console | None":
    """Logging for the command line; the Console (on a terminal) is shared with the progress display."""
    from connector.logs import setup_logging

    ours = [h for h in logging.getLogger().handlers if not getattr(h, "_braze_connector", False)]
    if ours:  # an embedding program (or pytest) configured logging: leave it
        return None
    return setup_logging(level or ("warning" if quiet else "info"), fmt)


def _summary(report: "RunReport", paths: dict[str, Path]) -> list[str]:
    """The few lines a person reads after a run: counts, mode, top reject rules with an example, files."""
    from connector.report.document import removed_outcome, report_meaning

    r = report.rows
    head = (
        "validate"
        if report.mode_reason.startswith("validate only")
        else ("dry run" if report.dry_run else "run")
    )
    meaning = report_meaning(report)
    if report.dry_run and report.exit_code in OFFLINE_MEANINGS:
        meaning = OFFLINE_MEANINGS[report.exit_code]
    lines = [
        f"{head} {report.pipeline_name} (run {report.run_id}): exit code {report.exit_code}, {meaning}",
        f"  mode: {report.mode} ({report.mode_reason})",
        f"  rows: read {r['read']:,}, delivered {r['delivered']:,}, rejected {r['rejected']:,}, "
        f"failed {r['failed']:,}, skipped {r['skipped']:,}",
    ]
    if report.retry:
        lines.append(f"  retry of {report.retry['failed_file']}: {report.retry['rows']:,} row(s) listed there (failed or not sent) sent")
    lines.extend(_unknown_lines(report))
    lines.extend(_resume_lines(report))
    for w in report.warnings:
        if w.startswith(SUMMARY_WARNINGS):
            lines.append(f"  warning: {w}")
    for name, m in (report.removed or {}).items():
        if m.get("decided"):
            lines.append(f"  removed users ({name}, {m['known']:,} known): {removed_outcome(m, dry_run=report.dry_run)}")
    if report.skipped_by_reason:
        listed = f"; {report.not_sent:,} of them not sent, listed in failed.csv as not_sent" if report.not_sent else ""
        lines.append(
            "  skipped: " + ", ".join(f"{n:,} {why}" for why, n in report.skipped_by_reason.most_common()) + listed
        )
    for name, st in report.streams.items():
        if "delta" in st:
            d = st["delta"]
            full = " (--full: known users are sent whole and counted as changed)" if (report.delta or {}).get("full") else ""
            lines.append(f"  delta {name}: {d['added']:,} added, {d['changed']:,} changed, {d['unchanged']:,} unchanged"
                         + full)
            if d.get("repeated"):
                lines.append(f"    {d['repeated']:,} row(s) repeat the user of an earlier row in their chunk: a user whose "
                             "rows differ is sent again on every run (one row per user avoids it)")
    if report.by_rule:
        lines.append("  top reject rules:")
        examples = {s["rule"]: s for s in reversed(report.sample)}
        for rule, n in report.by_rule.most_common(5):
            lines.append(f"    {rule}: {n:,}")
            ex = examples.get(rule)
            if ex is not None:
                where = f"{_shown(ex['file'])}, row {ex['row']}" + (
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
    if report.rejects.file is not None:
        lines.append(f"  rejects: {report.rejects.file}")
    lines.extend(_failed_lines(report))
    if any(m.get("file") for m in (report.removed or {}).values()):
        lines.append(f"  removed: {report.report_dir / 'removed.csv'}")
    if report.sample_files:
        lines.append(f"  sample request bodies: {report.sample_files[0].parent}")
    return lines


def _refuse_retry_of_unfinished(p: "Pipeline", given: Path) -> None:
    """--retry-failed of a run that never wrote its report (killed: kill -9, a crash, a power cut) has no
    failed file to read; its journal knows every row's outcome, and --resume finishes it. Say so."""
    from connector.delivery.unfinished import was_killed
    from connector.report.paths import resume_command

    run_dir = given if given.is_dir() else given.parent
    if was_killed(run_dir):
        raise ConfigError(
            f"--retry-failed {given}: that run did not finish (killed before it wrote its report, so it has no "
            f"failed file); its journal knows every row's outcome: finish it with {resume_command(p, run_dir)}"
        )


def _shown(file: str) -> str:
    """A source file as the summary shows it: relative to the working directory when it lies inside it (the
    reports keep the absolute path, which --retry-failed reads back); SQL sources and other places as given."""
    if not os.path.isabs(file):
        return file
    rel = os.path.relpath(file)
    return file if rel.startswith("..") else rel


def _unknown_lines(report: "RunReport") -> list[str]:
    """What a person must do about rows whose outcome is unknown (they may or may not be in Braze)."""
    n = report.unknown
    if not n:
        return []
    if report.reads_sql:
        from connector.readers.failed import SQL_RUN_AGAIN

        how = f"a new run sends them again (events, purchases and inc may count twice): {SQL_RUN_AGAIN}"
    else:
        how = (f"then send them again with {report.rerun} --retry-failed {report.failed.path} --include-unknown (events, purchases "
               "and inc may count twice; a --resume keeps their outcome and does not resend them)")  # fmt: skip
    return [
        f"  unknown: {n:,} failed row(s) may or may not have been applied by Braze (sent, but no answer came: "
        "the connection dropped, or a stopped run stopped waiting)",
        f"    check a few in Braze; {how}",
    ]


def _failed_lines(report: "RunReport") -> list[str]:
    """Where the rows not delivered are listed; for a run reading SQL, that the list is to read, not to resend."""
    file = report.failed.file
    if file is None:
        return []
    path = str(file)
    if report.not_sent:  # a stop or an abort: the file lists skipped rows too
        path += f" ({report.rows['failed']:,} failed, {report.not_sent:,} skipped as not_sent)"
    if not report.reads_sql:
        return [f"  failed: {path}"]
    from connector.readers.failed import SQL_RUN_AGAIN

    return [f"  failed: {path} (a list to read: no command resends rows of an SQL source from it; {SQL_RUN_AGAIN})"]


def _resume_lines(report: "RunReport") -> list[str]:
    """What a resumed run carried over, and the rows Braze may have applied twice (delivering runs)."""
    lines = []
    if report.resume:
        c = report.resume["carried"]
        lines.append(f"  resumed (attempt {report.resume['attempt']}): outcomes carried over: delivered "
                     f"{c['delivered']:,}, rejected {c['rejected']:,}, failed {c['failed']:,}, unknown "
                     f"{c['unknown']:,}; {report.resume['resent_unanswered']:,} unanswered row(s) sent again")  # fmt: skip
    if not report.dry_run:
        where = f" (listed in {report.duplicated.path})" if report.duplicated is not None else ""
        lines.append(f"  possibly duplicated: {report.possibly_duplicated:,} row(s) Braze may have applied more "
                     f"than once{where}")  # fmt: skip
    return lines


def _resume_set(
    pipeline: "Pipeline", resume: bool, run_dir: Path | None, report_dir: Path | None
) -> "ResumeSet | None":
    """The run to resume: RUN_DIR, else the pipeline's latest run (None without --resume)."""
    if not resume:
        if run_dir is not None:
            raise ConfigError(f"unexpected argument {run_dir}: a run folder goes with --resume")
        return None
    from connector.delivery.resume import ResumeSet, find_run_dir

    return ResumeSet(run_dir if run_dir is not None else find_run_dir(pipeline, report_dir))


def _execute(pipeline: "Path | Callable[[], Pipeline]", *, mode: str | None, report_dir: Path | None, dry_run: bool, validate_only: bool,
             quiet: bool, retry_failed: Path | None = None, include_unknown: bool = False,
             full: bool = False, log_level: str | None = None, log_format: str = "text",
             overwrite: bool = False, resume: bool = False, run_dir: Path | None = None,
             partition: str | None = None, allow_deletes: int | None = None, ignore_unfinished: bool = False,
             after: "Callable[[RunReport], list[str]] | None" = None,
             on_report_dir: "Callable[[Path], None] | None" = None) -> None:  # fmt: skip
    """Run a pipeline file (or the pipeline a function builds: upload) and print its summary; `after`
    gives the summary's last lines (upload: the pipeline file it wrote); `on_report_dir` is called with the
    run's report folder before it reads a row (upload: writes its pipeline file there)."""
    console = _setup_logging(quiet, log_level, log_format)
    from connector.config import load_pipeline
    from connector.delivery import spare

    try:
        pause_for_startup()  # until the run streams rows (quiet_gc): the imports below, the run's set-up
        p = load_pipeline(pipeline) if isinstance(pipeline, Path) else pipeline()
        # A run that will send through the HTTP child starts it now: its start-up overlaps the imports below.
        spare.start(p, mode, offline=dry_run or validate_only, resume=resume)
        from connector.pipeline import run_pipeline
        from connector.progress import Progress
        from connector.stop import StopToken, handle_signals

        retry = None
        if retry_failed is not None:
            from connector.readers import load_failed

            _refuse_retry_of_unfinished(p, retry_failed)
            retry = load_failed(retry_failed, include_unknown=include_unknown)
            if not (dry_run or validate_only):
                from datetime import UTC, datetime

                from connector.delivery.resume import mark_retried

                stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
                mark_retried(retry.failed_file, f"started {stamp}, pid {os.getpid()}")
        elif include_unknown:
            raise ConfigError("--include-unknown goes with --retry-failed")
        part = None
        if partition is not None:
            from connector.readers.partition import Partition

            part = Partition.parse(partition)
        resumed = _resume_set(p, resume, run_dir, report_dir)
        progress = Progress.disabled() if quiet else Progress(console=console)
        stop = StopToken()
        with handle_signals(stop):  # SIGINT/SIGTERM: stop gracefully, the second at once (exit 4, 130/143)
            report = run_pipeline(
                p,
                mode=mode,
                report_dir=report_dir,
                dry_run=dry_run,
                validate_only=validate_only,
                progress=progress,
                retry=retry,
                full=full,
                overwrite=overwrite,
                resume=resumed,
                partition=part,
                allow_deletes=allow_deletes,
                ignore_unfinished=ignore_unfinished,
                on_report_dir=on_report_dir,
                stop=stop,
                raise_on_failure=False,
            )
    except ConnectorError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("interrupted: the report of the rows handled so far was written", err=True)
        raise typer.Exit(code=130) from None
    finally:
        end_startup_pause()  # a run refused or failed before it streamed
        spare.discard()  # one the run never took (refused, failed or stopped before its client)
    paths = {
        "report_json": report.report_dir / "report.json",
        "report_html": report.report_dir / "report.html",
    }
    try:
        for line in _summary(report, paths) + (after(report) if after is not None else []):
            typer.echo(line)
    except BrokenPipeError:  # `... | head`: the reader left; the run's outcome is still the exit code
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if report.exit_code >= 2:
        for w in report.warnings:
            if w.startswith("run stopped"):
                typer.echo(f"error: {w}", err=True)
    raise typer.Exit(code=report.exit_code)


@app.command()
def run(
    pipeline: PipelineArg,
    run_dir: Annotated[
        Path | None, typer.Argument(help="With --resume: the run's report folder (default: the latest run).")
    ] = None,
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
    overwrite: OverwriteOpt = False,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = LogFormat.text,
    resume: Annotated[
        bool,
        typer.Option(help="Continue an interrupted run from its journal: send only what it did not deliver."),
    ] = False,
    partition: Annotated[
        str | None,
        typer.Option(help="K/N: process only partition K of N of each stream (whole files, or rows by identifier)."),
    ] = None,
    allow_deletes: Annotated[
        int | None,
        typer.Option(min=0, help="Mirror streams (on_removed: delete): confirm deleting up to N users per stream, "
                     "past max_delete_fraction."),
    ] = None,
    ignore_unfinished: Annotated[
        bool,
        typer.Option(help="Run even though the last run was killed or stopped and this one would send its "
                     "events/purchases again (they count twice); --resume finishes that run instead."),
    ] = False,
) -> None:
    """Read, validate, map and deliver a pipeline's streams to Braze; exit code 0/1/2/3/4, 130/143 after a second signal (see README).

    `run PIPELINE --resume [RUN_DIR]` continues an interrupted run (its report folder; default the latest).
    """
    _execute(pipeline, mode=mode.value if mode else None, report_dir=report_dir, dry_run=dry_run,
             validate_only=False, quiet=quiet, retry_failed=retry_failed,
             include_unknown=include_unknown, full=full, overwrite=overwrite, resume=resume,
             run_dir=run_dir, partition=partition, allow_deletes=allow_deletes,
             ignore_unfinished=ignore_unfinished, log_level=log_level.value if log_level else None, log_format=log_format.value)  # fmt: skip


@app.command()
def validate(pipeline: PipelineArg, report_dir: ReportDirOpt = None, quiet: QuietOpt = False,
             overwrite: OverwriteOpt = False, log_level: LogLevelOpt = None,
             log_format: LogFormatOpt = LogFormat.text) -> None:  # fmt: skip
    """Read, validate and map every row without any network; report what would be rejected and why."""
    _execute(pipeline, mode=None, report_dir=report_dir, dry_run=False, validate_only=True, quiet=quiet,
             overwrite=overwrite, log_level=log_level.value if log_level else None,
             log_format=log_format.value)  # fmt: skip


_UNSET = "unset-variable.invalid"


def _load_for_history(pipeline: Path) -> "Pipeline":
    """The pipeline for `history`, which needs only its name and report settings: a ${VAR} the environment lacks
    elsewhere (a destination URL, a source's connection) is not needed; one in those settings still is."""
    from connector.config import load_pipeline

    try:
        return load_pipeline(pipeline)
    except ConfigError as first:
        if "environment variable" not in str(first):
            raise
        try:
            p = load_pipeline(pipeline, missing=lambda name: f"http://{_UNSET}/{name}")
        except ConfigError:
            raise first from None
        if _UNSET in p.name or _UNSET in str(p.report.history) or _UNSET in str(p.report.dir):
            raise first from None
        return p


@app.command()
def history(
    pipeline: PipelineArg,
    last: Annotated[int, typer.Option(min=1, help="How many runs to list (the most recent).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run instead of a table.")] = False,
) -> None:
    """List a pipeline's last runs (report.history): when, kind, partition, exit code, rows, 429s, duration;
    a run with no end line is running, or interrupted once its process is gone (kill -9)."""
    from connector.report.history import history_lines, history_path, read_history

    end_startup_pause()  # (MODEL_COMMANDS)

    try:
        path = history_path(_load_for_history(pipeline))
    except ConnectorError as e:
        _fail(e)
    if path is None:
        _fail(ConfigError(f"{pipeline}: report.history is null: this pipeline keeps no run history"))
    entries = read_history(path, last)
    if not entries:
        typer.echo(f"no runs recorded yet in {path}")
        return
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry, sort_keys=True))
        return
    for line in history_lines(entries):
        typer.echo(line)
    typer.echo(f"({len(entries)} run(s) from {path}; reports under {Path(entries[-1]['report_dir']).parent})")


def _register_emulator() -> None:
    # The emulator's options live beside the emulator (connector/emulator/cli.py).
    from connector.emulator.cli import emulator_command

    app.command("emulator")(emulator_command)


_register_emulator()


def _register_upload() -> None:
    # upload's flags live beside its command (connector/upload_cli.py); it runs through _execute like `run`.
    from connector.upload_cli import upload_command

    app.command("upload")(upload_command(_execute))


_register_upload()

report_app = typer.Typer(help="Work with run reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("merge")
def report_merge(
    dirs: Annotated[list[Path], typer.Argument(help="Report folders of the partitions of one run.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the merged report (default: merged/ beside them).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a merged report already in --out.")] = False,
) -> None:
    """Combine the reports of a partitioned run (--partition K/N) into one report.json and report.html.

    Exit code: the merged run's (the worst partition's); 2 when the reports cannot be merged.
    """
    from connector.report.merge import write_merged

    end_startup_pause()  # (MODEL_COMMANDS)

    try:
        doc, folder = write_merged(dirs, out, overwrite=overwrite)
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
    # numpy (imported with pyarrow) starts one OpenBLAS thread per core at import, before the first request;
    # nothing here does linear algebra, so one is enough (an explicit setting wins).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    app(prog_name="braze-connector")


if _PAUSED_HERE:  # the imports above are done (see the top of this module)
    end_startup_pause()
