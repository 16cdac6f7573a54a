"""What users would otherwise run, measured on the same sink and data as the connector.

- naive_loop: pandas iterrows building dicts, 75 per request, requests.post one after another.
- braze_client_loop: the braze-client package (PyPI `braze-client-p311`, the Python 3.11 fork) calling
  user_track with 75 attributes per call. It pins tenacity 8.2.3, which conflicts with ours, so it runs in
  its own virtualenv under bench/.data/ (created on first use) as a subprocess.

Both run for a bounded time and report requests/s and objects/s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import pandas as pd
import requests

HERE = Path(__file__).resolve().parent
BASELINE_VENV = HERE / ".data" / "baseline-venv"


def naive_loop(url: str, api_key: str, parquet_path: Path, seconds: float) -> dict[str, float]:
    """The script an analyst writes first: iterrows, build a dict per row, post every 75."""
    df = pd.read_parquet(parquet_path)
    session_post = requests.post  # deliberately no Session: what such scripts do
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    start = time.perf_counter()
    cpu0 = time.process_time()
    requests_sent = objects = 0
    batch: list[dict[str, object]] = []
    for _, row in df.iterrows():
        obj = {"external_id": str(row["user_id"])}
        for col in df.columns:
            if col != "user_id" and pd.notna(row[col]):
                obj[col] = row[col].item() if hasattr(row[col], "item") else row[col]
        batch.append(obj)
        if len(batch) == 75:
            r = session_post(f"{url}/users/track", data=json.dumps({"attributes": batch}, default=str), headers=headers, timeout=30)
            r.raise_for_status()
            requests_sent += 1
            objects += len(batch)
            batch = []
            if time.perf_counter() - start > seconds:
                break
    elapsed = time.perf_counter() - start
    return {
        "requests_per_s": requests_sent / elapsed,
        "objects_per_s": objects / elapsed,
        "cpu_s": time.process_time() - cpu0,
        "elapsed_s": elapsed,
    }


_BRAZE_CLIENT_SCRIPT = r"""
import json, sys, time
import pyarrow.parquet as pq
from braze.client import BrazeClient
url, key, path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = pq.read_table(path).to_pylist()
client = BrazeClient(api_key=key, api_url=url)
start = time.perf_counter(); cpu0 = time.process_time(); n = objs = 0
for i in range(0, len(rows), 75):
    batch = [{"external_id": str(r.pop("user_id")), **{k: (str(v) if hasattr(v, "isoformat") else v) for k, v in r.items() if v is not None}} for r in rows[i:i + 75]]
    client.user_track(attributes=batch)
    n += 1; objs += len(batch)
    if time.perf_counter() - start > seconds:
        break
el = time.perf_counter() - start
print(json.dumps({"requests_per_s": n / el, "objects_per_s": objs / el, "cpu_s": time.process_time() - cpu0, "elapsed_s": el}))
"""


def ensure_baseline_venv() -> Path:
    """Create the braze-client virtualenv once; returns its python."""
    py = BASELINE_VENV / "bin" / "python"
    if not py.exists():
        venv.create(BASELINE_VENV, with_pip=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "braze-client-p311==0.0.5", "pyarrow"],
            check=True,
        )
    return py


def braze_client_loop(url: str, api_key: str, parquet_path: Path, seconds: float) -> dict[str, float]:
    py = ensure_baseline_venv()
    out = subprocess.run(
        [str(py), "-c", _BRAZE_CLIENT_SCRIPT, url, api_key, str(parquet_path), str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":  # pragma: no cover - manual use
    print(naive_loop(sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
