"""What the `braze-connector` command loads before it does anything: module sets, not times (BENCHMARKS.md,
"Time to the first request: ... (`startup3`)").

Every command pays for the CLI's own imports, and the test suite starts hundreds of CLI processes; a run
imports the pipeline models (pydantic, PyYAML) and the data libraries when it runs, `--help` and
`--version` never.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# What a run maps rows with, and the CSV reader: an unchanged delta re-run of a Parquet file (every row taken by
# the fast path) calls none of them (BENCHMARKS.md, `cmdstart`).
NOT_FOR_AN_UNCHANGED_RERUN = {"connector.mapping.objects", "connector.mapping.casts", "connector.mapping.fast",
                              "connector.mapping.encode", "connector.contract", "connector.contract.objects",
                              "connector.readers.csv_reader"}  # fmt: skip


def test_an_unchanged_delta_rerun_of_a_parquet_file_loads_neither_the_mapping_nor_the_csv_reader(
    emulator: Any, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 40
    pq.write_table(pa.table({"user_id": [f"u{i}" for i in range(n)], "plan": ["pro", "free"] * (n // 2),
                             "age": list(range(n))}), tmp_path / "users.parquet")  # fmt: skip
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(json.dumps({
        "name": "rerun_imports",
        "destination": {"url": emulator.url, "api_key_env": "BRAZE_API_KEY"},
        "write": {"mode": "bulk"},
        "report": {"dir": str(tmp_path / "reports" / "{run_id}")},
        "state": {"path": str(tmp_path / "state.sqlite")},
        "streams": [{"name": "users", "source": {"path": str(tmp_path / "users.parquet")}, "kind": "attributes",
                     "identifier": {"external_id": "user_id"}, "delta": True,
                     "attributes": [{"column": "plan"}, {"column": "age", "type": "integer"}]}],
    }), encoding="utf-8")  # fmt: skip
    env = {**os.environ, "BRAZE_API_KEY": emulator.api_key}
    probe = (
        "import atexit, sys\n"
        f"watch = {sorted(NOT_FOR_AN_UNCHANGED_RERUN)!r}\n"
        "atexit.register(lambda: sys.stderr.write('LOADED ' + repr(sorted(set(watch) & set(sys.modules))) + '\\n'))\n"
        f"sys.argv = ['braze-connector', 'run', {str(pipeline)!r}, '--quiet']\n"
        "from connector.__main__ import main\n"
        "main()\n"
    )
    loaded = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        line = next(ln for ln in res.stderr.splitlines() if ln.startswith("LOADED "))
        loaded.append(set(eval(line[len("LOADED ") :])))  # noqa: S307 (our own repr)
    reports = sorted((tmp_path / "reports").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    first, rerun = (json.loads(p.read_text(encoding="utf-8")) for p in reports)
    assert first["rows"]["delivered"] == n and loaded[0] >= NOT_FOR_AN_UNCHANGED_RERUN - {"connector.readers.csv_reader"}
    assert rerun["rows"]["skipped"] == n and rerun["requests"]["total"] == 0
    assert rerun["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": n}
    assert loaded[1] == set()
