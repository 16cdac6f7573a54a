"""The layout holds: no import cycles among connector's modules, one folder per stage, each documented.

Every import counts, including imports inside functions and under TYPE_CHECKING: a cycle that only the
type checker sees still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "connector"
STAGES = ("config", "readers", "validation", "mapping", "contract", "delta", "delivery", "report", "emulator")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The connector modules `name` imports (a `from X import Y` names X.Y when Y is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "connector")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "connector":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    out.discard(name)
    return {m for m in out if m in known}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_a_folder_whose_init_states_its_interface(stage: str) -> None:
    init = ROOT / stage / "__init__.py"
    assert init.is_file(), f"connector/{stage}/ should be a package"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc) > 80, f"connector/{stage}/__init__.py should state the stage's interface"


def test_no_delivery_or_report_modules_left_at_the_top() -> None:
    top = {p.stem for p in ROOT.glob("*.py")}
    stray = top & {"writer", "batching", "ratelimit", "client", "transport", "transport_process", "mapper",
                   "pipeline_setup", "report_html", "delta"}  # fmt: skip
    assert stray == set()


def test_only_the_pipeline_knows_the_stage_order() -> None:
    """No stage imports the pipeline modules (pipeline.py sets a run up, stages.py runs its stages) or the CLI;
    stages.py does not import pipeline.py."""
    known = modules()
    for name, path in known.items():
        if name in ("connector", "connector.cli", "connector.__main__", "connector.pipeline", "connector.stages"):
            continue
        assert not imports_of(name, path, known) & {"connector.pipeline", "connector.cli"}, name
    assert "connector.pipeline" not in imports_of("connector.stages", known["connector.stages"], known)
