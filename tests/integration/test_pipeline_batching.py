"""write.batching: combined50, the cap of MAU contracts (issue 11, point 6), against an emulator enforcing it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.emulator import EmulatorServer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("batching", ["combined50", "combined"])
def test_combined50_keeps_every_request_within_an_mau_contracts_cap(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path, batching: str
) -> None:
    em = emulator_factory(batching="combined50")  # Braze answers 400 Max Input Length Exceeded over 50
    (tmp_path / "u.csv").write_text("id,plan\n" + "".join(f"u{i},p{i}\n" for i in range(230)), encoding="utf-8")
    doc = {"name": "t", "write": {"mode": "bulk", "batching": batching},
           "streams": [{"name": "u", "source": {"path": "u.csv"}, "kind": "attributes",
                        "identifier": {"external_id": "id"}, "attributes": [{"column": "plan"}]}]}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), report_dir=tmp_path / "out", env=env)
    out = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    assert out["rows"]["delivered"] == 230  # either way no row is lost: a refused request is split
    sizes = [len(e["applied"]) for e in em.ledger() if e["applied"]]
    statuses = em.stats()["requests"]["/users/track"]
    if batching == "combined50":
        assert statuses == {"201": 5} and max(sizes) == 50  # 50 + 50 + 50 + 50 + 30
    else:
        assert statuses["400"] == 3  # 75 + 75 + 75 refused and halved (+ 5 taken): what combined50 avoids
