"""An empty configured identifier is always `identifier.missing`, whatever else is mapped (issue 11, point 1).

Without it, a row with an empty `user_id` but a mapped `email` (or `phone`) attribute went out keyed by that
address, and Braze wrote it into whichever profile had it (or created a stray email-only profile).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.emulator import EmulatorServer

pytestmark = pytest.mark.timeout(60)

ROWS = [
    {"user_id": "u1", "email": "one@example.com", "phone": "+33612345601", "first_name": "Ann"},
    {"user_id": None, "email": "two@example.com", "phone": "+33612345602", "first_name": "Bob"},
    {"user_id": "u3", "email": "three@example.com", "phone": "+33612345603", "first_name": "Cid"},
]


def _write(tmp_path: Path, fmt: str) -> str:
    (tmp_path / "data").mkdir(exist_ok=True)
    if fmt == "csv":
        path = tmp_path / "data" / "users.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
            w.writeheader()
            w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in ROWS)
    else:
        path = tmp_path / "data" / "users.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return f"data/{path.name}"


def _pipeline(tmp_path: Path, source: str, lookup: str) -> Any:
    doc = {
        "name": "ids",
        "write": {"mode": "bulk"},
        "report": {"max_reject_fraction": 1.0},
        "streams": [
            {
                "name": "users",
                "source": {"path": source},
                "kind": "attributes",
                "identifier": {"external_id": "user_id"},  # no suite: the contract alone must catch it
                "attributes": [{"column": lookup}, {"column": "first_name"}],
            }
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_pipeline(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("lookup", ["email", "phone"])
def test_an_empty_external_id_is_rejected_even_with_email_or_phone_mapped(
    emulator: EmulatorServer, tmp_path: Path, fmt: str, lookup: str
) -> None:
    pipeline = _pipeline(tmp_path, _write(tmp_path, fmt), lookup)
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(pipeline, report_dir=tmp_path / "out", env=env)
    doc = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    assert doc["rows"] == {**doc["rows"], "read": 3, "delivered": 2, "rejected": 1}
    assert doc["rejects"]["by_rule"] == {"identifier.missing": 1}
    rejects = report.rejects.path
    suffix = rejects.suffix
    assert suffix == (".parquet" if fmt == "parquet" else ".csv")
    rows = (
        pq.read_table(rejects).to_pylist()
        if fmt == "parquet"
        else list(csv.DictReader(open(rejects, encoding="utf-8", newline="")))
    )
    assert [(r["_rule"], r["_column"], r["first_name"]) for r in rows] == [
        ("identifier.missing", "user_id", "Bob")
    ]
    # Nothing reached Braze keyed by the address: no profile has Bob's email or phone.
    value = ROWS[1][lookup]
    assert emulator.user(lookup, str(value)) is None
    sent = [a["identifier"] for e in emulator.ledger() for a in e["applied"]]
    assert sent == [{"external_id": "u1"}, {"external_id": "u3"}]
