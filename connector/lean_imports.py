"""Two third-party imports on the way to a run's first request, made cheaper (installed by __main__.main).

A meta path finder that changes how two modules are imported, never what they hold:

- `pydantic.plugin._loader`: pydantic imports it when it builds its first model, and it imports
  `importlib.metadata` (email, zipfile, csv, importlib.resources) to scan every installed distribution's
  entry points for pydantic plugins: ~20 ms of CPU here after the CLI's other imports. When no distribution on
  `sys.path` declares a `[pydantic]` entry point group (`_may_have_pydantic_plugins`, which answers
  "maybe" for anything it cannot read as plain folders), the finder gives pydantic a stand-in whose
  `get_plugins()` returns what the real one would, no plugins, and which loads the real module for any
  other name asked of it. Otherwise pydantic gets its own module.
- `pyarrow.compute`: at import it writes a docstring and a signature for each of its ~290 functions,
  parsing the docstring of each function's options class again for every function that takes it (109
  parses of 57 texts) and building the options class's signature and the same dedented texts every time
  (its import is ~45 ms of CPU here). While it is imported, those three pure functions answer from a cache:
  the same docstrings and signatures, ~15 ms sooner. They are restored when the import ends.

BENCHMARKS.md, "Time to the first request", has the figures. Only the command installs this (a program
importing the connector keeps Python's own imports); it changes nothing once both modules are imported.
"""

from __future__ import annotations

import functools
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any

PYDANTIC_LOADER = "pydantic.plugin._loader"
PYARROW_COMPUTE = "pyarrow.compute"


def install() -> None:
    """Put the finder first on sys.meta_path (once); nothing is imported now."""
    if not any(isinstance(f, LeanFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LeanFinder())


class LeanFinder:
    """Finds the two modules above through the finders after it, and changes how they are loaded."""

    def __init__(self) -> None:
        self._finding: set[str] = set()

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != PYDANTIC_LOADER and name != PYARROW_COMPUTE:
            return None
        spec = self._real_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        if name == PYARROW_COMPUTE:
            real = spec.loader.exec_module

            def exec_module(module: types.ModuleType) -> None:
                with _cached_doc_helpers():
                    real(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's loader only
            return spec
        if _may_have_pydantic_plugins(sys.path, sys.meta_path):
            return spec
        # (a loader by protocol: importlib.abc.Loader would import importlib.resources, what this saves)
        return ModuleSpec(name, _NoPluginsLoader(spec), origin=spec.origin)  # type: ignore[arg-type]

    def _real_spec(
        self, name: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> ModuleSpec | None:
        if name in self._finding:  # another finder that looks through sys.meta_path asked us back
            return None
        self._finding.add(name)
        try:
            for finder in sys.meta_path:
                find = None if finder is self else getattr(finder, "find_spec", None)
                spec = find(name, path, target) if find is not None else None
                if spec is not None:
                    return spec
            return None
        finally:
            self._finding.discard(name)


# ---- pydantic's plugin loader -----------------------------------------------------------------------------


class _NoPluginsLoader:
    """Makes the stand-in for pydantic.plugin._loader; `real` is the spec of pydantic's own module."""

    def __init__(self, real: ModuleSpec) -> None:
        self.real = real

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        real_spec = self.real
        loaded: list[types.ModuleType] = []

        def real_module() -> types.ModuleType:
            if not loaded:
                from importlib.util import module_from_spec

                real = module_from_spec(real_spec)
                assert real_spec.loader is not None
                real_spec.loader.exec_module(real)
                loaded.append(real)
            return loaded[0]

        def get_plugins() -> tuple[()]:
            """No distribution declares a pydantic plugin: the real get_plugins() would load none."""
            return ()

        def module_getattr(attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return getattr(real_module(), attr)  # anything but get_plugins: pydantic's own module

        module.get_plugins = get_plugins  # type: ignore[attr-defined]
        module.PYDANTIC_ENTRY_POINT_GROUP = "pydantic"  # type: ignore[attr-defined]
        module.__getattr__ = module_getattr  # type: ignore[method-assign]


def _may_have_pydantic_plugins(path: Sequence[object], meta_path: Sequence[object]) -> bool:
    """False only when no distribution importlib.metadata would find declares a `pydantic` entry point group.

    importlib.metadata finds distributions through the meta path finders that have `find_distributions`
    (importlib's PathFinder: the `*.dist-info` and `*.egg-info` folders of each `sys.path` entry). Any
    other such finder, a path entry that is not a folder (a zip, an egg) or a folder that cannot be read
    answers True (maybe), and pydantic scans as it always did.
    """
    for finder in meta_path:
        if getattr(finder, "find_distributions", None) is not None and finder is not PathFinder:
            return True
    for entry in path:
        if not isinstance(entry, str):
            return True
        folder = entry or "."
        if not os.path.isdir(folder):
            if os.path.exists(folder):
                return True  # a zip or egg file: importlib.metadata reads distributions inside it
            continue
        try:
            if any(_declares_pydantic(meta) for meta in _metadata_folders(folder)):
                return True
        except OSError:
            return True
    return False


def _metadata_folders(folder: str) -> Iterator[str]:
    with os.scandir(folder) as entries:
        for e in entries:
            low = e.name.lower()
            if low.endswith((".dist-info", ".egg-info")):
                yield e.path


def _declares_pydantic(meta: str) -> bool:
    """Whether the distribution's entry_points.txt has a [pydantic] section (an egg-info file has none)."""
    if not os.path.isdir(meta):
        return False
    try:
        with open(os.path.join(meta, "entry_points.txt"), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    return any(
        line.strip().startswith("[") and line.strip()[1:-1].strip() == "pydantic"
        for line in text.splitlines()
    )


# ---- pyarrow.compute --------------------------------------------------------------------------------------


@contextmanager
def _cached_doc_helpers() -> Iterator[None]:
    """docscrape.NumpyDocString, textwrap.dedent and inspect.signature answering from a cache meanwhile.

    pyarrow.compute calls them with the same arguments many times at import (`_wrap_function` for each
    function); each result is used read-only (a parsed docstring, a str, an immutable Signature).
    """
    import inspect
    import textwrap

    try:
        from pyarrow.vendored import docscrape  # imported by pyarrow.compute anyway
    except ImportError:  # another pyarrow: its import as it is
        yield
        return
    saved = [(docscrape, "NumpyDocString"), (textwrap, "dedent"), (inspect, "signature")]
    originals = [getattr(module, attr) for module, attr in saved]
    try:
        for (module, attr), real in zip(saved, originals, strict=True):
            setattr(module, attr, _memo(real))
        yield
    finally:
        for (module, attr), real in zip(saved, originals, strict=True):
            setattr(module, attr, real)


def _memo(real: Callable[..., Any]) -> Callable[..., Any]:
    """`real` with its results kept per (hashable) arguments; unhashable ones are passed through."""
    cached = functools.lru_cache(maxsize=512)(real)

    @functools.wraps(real)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return cached(*args, **kwargs)
        except TypeError:
            return real(*args, **kwargs)

    return call
