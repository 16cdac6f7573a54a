"""bench/body_speed.py runs end to end on tiny tables: this code and a git ref, every table measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_body_speed_prints_every_table_for_both_sides(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "body_speed.py"), "--rows", "3000", "--rounds", "1",
         "--before", "HEAD", "--data", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=600,
    ).stdout  # fmt: skip
    for kind in ("users", "events"):
        for fmt in ("pandas", "pyarrow", "csv"):
            line = next(line for line in out.splitlines() if line.startswith(f"{kind} {fmt} "))
            assert re.search(r"\| +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +x[\d.]+$", line), line
    assert (tmp_path / "users_3000_pandas.parquet").exists()


def test_the_benchmarks_map_the_users_table_with_one_spec(tmp_path: Path) -> None:
    """bench/data.py's users mapping covers every generated column but the id; run.py, warehouse_delta.py and
    body_speed.py (plus its boolean column) send the table with it."""
    sys.path.insert(0, str(ROOT / "bench"))
    import body_speed  # noqa: PLC0415
    import data  # noqa: PLC0415
    import run  # noqa: PLC0415
    import warehouse_delta  # noqa: PLC0415

    from connector.config import Stream  # noqa: PLC0415

    def columns(spec: dict[str, object]) -> list[str]:
        stream = Stream.model_validate({"name": "s", "source": {"path": "x.parquet"}, **spec})
        return [a.column or "" for a in stream.attributes]

    generated = data.users_table(5).column_names
    assert generated[0] == "user_id" and columns(data.users_spec()) == generated[1:]
    sent = run.users_pipeline(Path("users.parquet"), "http://127.0.0.1:9").streams[0]
    assert sent.attributes == Stream.model_validate({"name": "s", "source": {"path": "x"}, **data.users_spec()}).attributes
    assert columns(body_speed.USERS) == [*generated[1:], "vip"]
    warehouse = warehouse_delta.pipeline("BENCH_PG_URL", "http://127.0.0.1:9", 1000, delta=True,
                                         state={"path": str(tmp_path / "state.sqlite")}, reports=tmp_path)
    assert warehouse.streams[0].attributes == sent.attributes
