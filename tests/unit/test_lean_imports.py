"""connector/lean_imports.py: pydantic's plugin scan skipped only when no plugin can exist, pyarrow.compute
imported with the same docstrings and signatures. Each import is checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib.machinery import PathFinder
from pathlib import Path

from connector.lean_imports import _may_have_pydantic_plugins

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *, path: list[Path] | None = None) -> str:
    """stdout of `code` in a fresh interpreter importing this tree's connector (and `path` first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in path or ()), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout


def _distribution(folder: Path, name: str, entry_points: str | None) -> None:
    meta = folder / f"{name}-1.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8")
    if entry_points is not None:
        (meta / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def test_the_check_agrees_with_importlib_metadata_on_this_environment() -> None:
    from importlib.metadata import entry_points

    assert _may_have_pydantic_plugins(sys.path, sys.meta_path) == bool(list(entry_points(group="pydantic")))


def test_a_distribution_declaring_a_pydantic_entry_point_is_found(tmp_path: Path) -> None:
    _distribution(tmp_path, "other", "[console_scripts]\nother = other:main\n")
    _distribution(tmp_path, "nometa", None)
    (tmp_path / "old.egg-info").write_text(
        "Name: old\n", encoding="utf-8"
    )  # an egg-info file: no entry points
    assert not _may_have_pydantic_plugins([str(tmp_path)], [PathFinder])
    _distribution(tmp_path, "plug", "[console_scripts]\nx = y:z\n\n[ pydantic ]\nplug = plug:plugin\n")
    assert _may_have_pydantic_plugins([str(tmp_path)], [PathFinder])


def test_what_the_check_cannot_read_counts_as_a_plugin(tmp_path: Path) -> None:
    archive = tmp_path / "libs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("mod.py", "")
    assert _may_have_pydantic_plugins([str(archive)], [PathFinder])  # distributions inside a zip
    assert not _may_have_pydantic_plugins(
        [str(tmp_path / "missing")], [PathFinder]
    )  # as importlib: none there

    class Finder:  # another finder importlib.metadata would ask for distributions
        def find_distributions(self, *a: object) -> list[object]:
            return []

    assert _may_have_pydantic_plugins([], [PathFinder, Finder()])


def test_pydantic_builds_models_without_importlib_metadata_when_no_plugin_exists() -> None:
    out = _python(
        "import sys\n"
        "from connector import lean_imports\n"
        "lean_imports.install()\n"
        "import pydantic\n"
        "class M(pydantic.BaseModel):\n"
        "    x: int\n"
        "assert M(x='3').x == 3\n"
        "import pydantic.plugin._loader as loader\n"
        "print('importlib.metadata' in sys.modules, list(loader.get_plugins()))\n"
        # any other name: pydantic's own module, loaded then
        "print(loader._plugins, 'importlib.metadata' in sys.modules)\n"
    )
    assert out.splitlines() == ["False []", "None True"]


def test_a_declared_pydantic_plugin_is_loaded_as_pydantic_would(tmp_path: Path) -> None:
    _distribution(tmp_path, "plug", "[pydantic]\nplug = plug:plugin\n")
    (tmp_path / "plug.py").write_text(
        "class Plugin:\n"
        "    def new_schema_validator(self, *a, **k):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n",
        encoding="utf-8",
    )
    out = _python(
        "from connector import lean_imports\n"
        "lean_imports.install()\n"
        "import pydantic\n"
        "class M(pydantic.BaseModel):\n"
        "    x: int\n"
        "import pydantic.plugin._loader as loader\n"
        "print([type(p).__name__ for p in loader.get_plugins()], loader.__file__.endswith('_loader.py'))\n",
        path=[tmp_path],
    )
    assert out.splitlines() == ["['Plugin'] True"]


_PC_DOCS = (
    "import json, inspect, textwrap\n"
    "{install}"
    "import pyarrow.compute as pc\n"
    "from pyarrow.vendored import docscrape\n"
    "names = sorted(n for n, f in vars(pc).items() if hasattr(f, '__arrow_compute_function__'))\n"
    "docs = {{n: [getattr(pc, n).__doc__, str(inspect.signature(getattr(pc, n)))] for n in names}}\n"
    "restored = [not hasattr(f, '__wrapped__') for f in (inspect.signature, textwrap.dedent,"
    " docscrape.NumpyDocString)]\n"
    "print(json.dumps([docs, restored]))\n"
)


def test_pyarrow_compute_has_the_same_docstrings_and_signatures() -> None:
    plain, _ = json.loads(_python(_PC_DOCS.format(install="")))
    lean, restored = json.loads(
        _python(_PC_DOCS.format(install="from connector import lean_imports\nlean_imports.install()\n"))
    )
    assert len(plain) > 200
    assert lean == plain
    assert restored == [True, True, True]  # the helpers are pyarrow's and Python's own again
