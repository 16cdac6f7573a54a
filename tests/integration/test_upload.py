"""`braze-connector upload FILE` through the real CLI, against the emulator on 127.0.0.1: inferred types, the
pipeline file it writes (and `run` of that file repeating the upload), flag errors, format lists and
ambiguous dates in the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector.emulator import EmulatorServer, start_subprocess

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from cli_invoke import invoke  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
USERS = "user_id,email,age,ltv,vip,signup,prefs,zip\n" + "".join(
    f"u{i},u{i}@example.com,{'x' if i == 2 else 30 + i},{i}.5,{'true' if i % 2 else 'no'},"
    f'2023-01-{i:02d}T03:04:05Z,"{{""a"":{i}}}",{i:05d}\n'
    for i in range(1, 31)
)  # 30 rows; row 3 (u2) has age 'x': 29 of 30 ages are integers, so the column is read as integers


def report_of(output: str) -> dict[str, Any]:
    path = re.search(r"report: (\S+report\.json)", output)
    assert path, output
    return json.loads(Path(path.group(1)).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def pipeline_file(output: str) -> Path:
    found = re.search(r"pipeline file: (\S+)", output)
    assert found, output
    return Path(found.group(1))


def test_attributes_with_inferred_types_and_the_written_pipeline_repeats_the_run(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    (tmp_path / "users.csv").write_text(USERS, encoding="utf-8")
    env = {"BRAZE_API_KEY": emulator.api_key}
    res = invoke("upload", "users.csv", "--kind", "attributes", "--id", "user_id", "--endpoint", emulator.url,
                 "-q", cwd=tmp_path, env=env)  # fmt: skip
    assert res.exit_code == 0, res.output  # 1 of 30 rows rejected: under the 5 % threshold
    doc = report_of(res.output)
    assert doc["rows"]["read"] == 30 and doc["rows"]["delivered"] == 29 and doc["rows"]["rejected"] == 1
    assert "users.csv, row 3, column 'age': [cast.integer] 'x' is not an integer" in res.output
    u1 = emulator.user("external_id", "u1")
    assert u1 is not None
    attrs = u1["attributes"]
    flat = json.dumps(attrs)
    for expected in ('"age": 31', '"ltv": 1.5', '"vip": true', '"zip": "00001"', '"a": 1'):
        assert expected in flat, (expected, attrs)
    assert "2023-01-01T03:04:05" in flat
    assert emulator.api_key not in res.output
    written = pipeline_file(res.output)
    assert written.is_file() and (written.parent / "report.json").is_file()
    text = written.read_text(encoding="utf-8")
    assert emulator.api_key not in text and "api_key_env: BRAZE_API_KEY" in text

    users = [f"u{i}" for i in range(1, 31)]

    def profiles() -> dict[str, Any]:  # braze_id follows the order requests arrive in: not compared
        return {
            u: {k: v for k, v in (emulator.user("external_id", u) or {}).items() if k != "braze_id"}
            for u in users
        }

    before = profiles()
    emulator.reset()
    assert emulator.user("external_id", "u1") is None
    again = invoke("run", str(written), "-q", cwd=ROOT / "connector", env=env)  # from another folder
    assert again.exit_code == 0, again.output
    redo = report_of(again.output)
    assert redo["rows"] == doc["rows"]
    assert profiles() == before and before["u1"]["attributes"]["age"] == 31
    assert (written.parent.parent / redo["run_id"]).is_dir()  # same reports folder, a new run's folder


def test_rejects_over_the_threshold_name_their_figures_in_the_exit_meaning(tmp_path: Path) -> None:
    """Exit code 1 from rejects says how many, of how many, against which threshold (as `run` does)."""
    rows = "".join(f"u{i},{'x' if i % 4 == 0 else i}\n" for i in range(100))
    (tmp_path / "ages.csv").write_text("user_id,age\n" + rows, encoding="utf-8")
    res = invoke("upload", "ages.csv", "--kind", "attributes", "--id", "user_id", "--map", "age:integer", "-q",
                 cwd=tmp_path, env={"BRAZE_API_KEY": "k"})  # fmt: skip
    assert res.exit_code == 1, res.output
    said = "25.0 % of rows rejected (25 of 100), above max_reject_fraction 5 %"
    assert report_of(res.output)["exit_meaning"] == said and f"exit code 1, {said}" in res.output


def test_events_from_the_sample_parquet_into_the_embedded_emulator(tmp_path: Path) -> None:
    shutil.copy(ROOT / "sample_data" / "events.parquet", tmp_path / "events.parquet")
    res = invoke("upload", "events.parquet", "--kind", "events", "--id", "user_id", "--name-column", "event_name",
                 "--time-column", "event_time", "-q", cwd=tmp_path)  # fmt: skip
    doc = report_of(res.output)
    r = doc["rows"]
    assert r["read"] == 3000 and r["delivered"] > 2900, r
    assert r["read"] == r["delivered"] + r["rejected"] + r["failed"] + r["skipped"]
    text = pipeline_file(res.output).read_text(encoding="utf-8")
    assert "json_column: properties" in text and "app_id:" in text and "url: local" in text
    again = invoke("run", str(pipeline_file(res.output)), "-q", cwd=tmp_path)
    assert report_of(again.output)["rows"] == r and again.exit_code == res.exit_code


def test_purchases_take_columns_named_like_braze_fields_and_name_the_missing_flag(tmp_path: Path) -> None:
    shutil.copy(ROOT / "sample_data" / "purchases.csv", tmp_path / "purchases.csv")
    missing = invoke("upload", "purchases.csv", "--kind", "purchases", "--id", "user_id", cwd=tmp_path)
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines() == [
        "error: --kind purchases needs --time-column COLUMN (the time of each row; no column is named 'time'); "
        "columns: user_id, product_id, currency, price, quantity, purchased_at"
    ]
    res = invoke("upload", "purchases.csv", "--kind", "purchases", "--id", "user_id", "--time-column", "purchased_at",
                 "--dry-run", "-q", cwd=tmp_path)  # fmt: skip
    doc = report_of(res.output)
    assert doc["rows"]["read"] == doc["rows"]["skipped"] + doc["rows"]["rejected"] > 0
    assert "pipeline file:" in res.output and not (tmp_path / "state").exists()
    assert "quantity:" in pipeline_file(res.output).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "email:colour"], "error: --map 'email:colour': unknown type 'colour'; use one of "),
        (
            ["--map", "nope"],
            "error: --map 'nope': no column 'nope' in the file; columns: user_id, email, age",
        ),
        (["--map", "email="], "error: --map 'email=': expected COL[:TYPE][=ATTR]"),
        (["--map", "=x"], "error: --map '=x': expected COL[:TYPE][=ATTR]"),
        (["--id", "uid"], "error: --id 'uid': no such column in the file; columns: user_id, email"),
        (["--time-column", "age"], "error: --time-column does not apply to --kind attributes"),
        (["--id-type", "user_alias"], "error: --id-type user_alias needs --alias-label COLUMN"),
        # checked as load_pipeline checks the file it writes (which would otherwise not load)
        (["--map", "email:time", "--date-format", "%Q"], "error: upload users.csv: streams.0.attributes.0.format"),
        (["--map", "email", "--map", "user_id=email"], "error: upload users.csv: streams.0: attributes.1 writes the attribute 'email', as attributes.0"),
    ],
)
def test_bad_flags_give_one_line_naming_the_value_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "users.csv").write_text(USERS, encoding="utf-8")
    base = ["upload", "users.csv", "--kind", "attributes"]
    base += [] if "--id" in args else ["--id", "user_id"]
    res = invoke(*base, *args, cwd=tmp_path)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert "Traceback" not in res.output and not (tmp_path / "reports").exists()


def test_events_need_a_name_and_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("uid,at\nu1,2023-01-01T00:00:00Z\n", encoding="utf-8")
    res = invoke("upload", "e.csv", "--kind", "events", "--id", "uid", "--time-column", "at", cwd=tmp_path)
    assert res.exit_code == 2 and "--name-column COLUMN (per row) or --event-name NAME" in res.output
    ok = invoke("upload", "e.csv", "--kind", "events", "--id", "uid", "--time-column", "at", "--event-name",
                "signup", "-q", cwd=tmp_path)  # fmt: skip
    assert ok.exit_code == 0 and report_of(ok.output)["rows"]["delivered"] == 1, ok.output
    gone = invoke("upload", "nope.csv", "--kind", "events", "--id", "uid", cwd=tmp_path)
    assert gone.exit_code == 2 and "nope.csv" in gone.output and "Traceback" not in gone.output


def test_mapped_columns_with_types_and_names_and_a_format_list(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    (tmp_path / "d.csv").write_text(
        'id,when,score\nu1,10.03.2022,5\nu2,"Jun 16, 2022",6\nu3,2022/06/16,7\n', encoding="utf-8"
    )
    res = invoke("upload", "d.csv", "--kind", "attributes", "--id", "id", "--map", "when:time=seen_at",
                 "--map", "score:string=score_text", "--date-format", "%d.%m.%Y", "--date-format", "%b %d, %Y",
                 "--endpoint", emulator.url, "-q", cwd=tmp_path, env={"BRAZE_API_KEY": emulator.api_key})  # fmt: skip
    doc = report_of(res.output)
    assert doc["rows"]["delivered"] == 2 and doc["rows"]["rejected"] == 1
    assert "'2022/06/16' matches none of the formats '%d.%m.%Y', '%b %d, %Y' (tried in order)" in res.output
    u1, u2 = emulator.user("external_id", "u1"), emulator.user("external_id", "u2")
    assert "2022-03-10T00:00:00" in json.dumps(u1) and "2022-06-16T00:00:00" in json.dumps(u2)
    assert '"score_text": "5"' in json.dumps(u1)
    text = pipeline_file(res.output).read_text(encoding="utf-8")
    assert "to: seen_at" in text and "- '%d.%m.%Y'" in text

    # Without a type: a column the formats read is inferred as a time column.
    (tmp_path / "e.csv").write_text('id,when\nu4,10.03.2022\nu5,"Jun 16, 2022"\n', encoding="utf-8")
    res = invoke("upload", "e.csv", "--kind", "attributes", "--id", "id", "--date-format", "%d.%m.%Y",
                 "--date-format", "%b %d, %Y", "--endpoint", emulator.url, "-q", cwd=tmp_path,
                 env={"BRAZE_API_KEY": emulator.api_key})  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.dumps(emulator.user("external_id", "u5")).count("2022-06-16T00:00:00") == 1


def test_a_column_mapped_as_date_is_written_and_delivered_as_a_date(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--map COL:date writes `type: date` (a trial found `type: time`, so the written file sent dates as times
    or refused them); the dates reach Braze as YYYY-MM-DD, and `run` of the written file does the same. A
    date column without --map is still inferred as a time attribute."""
    (tmp_path / "d.csv").write_text("id,signup,joined\nu1,2024-05-01,2024-01-02\nu2,2024-06-30,2024-01-03\n",
                                    encoding="utf-8")  # fmt: skip
    env = {"BRAZE_API_KEY": emulator.api_key}
    res = invoke("upload", "d.csv", "--kind", "attributes", "--id", "id", "--map", "signup:date", "--map", "joined",
                 "--endpoint", emulator.url, "-q", cwd=tmp_path, env=env)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert report_of(res.output)["rows"]["delivered"] == 2
    text = pipeline_file(res.output).read_text(encoding="utf-8")
    assert "- column: signup\n    type: date\n" in text and "- column: joined\n    type: time\n" in text
    attrs = emulator.user("external_id", "u1")["attributes"]  # type: ignore[index]
    assert attrs["signup"] == "2024-05-01" and attrs["joined"].startswith("2024-01-02T00:00:00")
    emulator.reset()
    again = invoke("run", str(pipeline_file(res.output)), "-q", cwd=tmp_path, env=env)
    assert again.exit_code == 0 and report_of(again.output)["rows"]["delivered"] == 2, again.output
    assert emulator.user("external_id", "u2")["attributes"]["signup"] == "2024-06-30"  # type: ignore[index]


