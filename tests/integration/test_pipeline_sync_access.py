"""/users/track/sync is a Braze beta (issue 11, point 2): mode auto probes the key before choosing it, and a
403/404 from it mid-run sends the rest of the run, refused rows included, through /users/track."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.config import Pipeline
from connector.delivery.sync_access import probe_mode
from connector.emulator import EmulatorServer
from connector.errors import ConfigError
from connector.report import RunReport

pytestmark = pytest.mark.timeout(90)
Factory = Callable[..., EmulatorServer]


def _pipeline(tmp_path: Path, n: int, write: dict[str, Any] | None = None, **top: Any) -> Pipeline:
    """n rows over n // 2 users (two rows a user, the second one's plan wins), one of them a contract reject."""
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "data" / "users.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "plan", "age"])
        for i in range(n):
            w.writerow([f"u{i // 2}", f"plan{i}", "x" if i == 3 else str(i)])
    doc = {
        "name": "t",
        "write": {"retry": {"max_attempts": 2, "initial_backoff_s": 0.01}, **(write or {})},
        "report": {"max_reject_fraction": 0.5},
        "streams": [{"name": "users", "source": {"path": "data/users.csv"}, "kind": "attributes",
                     "identifier": {"external_id": "user_id"},
                     "attributes": [{"column": "plan"}, {"column": "age", "type": "integer"}]}],
        **top,
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_pipeline(tmp_path / "p.yaml")


def _run(p: Pipeline, em: EmulatorServer | None, tmp_path: Path, **kw: Any) -> tuple[RunReport, dict[str, Any]]:
    env = {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"} if em is not None else {}
    report = run_pipeline(p, report_dir=tmp_path / "out", env=env, **kw)
    return report, json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))


def _applied(em: EmulatorServer) -> Counter[str]:
    return Counter(a["identifier"]["external_id"] for e in em.ledger() for a in e["applied"])


