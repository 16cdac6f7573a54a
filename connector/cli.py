"""The `braze-connector` command: run, validate, emulator, schema. Only this module prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from connector.config import load_pipeline, pipeline_json_schema
from connector.errors import ConnectorError

app = typer.Typer(
    name="braze-connector",
    help="Move CSV and Parquet tables into Braze: validate, preview, deliver, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(err: ConnectorError) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=err.exit_code)


@app.command()
def schema(out: Path | None = typer.Option(None, help="Write the JSON Schema here instead of stdout.")) -> None:
    """Print the JSON Schema of pipeline files (for editor completion)."""
    text = json.dumps(pipeline_json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command()
def check(pipeline: Path = typer.Argument(..., help="Pipeline YAML file.")) -> None:
    """Check a pipeline file's syntax only (no data is read)."""
    try:
        p = load_pipeline(pipeline)
    except ConnectorError as e:
        _fail(e)
    typer.echo(f"{pipeline}: ok ({len(p.streams)} stream(s))")


def _register_emulator() -> None:
    # The emulator's options live beside the emulator (connector/emulator/cli.py).
    from connector.emulator.cli import emulator_command

    app.command("emulator")(emulator_command)


_register_emulator()


def main() -> None:
    app()
