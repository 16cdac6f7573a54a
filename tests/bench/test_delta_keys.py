"""The delta benchmark's key shapes: bench/data.py's users table with random UUIDs and its 5 %-changed copies,
and `bench/run.py delta --keys` delivering them (tiny sizes; counts, never speeds)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import data  # noqa: E402
from needs_nginx import require_nginx  # noqa: E402


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """bench/data.py writing its tables to a folder of the test's own."""
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    return tmp_path


def test_uuid_users_are_random_v4_uuids_with_every_other_column_as_the_users_table() -> None:
    table, plain = data.users_uuid_table(2000, offset=500), data.users_table(2000, offset=500)
    ids = table.column("user_id").to_pylist()
    parsed = [uuid.UUID(i) for i in ids]
    assert all(
        u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == i
        for u, i in zip(parsed, ids, strict=True)
    )
    assert len(set(ids)) == 2000 and ids != sorted(ids)  # not in key order
    assert table.drop(["user_id"]).equals(plain.drop(["user_id"]))
    assert data.users_uuid_table(2000, offset=500).equals(table)  # stable for the seed
    assert set(ids).isdisjoint(data.users_uuid_table(2000, offset=0).column("user_id").to_pylist())
    assert set(ids).isdisjoint(data.users_uuid_table(2000, seed=8, offset=500).column("user_id").to_pylist())


def test_uuid_users_parquet_is_written_in_chunks_and_as_csv(data_dir: Path) -> None:
    path = data.write_parquet("users_uuid", 2500, chunk=1000)
    assert path == data_dir / "users_uuid_2500.parquet"
    written = pq.read_table(path)
    # chunk by chunk, each with its own offset: the chunks' ids are those generated for their offsets
    expected = [
        data.users_uuid_table(n, offset=o).column("user_id")
        for o, n in ((0, 1000), (1000, 1000), (2000, 500))
    ]
    assert written.column("user_id").to_pylist() == [i for c in expected for i in c.to_pylist()]
    assert len(set(written.column("user_id").to_pylist())) == 2500
    csv = pacsv.read_csv(data.write_csv("users_uuid", 2500))
    assert csv.num_rows == 2500
    assert csv.column("user_id").to_pylist() == written.column("user_id").to_pylist()
    assert csv.column("plan").to_pylist() == written.column("plan").to_pylist()


@pytest.mark.parametrize("kind", ["users", "users_uuid"])
def test_changed_table_moves_the_plan_of_every_20th_row_only(data_dir: Path, kind: str) -> None:
    original = pq.read_table(data.write_parquet(kind, 2010, chunk=700))
    changed = pq.read_table(data.write_parquet(f"{kind}_changed", 2010, chunk=700))
    assert changed.schema == original.schema and changed.num_rows == 2010
    assert changed.drop(["plan"]).equals(original.drop(["plan"]))
    before, after = original.column("plan").to_pylist(), changed.column("plan").to_pylist()
    differ = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
    assert differ == list(range(0, 2010, 20))  # 101 rows, 5 %
    assert set(after) <= set(data.PLANS)  # still a valid plan: the suite rejects none


def test_unknown_table_kind_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown table kind 'user_uuid'"):
        data.write_parquet("user_uuid", 10)


def _need_nginx() -> None:
    require_nginx()


_LINE = re.compile(r"^(seq|uuid) keys, (.+?): [\d,]+ rows/s end to end in [\d.]+ s \(CPU [\d.]+ s\); "
                   r"delivered ([\d,]+), skipped ([\d,]+), requests ([\d,]+); x[\d.]+ plain wall, x[\d.]+ plain CPU$")  # fmt: skip


def _delta_lines(*args: str) -> list[tuple[str, str, int, int, int]]:
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "delta", "--rows", "3000", *args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"calibration loop \(10M-iteration for\): [\d.]+ s CPU", res.stdout), res.stdout
    found = [m.groups() for line in res.stdout.splitlines() if (m := _LINE.match(line))]
    assert len(found) == len([line for line in res.stdout.splitlines() if " keys, " in line]), res.stdout
    return [(shape, label, *(int(x.replace(",", "")) for x in nums)) for shape, label, *nums in found]


# (label, delivered, skipped) of the four runs on 3,000 rows: rows 0, 20, ... changed in the last (150 rows)
_EXPECTED = [("plain (delta: false)", 3000, 0), ("first delta run (all new)", 3000, 0),
             ("delta re-run (unchanged)", 0, 3000), ("delta re-run, 5 % changed", 150, 2850)]  # fmt: skip


@pytest.mark.skipif(os.environ.get("BRAZE_CONNECTOR_SOAK") != "1",
                    reason="both shapes run in test_issue12_table.py (goal 5); the counts per shape are checked "
                           "by the one-shape run below; BRAZE_CONNECTOR_SOAK=1 runs this too")  # fmt: skip
def test_delta_bench_runs_both_key_shapes_by_default() -> None:
    """The default: both key shapes, with the same counts each (CPU twice the one-shape run: soak only)."""
    _need_nginx()
    lines = _delta_lines()
    assert [(s, label, d, sk) for s, label, d, sk, _r in lines] == [
        (shape, label, d, sk) for shape in ("seq", "uuid") for label, d, sk in _EXPECTED
    ]
    for shape, label, delivered, _skipped, requests in lines:
        # 75 objects a request: every delivered row was sent, and nothing when nothing changed
        assert requests == -(-delivered // 75), (shape, label, requests)


def test_delta_bench_runs_one_key_shape_when_asked() -> None:
    _need_nginx()
    lines = _delta_lines("--keys", "uuid")
    assert [(s, label, d, sk) for s, label, d, sk, _r in lines] == [("uuid", *e) for e in _EXPECTED]