def test_auto_mode_probes_and_falls_back_to_bulk_for_a_key_without_the_beta(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory(sync_beta=False)
    _, doc = _run(_pipeline(tmp_path, 10), em, tmp_path)
    assert doc["mode"] == "bulk" and "probe: HTTP 403: Access Denied" in doc["mode_reason"]
    assert doc["rows"]["delivered"] == 9 and doc["exit_code"] == 0 and doc["warnings"] == []
    stats = em.stats()["requests"]
    assert stats["/users/track/sync"] == {"403": 1}  # the probe only
    assert "201" in stats["/users/track"]
    # The probe is listed as a probe, apart from the delivery requests (whose statuses are all 2xx).
    assert "users_track_sync" not in doc["requests"]["by_endpoint"] and "403" not in doc["requests"]["by_status"]
    [probe] = doc["requests"]["probes"]
    assert probe == {**probe, "endpoint": "users_track_sync", "purpose": "sync access", "status": 403,
                     "decided": "bulk"} and probe["answer"].startswith("HTTP 403")  # fmt: skip
    assert doc["requests"]["total"] == sum(stats["/users/track"].values())


def test_auto_mode_keeps_sync_when_the_probe_shows_access(emulator_factory: Factory, tmp_path: Path) -> None:
    em = emulator_factory(sync_beta=True)
    _, doc = _run(_pipeline(tmp_path, 10), em, tmp_path)
    assert doc["mode"] == "sync" and "a probe shows the key can use /users/track/sync" in doc["mode_reason"]
    assert em.stats()["requests"]["/users/track/sync"] == {"400": 1, "201": 9}  # the empty probe, then rows
    assert em.stats()["objects_applied"]["attributes"] == 9  # the probe wrote nothing


def test_a_probe_answered_401_ends_the_run_before_a_row_is_read(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A revoked key: the probe's 401 refuses the key on every endpoint, so the run ends there with exit 3, even
    one that would send nothing at all (an unchanged delta run used to exit 0 with a revoked key)."""
    p = _pipeline(tmp_path, 10)
    report = run_pipeline(p, report_dir=tmp_path / "out", env={"BRAZE_REST_ENDPOINT": emulator.url,
                                                               "BRAZE_API_KEY": "revoked-key"}, raise_on_failure=False)  # fmt: skip
    doc = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    assert doc["exit_code"] == 3 and doc["rows"]["read"] == 0 and doc["invariant_ok"] is True
    assert doc["exit_meaning"] == "destination fatal: API key refused (HTTP 401) by the sync probe, before a row was read"
    [probe] = doc["requests"]["probes"]
    assert probe["status"] == 401 and probe["decided"] == "none"
    # the mode chosen is kept, and its reason says nothing went that way
    assert doc["mode_reason"].endswith("the sync probe's HTTP 401 refused the key, so no row was read or sent")
    assert any("HTTP 401" in w for w in doc["warnings"]) and "revoked-key" not in json.dumps(doc)
    assert emulator.stats()["requests"].get("/users/track") is None  # nothing else was sent


def test_a_probe_answered_404_means_no_sync(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = _pipeline(tmp_path, 2)
    report = RunReport("t", report_dir=tmp_path / "r")
    report.set_mode("sync", "auto: small")
    assert probe_mode(p, emulator.url + "/no-such-prefix", "test-key", report) == "bulk"
    assert "HTTP 404" in report.mode_reason


@pytest.mark.parametrize(("write", "mode"), [({"mode": "sync"}, None), ({"sync_endpoint": "enabled"}, None),
                                             ({}, "sync")])  # fmt: skip
def test_a_sync_run_whose_key_lacks_the_beta_goes_bulk_in_full_requests(
    emulator_factory: Factory, tmp_path: Path, write: dict[str, Any], mode: str | None
) -> None:
    """Sync asked for (mode, enabled, --mode): the probe's 403 turns the run to bulk before anything is
    packed, so the rows go 75 to a request, not one per request."""
    em = emulator_factory(sync_beta=False)
    _, doc = _run(_pipeline(tmp_path, 60, write), em, tmp_path, mode=mode)
    assert doc["rows"] == {**doc["rows"], "read": 60, "delivered": 59, "rejected": 1, "failed": 0, "skipped": 0}
    assert doc["exit_code"] == 0 and doc["mode"] == "bulk" and "cannot use /users/track/sync" in doc["mode_reason"]
    [warning] = doc["warnings"]
    assert "sync was asked for" in warning and "--sync-beta" in warning
    stats = em.stats()["requests"]
    assert stats["/users/track/sync"] == {"403": 1}  # the probe only
    assert stats["/users/track"] == {"201": 1}  # 59 rows in one bulk request


@pytest.mark.parametrize(("write", "mode"), [({"mode": "sync"}, None), ({"sync_endpoint": "enabled"}, None),
                                             ({}, "sync")])  # fmt: skip
def test_a_403_from_sync_mid_run_sends_the_rest_in_bulk_losing_no_row(
    emulator_factory: Factory, tmp_path: Path, write: dict[str, Any], mode: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The permission is lost after the probe (simulated: no probe): the refused rows and the rest of the
    run go through /users/track, each user's rows still in order."""
    import connector.pipeline

    monkeypatch.setattr(connector.pipeline, "needs_probe", lambda *a: False)
    em = emulator_factory(sync_beta=False)
    _, doc = _run(_pipeline(tmp_path, 60, write), em, tmp_path, mode=mode)
    assert doc["rows"] == {**doc["rows"], "read": 60, "delivered": 59, "rejected": 1, "failed": 0, "skipped": 0}
    assert doc["exit_code"] == 0 and doc["mode"] == "bulk" and doc["mode_reason"].startswith("switched from sync")
    [warning] = doc["warnings"]
    assert "/users/track/sync refused the key (HTTP 403: Access Denied)" in warning and "no row" in warning
    assert warning.endswith("set write.sync_endpoint: disabled to use bulk from the start"), warning
    stats = em.stats()["requests"]
    assert "201" not in stats["/users/track/sync"] and set(stats["/users/track"]) == {"201"}
    # Every valid row applied exactly once, and each user's rows in source order (the later plan wins).
    applied = _applied(em)
    assert sum(applied.values()) == 59 and set(applied.values()) <= {1, 2}
    plans = {u: em.user("external_id", f"u{u}")["attributes"]["plan"] for u in range(30)}  # type: ignore[index]
    assert plans == {u: f"plan{2 * u + 1}" if u != 1 else "plan2" for u in range(30)}  # row 3 (u1) rejected


def test_the_embedded_emulator_grants_the_beta_only_when_the_pipeline_says_so(tmp_path: Path) -> None:
    report, doc = _run(_pipeline(tmp_path / "a", 6), None, tmp_path / "a")
    assert doc["mode"] == "bulk" and "probe: HTTP 403" in doc["mode_reason"]  # a workspace outside the beta
    # The probe's 403 is not a delivery request: the Requests table labels it as the probe it is.
    assert set(doc["requests"]["by_endpoint"]) == {"users_track"} and set(doc["requests"]["by_status"]) == {"201"}
    assert [(p["status"], p["decided"]) for p in doc["requests"]["probes"]] == [(403, "bulk")]
    html = (report.report_dir / "report.html").read_text(encoding="utf-8")
    requests_card = html[html.index("<h2>Requests</h2>"):html.index("<h2>Latency</h2>")]
    assert "(sync access probe, not a delivery)" in requests_card and "HTTP 403: Access Denied → bulk" in requests_card
    assert "<td>201: 1</td>" in requests_card and "1 requests · 0 retries · 0 rate limited (429) · 1 probe apart" in requests_card
    _, doc = _run(_pipeline(tmp_path / "b", 6, {"sync_endpoint": "enabled"}), None, tmp_path / "b")
    assert doc["mode"] == "sync" and doc["warnings"] == []
    beta = {"destination": {"url": "local", "emulator": {"sync_beta": True}}}
    _, doc = _run(_pipeline(tmp_path / "c", 6, **beta), None, tmp_path / "c")
    assert doc["mode"] == "sync" and "a probe shows" in doc["mode_reason"]


def test_mode_sync_with_the_endpoint_disabled_is_a_config_error(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, 2, {"sync_endpoint": "disabled"})
    with pytest.raises(ConfigError, match="--mode sync: .*write.sync_endpoint: disabled"):
        run_pipeline(p, mode="sync", report_dir=tmp_path / "out", env={})
    _, doc = _run(p, None, tmp_path)
    assert doc["mode"] == "bulk" and "sync_endpoint is disabled" in doc["mode_reason"]
