"""What the `braze-connector` command loads before it does anything: module sets, not times (BENCHMARKS.md,
"Time to the first request: ... (`startup3`)").

Every command pays for the CLI's own imports, and the test suite starts hundreds of CLI processes; a run
imports the pipeline models (pydantic, PyYAML) and the data libraries when it runs, `--help` and
`--version` never.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import typer

# Modules the CLI's import must not load: the pipeline models and their libraries, the data libraries, the
# run's stages, the HTTP libraries, the emulator's server, rich (its help screens import it), GX.
NOT_AT_IMPORT = {"pydantic", "yaml", "connector.config", "numpy", "pyarrow", "pandas", "asyncio", "tenacity",
                 "connector.pipeline", "connector.report", "connector.delivery", "connector.validation",
                 "connector.emulator.server", "connector.emulator.handlers", "aiohttp", "requests", "rich",
                 "great_expectations", "importlib.metadata"}  # fmt: skip
# ... nor `--version` and `--help`, which exit before a command runs (a command's --help: typer itself imports
# pydantic to describe the command's parameters).
NOT_FOR_HELP = NOT_AT_IMPORT - {"rich"}
NOT_FOR_COMMAND_HELP = NOT_FOR_HELP - {"pydantic", "importlib.metadata"}


def _loaded(code: str) -> set[str]:
    """The modules of NOT_AT_IMPORT loaded once `code` ran in a fresh interpreter (whatever it exits with)."""
    probe = (
        "import atexit, sys\n"
        f"watch = {sorted(NOT_AT_IMPORT)!r}\n"
        "atexit.register(lambda: sys.stderr.write('LOADED ' + repr(sorted(set(watch) & set(sys.modules))) + '\\n'))\n"
        + code
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("LOADED "))
    return set(eval(line[len("LOADED ") :]))  # noqa: S307 (our own repr)


def test_importing_the_cli_loads_neither_the_pipeline_models_nor_the_run() -> None:
    assert _loaded("import connector.cli\n") == set()


def test_help_and_version_load_neither_the_pipeline_models_nor_the_run() -> None:
    for args in (
        ["--version"],
        ["--help"],
        ["run", "--help"],
        ["emulator", "--help"],
        ["report", "merge", "--help"],
    ):
        code = f"sys.argv = ['braze-connector', *{args!r}]\nfrom connector.__main__ import main\nmain()\n"
        unwanted = NOT_FOR_HELP if len(args) == 1 else NOT_FOR_COMMAND_HELP
        assert _loaded(code) & unwanted == set(), args


def _callbacks(app: typer.Typer) -> list[object]:
    out: list[object] = [c.callback for c in app.registered_commands]
    if app.registered_callback is not None:
        out.append(app.registered_callback.callback)
    for group in app.registered_groups:
        assert group.typer_instance is not None
        out.extend(_callbacks(group.typer_instance))
    return out


def test_the_commands_annotations_are_objects_not_strings() -> None:
    """typer reads every command's signature at each start, twice per command; string annotations (`from
    __future__ import annotations` in cli.py, cli_options.py, upload_cli.py or emulator/cli.py) make it
    evaluate all of them again at every start, whichever command runs (~5 ms of CPU, measured)."""
    from connector.cli import app

    callbacks = _callbacks(app)
    assert len(callbacks) >= 9  # run, validate, check, schema, history, emulator, upload, report merge, _main
    for cb in callbacks:
        assert callable(cb)
        strings = [n for n, p in inspect.signature(cb).parameters.items() if isinstance(p.annotation, str)]
        assert strings == [], (cb, strings)


def test_the_commands_that_run_no_pipeline_turn_the_collector_back_on(tmp_path: Path) -> None:
    """`check` and `schema` import the pipeline models when they run, with the start-up pause still on
    (quiet_gc.py); the collector is on again once they have (MODEL_COMMANDS in cli.py)."""
    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "users.yaml"
    for args in (["check", str(pipeline)], ["schema", "--out", str(tmp_path / "schema.json")]):
        probe = (
            "import atexit, gc, sys\n"
            "atexit.register(lambda: sys.stderr.write(f'ENABLED {gc.isenabled()}\\n'))\n"
            f"sys.argv = ['braze-connector', *{args!r}]\n"
            "from connector.__main__ import main\n"
            "main()\n"
        )
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "ENABLED True" in res.stderr.splitlines(), (args, res.stderr)
