"""Delta sync's state in a real PostgreSQL server on loopback (the `postgres_url` fixture): shared by
processes, surviving kill -9, and end to end through a pipeline against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from delta_worker import users
from test_pipeline_run import env_for, project, report_json, users_stream

from connector.delta import DeltaState
from connector.delta.pg_store import PgStore
from connector.errors import ConfigError
from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(180)
WORKER = Path(__file__).with_name("delta_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def worker(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "STATE_PG_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def state(url: str, pipeline: str) -> DeltaState:
    return DeltaState(PgStore("STATE_PG_URL", pipeline, {"STATE_PG_URL": url}, read_only=False))


def test_two_processes_share_one_state(postgres_url: str) -> None:
    """Two partitions of one pipeline write their users at once; a third pipeline's state stays apart."""
    procs = [worker(postgres_url, "share", "shared", str(first), "3000") for first in (0, 3000)]
    procs.append(worker(postgres_url, "share", "other", "0", "3000"))
    outs = [p.communicate(timeout=150) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert [json.loads(out) for out, _ in outs] == [{"sent": 3000, "unchanged": 0}] * 3
    s = state(postgres_url, "shared")
    assert len(list(s.known_keys("users"))) == 6000
    again, unchanged = s.changed("users", "attributes", users(range(6000)))
    assert unchanged == 6000 and len(again) == 0  # both processes' confirmations are there
    assert len(list(state(postgres_url, "other").known_keys("users"))) == 3000  # and nothing of "shared"'s


def test_a_killed_run_resends_what_was_pending_and_nothing_confirmed(postgres_url: str) -> None:
    p = worker(postgres_url, "crash", "crashed")
    out, err = p.communicate(timeout=150)
    assert p.returncode == -9, err[-2000:]
    assert out.strip() == "sent 150"  # 0..49 changed, 100..199 new
    s = state(postgres_url, "crashed")
    rerun, unchanged = s.changed("users", "attributes", users(range(200), changed=range(50)))
    sent = sorted(int(k.split(":u")[1]) for k in rerun.delta_keys or [])
    # In flight at the kill: sent again, in full (Braze may or may not have applied them). Confirmed: not sent.
    assert sent == list(range(50)) + list(range(150, 200)) and unchanged == 100
    assert rerun.objects[0] == {"external_id": "u0", "plan": "max", "age": 0}


def test_a_pipeline_keeps_its_delta_state_in_postgresql(emulator: Any, tmp_path: Path, postgres_url: str) -> None:
    pipeline = project(tmp_path, [{**users_stream(), "delta": True}], state={"url_env": "STATE_PG_URL"},
                       name=f"pg-{tmp_path.name}")  # its own rows in the session's database
    env = {**env_for(emulator), "STATE_PG_URL": postgres_url}
    first = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env))
    assert first["rows"]["delivered"] == 3 and first["streams"][0]["delta"]["added"] == 3
    assert first["delta"]["state"] == "postgresql ($STATE_PG_URL)" and first["delta"]["state_file"] is None
    assert not list(tmp_path.rglob("*.sqlite"))  # no local state file
    second = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env))
    assert second["rows"]["skipped"] == 3 and second["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": 3}
    written = "".join(f.read_text(errors="replace") for f in (tmp_path / "r2").rglob("*") if f.is_file())
    assert postgres_url not in written  # the URL is never in the report


def test_a_missing_or_wrong_state_url_is_a_clear_error(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(ConfigError, match="state.url_env: the environment variable STATE_PG_URL is not set"):
        PgStore("STATE_PG_URL", "p", {}, read_only=False)
    with pytest.raises(ConfigError, match="must hold a postgresql:// URL"):
        PgStore("STATE_PG_URL", "p", {"STATE_PG_URL": "sqlite:///x.db"}, read_only=False)
    bad = postgres_url.rsplit(":", 1)[0] + ":1/postgres?password=s3cret"
    with pytest.raises(ConfigError) as info:
        PgStore("STATE_PG_URL", "p", {"STATE_PG_URL": bad}, read_only=False)
    assert "s3cret" not in str(info.value) and "$STATE_PG_URL" in str(info.value)
