"""Shared fixtures: a real Braze emulator on 127.0.0.1 (fresh per test) and a factory for custom ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.emulator import EmulatorServer


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of the repository's own pipelines append their history under tmp_path, not under reports/."""
    monkeypatch.setenv("BRAZE_CONNECTOR_HISTORY", str(tmp_path / "history.jsonl"))


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh in-process emulator accepting key "test-key"; has .url, .api_key, .stats(), .ledger(), .user()."""
    with EmulatorServer(api_keys=("test-key",)) as server:
        yield server


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators with custom EmulatorServer kwargs; all are stopped at teardown."""
    started: list[EmulatorServer] = []

    def make(**kwargs: Any) -> EmulatorServer:
        kwargs.setdefault("api_keys", ("test-key",))
        server = EmulatorServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def write_project(root: Path, *, name: str, csv: str, attributes: list[dict[str, Any]], **report: Any) -> Path:
    """root/pipelines/<name>.yaml: one attributes stream (external_id user_id) reading root/data/users.csv."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "users.csv").write_text(csv, encoding="utf-8")
    doc = {"name": name, "report": report,
           "streams": [{"name": "users", "source": {"path": "data/users.csv"}, "kind": "attributes",
                        "identifier": {"external_id": "user_id"}, "attributes": attributes}]}  # fmt: skip
    (root / "pipelines").mkdir(exist_ok=True)
    path = root / "pipelines" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """write_project() under tmp_path (or `root=`): a small project whose pipeline file it returns."""

    def make(root: Path | None = None, **kwargs: Any) -> Path:
        return write_project(root or tmp_path, **kwargs)

    return make
