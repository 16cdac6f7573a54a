"""The README's pipeline-file reference is a valid pipeline (the models reject unknown keys), so it stays true."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from connector.config import Pipeline, Write

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_pipeline_example_validates() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README.md has no ```yaml block"
    pipeline = Pipeline.model_validate(yaml.safe_load(blocks[0]))
    assert pipeline.streams and pipeline.streams[0].kind == "attributes"
    # every write option is shown in the reference
    shown = set(yaml.safe_load(blocks[0])["write"])
    assert set(Write.model_fields) <= shown, sorted(set(Write.model_fields) - shown)


def test_the_readme_python_examples_compile_and_use_real_cli_options() -> None:
    """The Airflow example is not run here (no Airflow), but it is valid Python and its commands exist."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no ```python block"
    for block in blocks:
        compile(block, "README.md", "exec")
    from typer.testing import CliRunner

    from connector.cli import app

    assert "--partition" in CliRunner().invoke(app, ["run", "--help"]).output
    assert "--out" in CliRunner().invoke(app, ["report", "merge", "--help"]).output