def test_ambiguous_slash_dates_are_flagged_in_the_summary_and_report(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,joined\nu1,07/09/2023\nu2,01/02/2023\n", encoding="utf-8")
    res = invoke("upload", "a.csv", "--kind", "attributes", "--id", "id", "-q", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    warning = (
        "ambiguous dates: stream attributes, column 'joined': 2 value(s) such as '07/09/2023' read as either "
        "day/month or month/day and no value in the column tells which; they were read as month/day "
        "(07/09/2023 = 2023-07-09)"
    )
    assert f"  warning: {warning}" in res.output
    assert any(w.startswith(warning) for w in report_of(res.output)["warnings"])
    html = (pipeline_file(res.output).parent / "report.html").read_text(encoding="utf-8")
    assert "ambiguous dates" in html
    checked = invoke("validate", str(pipeline_file(res.output)), "-q", cwd=tmp_path)  # from a pipeline file
    assert f"  warning: {warning}" in checked.output and checked.exit_code == 0, checked.output

    (tmp_path / "b.csv").write_text("id,joined\nu1,07/09/2023\nu2,13/09/2023\n", encoding="utf-8")
    clear = invoke("upload", "b.csv", "--kind", "attributes", "--id", "id", "--dry-run", "-q", cwd=tmp_path)
    assert "warning: ambiguous" not in clear.output and report_of(clear.output)["rows"]["rejected"] == 0
    sample = next((pipeline_file(clear.output).parent / "sample_requests").iterdir()).read_text(
        encoding="utf-8"
    )
    assert "2023-09-07T00:00:00.000Z" in sample  # day/month, as 13/09/2023 shows


def test_the_readme_upload_example_runs_against_the_sample_data(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^braze-connector (upload sample_data/\S+ [^\n#]*)", text, flags=re.M)
    assert commands, "README.md shows no `braze-connector upload sample_data/...` example"
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    for command in commands:
        res = invoke(*command.split(), "-q", cwd=tmp_path)
        assert res.exit_code == 0, (command, res.output)
        assert report_of(res.output)["rows"]["delivered"] > 0 and pipeline_file(res.output).is_file()


def test_report_dir_gets_the_pipeline_file_and_a_second_upload_a_folder_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("id,plan\nu1,gold\n", encoding="utf-8")
    args = (
        "upload",
        "u.csv",
        "--kind",
        "attributes",
        "--id",
        "id",
        "--report-dir",
        "out/last",
        "--dry-run",
        "-q",
    )
    first = invoke(*args, cwd=tmp_path)
    second = invoke(*args, cwd=tmp_path)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    one, two = tmp_path / pipeline_file(first.output), tmp_path / pipeline_file(second.output)
    assert one == tmp_path / "out" / "last" / "pipeline.yaml" and one.is_file()
    assert two != one and two.is_file() and two.parent.parent == one.parent.parent
    assert f"dir: {tmp_path / 'out' / 'last'}" in one.read_text(encoding="utf-8")
    third = invoke("run", str(one), "-q", cwd=ROOT)
    assert (tmp_path / pipeline_file(second.output)).is_file() and third.exit_code == 0, third.output
    assert str(tmp_path / "out") in third.output  # the written file reports beside the upload's reports


def test_sigterm_stops_an_upload_gracefully_with_every_row_counted(tmp_path: Path) -> None:
    """The same stop as `run`: exit 4, the invariant holds, the report and the pipeline file are written."""
    n = 20_000  # 40 users of 500 events: each user's requests go one after another (7 rounds of answers),
    # so the run is still sending when the first round's answers are in, whatever the packing
    pq.write_table(pa.table({"user_id": [f"u{i % 40}" for i in range(n)], "ts": ["2026-01-02T10:00:00Z"] * n,
                             "score": list(range(n))}), tmp_path / "ev.parquet")  # fmt: skip
    with start_subprocess("--latency-ms", "500") as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")} | {
            "BRAZE_API_KEY": "test-key"
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "upload", "ev.parquet", "--kind", "events", "--id", "user_id",
             "--event-name", "played", "--time-column", "ts", "--endpoint", emu.url, "--mode", "bulk",
             "--report-dir", "out", "-q"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        end = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < end, "the upload ended before it was signalled"
            req = urllib.request.Request(
                emu.url + "/_emulator/stats", headers={"Authorization": "Bearer test-key"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                if json.loads(resp.read())["objects_applied"]["events"] >= 300:
                    break
            time.sleep(0.05)
        # written as the upload began, not when it ends: a kill -9 would leave it too, for --resume
        assert (tmp_path / "out" / "pipeline.yaml").is_file()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 4, stderr
    doc = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    r = doc["rows"]
    assert (
        doc["invariant_ok"] and r["read"] == n == r["delivered"] + r["rejected"] + r["failed"] + r["skipped"]
    )
    assert 0 < r["delivered"] < n and "test-key" not in stdout + stderr
    assert doc["stop"] == {"reason": "stopped by SIGTERM", "how": "gracefully", "exit_code": 4}
    assert (tmp_path / "out" / "pipeline.yaml").is_file() and "pipeline file: out/pipeline.yaml" in stdout
    assert "braze-connector run out/pipeline.yaml --resume out   # finishes this upload" in stdout
    # the stop warning names the same command (upload has no --resume of its own)
    assert any("finish the run with braze-connector run out/pipeline.yaml --resume out" in w for w in doc["warnings"])


def test_a_key_without_the_sync_beta_is_told_the_upload_flag_that_skips_the_probe(emulator_factory: Any,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """Mode auto probes /users/track/sync for a small file; an upload has no pipeline file to set
    write.sync_endpoint in, so its mode line names its own flag (the written pipeline's run names the setting)."""
    em = emulator_factory(sync_beta=False)
    (tmp_path / "users.csv").write_text(USERS, encoding="utf-8")
    res = invoke("upload", "users.csv", "--kind", "attributes", "--id", "user_id", "--endpoint", em.url, "-q",
                 cwd=tmp_path, env={"BRAZE_API_KEY": em.api_key})  # fmt: skip
    doc = report_of(res.output)
    assert doc["mode"] == "bulk" and doc["mode_reason"].endswith("so bulk; pass --mode bulk to use bulk from the start")
    again = invoke("run", str(pipeline_file(res.output)), "-q", cwd=tmp_path, env={"BRAZE_API_KEY": em.api_key})
    said = report_of(again.output)["mode_reason"]
    assert said.endswith("so bulk; set write.sync_endpoint: disabled to use bulk from the start"), said


def test_an_upload_refused_by_sync_mid_run_is_told_its_flag_not_a_pipeline_setting(
    emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync permission lost after the probe (simulated: no probe): the run's warning names the upload's
    --mode bulk, since an upload has no pipeline file in which to set write.sync_endpoint."""
    import connector.pipeline

    monkeypatch.setattr(connector.pipeline, "needs_probe", lambda *a: False)
    em = emulator_factory(sync_beta=False)
    (tmp_path / "users.csv").write_text(USERS, encoding="utf-8")
    res = invoke("upload", "users.csv", "--kind", "attributes", "--id", "user_id", "--endpoint", em.url,
                 "--mode", "sync", "-q", cwd=tmp_path, env={"BRAZE_API_KEY": em.api_key})  # fmt: skip
    doc = report_of(res.output)
    assert doc["exit_code"] == 0 and doc["mode"] == "bulk" and doc["mode_reason"].startswith("switched from sync")
    [warning] = doc["warnings"]
    assert "/users/track/sync refused the key" in warning
    assert warning.endswith("pass --mode bulk to use bulk from the start"), warning


def test_the_summary_shows_a_reject_example_by_the_path_it_was_given_and_the_rejects_file_keeps_it_whole(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """The top reject rules' examples name the file relative to the working directory (as README shows them);
    rejects.csv keeps the absolute path, which --retry-failed reads back."""
    em = emulator_factory()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "people.csv").write_text("user_id,plan\nu1,gold\n,silver\n", encoding="utf-8")
    res = invoke("upload", "data/people.csv", "--kind", "attributes", "--id", "user_id", "--endpoint", em.url,
                 "--mode", "bulk", "--report-dir", "out", cwd=tmp_path, env={"BRAZE_API_KEY": em.api_key})  # fmt: skip
    assert ("      e.g. data/people.csv, row 3, column 'user_id': [identifier.missing] the identifier external_id "
            "is empty") in res.output, res.output
    rejects = (tmp_path / "out" / "rejects.csv").read_text(encoding="utf-8")
    assert f",{tmp_path / 'data' / 'people.csv'},3,contract,identifier.missing," in rejects, rejects
