"""What a run decides before reading: destination and key, mode and its reason, row estimates, report folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector.config import Pipeline, Source, Stream
from connector.config.destination import resolve_destination
from connector.delivery.mode import choose_mode, early_mode, transport_kind
from connector.delivery.spare import child_env, wanted
from connector.delivery.sync_access import asked_for_sync, needs_probe
from connector.errors import ConfigError
from connector.readers import estimate
from connector.readers.estimate import estimate_rows
from connector.report.paths import report_dir_for


def pipeline(**top: Any) -> Pipeline:
    stream = {
        "name": "users",
        "source": {"path": "users.csv"},
        "kind": "attributes",
        "identifier": {"external_id": "id"},
        "attributes": [{"column": "email"}],
    }
    return Pipeline.model_validate({"name": "p", "streams": [stream], **top})


def canvas_stream() -> Stream:
    return Stream.model_validate(
        {
            "name": "c",
            "source": {"path": "c.csv"},
            "kind": "canvas_trigger",
            "identifier": {"external_id": "id"},
            "canvas": {"canvas_id": "x"},
        }
    )


# --------------------------------------------------------------------------- destination


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:4010", "http://localhost:9", "http://[::1]:80", "https://rest.iad-01.braze.com"]
)
def test_allowed_urls(url: str) -> None:
    d = resolve_destination(pipeline(destination={"url": url}), {"BRAZE_API_KEY": "k"}, offline=False)
    assert (d.kind, d.url, d.api_key) == ("rest", url, "k")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://rest.iad-01.braze.com", "must use https"),
        ("http://10.0.0.7:4010", "must use https"),
        ("ftp://127.0.0.1", "not a URL"),
        ("rest.iad-01.braze.com", "not a URL"),
        ("https://user:pw@rest.iad-01.braze.com", "credentials"),
    ],
)
def test_refused_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_destination(pipeline(destination={"url": url}), {"BRAZE_API_KEY": "k"}, offline=False)


def test_env_endpoint_overrides_the_file_and_the_key_env_is_named() -> None:
    p = pipeline(destination={"url": "local", "api_key_env": "TEAM_KEY"})
    d = resolve_destination(
        p, {"BRAZE_REST_ENDPOINT": "https://rest.fra-01.braze.eu", "TEAM_KEY": "s3"}, offline=False
    )
    assert (d.kind, d.url, d.api_key) == ("rest", "https://rest.fra-01.braze.eu", "s3")
    with pytest.raises(ConfigError, match="TEAM_KEY"):
        resolve_destination(p, {"BRAZE_REST_ENDPOINT": "https://rest.fra-01.braze.eu"}, offline=False)


def test_offline_needs_no_key_and_local_gets_a_fresh_secret_key() -> None:
    p = pipeline(destination={"url": "https://rest.iad-01.braze.com"})
    assert resolve_destination(p, {}, offline=True).api_key is None
    a = resolve_destination(pipeline(), {"BRAZE_API_KEY": "user-key"}, offline=False)
    b = resolve_destination(pipeline(), {}, offline=False)
    assert a.kind == b.kind == "local"
    assert a.api_key and b.api_key and a.api_key != b.api_key and a.api_key != "user-key"
    assert a.api_key not in repr(a)
    assert resolve_destination(pipeline(), {}, offline=True).kind == "none"


# --------------------------------------------------------------------------- mode


def test_mode_precedence_and_reasons() -> None:
    p = pipeline(write={"mode": "sync"})
    s = p.streams[0]
    assert choose_mode(p, "bulk", [(s, 10, True)]) == ("bulk", "--mode bulk given on the command line")
    assert choose_mode(p, None, [(s, 10**6, True)]) == ("sync", "write.mode is sync in the pipeline file")
    mode, reason = choose_mode(p, "auto", [(s, 10**6, True)])
    assert mode == "bulk" and "1,000,000 rows" in reason and "over" in reason


def test_auto_mode_thresholds() -> None:
    p = pipeline(write={"sync_max_duration_s": 30})  # 500 per 60 s -> 250 rows fit in 30 s
    s = p.streams[0]
    assert choose_mode(p, None, [(s, 250, True)])[0] == "sync"
    mode, reason = choose_mode(p, None, [(s, 251, False)])
    assert mode == "bulk" and "about 251 rows" in reason and "30 s" in reason
    # Canvas rows do not count towards the sync budget; a canvas-only pipeline is bulk.
    assert choose_mode(p, None, [(s, 100, True), (canvas_stream(), 10**6, True)])[0] == "sync"
    assert "sync does not apply" in choose_mode(p, None, [(canvas_stream(), 1, True)])[1]
    confirm = pipeline(write={"confirm_profiles": True})
    assert choose_mode(confirm, None, [(s, 10**6, True)]) == (
        "sync",
        "auto: write.confirm_profiles is true, which needs /users/track/sync",
    )


def test_sync_endpoint_rules_sync_in_or_out() -> None:
    s = pipeline().streams[0]
    off = pipeline(write={"sync_endpoint": "disabled"})
    assert choose_mode(off, None, [(s, 10, True)]) == (
        "bulk",
        "auto: write.sync_endpoint is disabled, so /users/track/sync is not used",
    )
    assert choose_mode(off, "bulk", [(s, 10, True)])[0] == "bulk"
    with pytest.raises(ConfigError, match="--mode sync: .*sync_endpoint: disabled"):
        choose_mode(off, "sync", [(s, 10, True)])
    # Every run that chose sync probes the key first (a refusal found before packing keeps bulk requests
    # full); a run that asked for sync keeps it unless the probe is refused.
    auto, enabled = pipeline(), pipeline(write={"sync_endpoint": "enabled"})
    assert choose_mode(auto, None, [(s, 10, True)])[0] == "sync" and needs_probe(auto, None, "sync")
    assert needs_probe(enabled, None, "sync") and needs_probe(auto, "sync", "sync")
    assert not needs_probe(auto, None, "bulk")
    assert not asked_for_sync(auto, None) and asked_for_sync(auto, "sync") and asked_for_sync(enabled, None)
    assert asked_for_sync(pipeline(write={"mode": "sync"}), None) and not asked_for_sync(enabled, "bulk")


def test_the_mode_known_before_any_row_is_counted() -> None:
    """early_mode: what the CLI starts the HTTP child on (delivery/spare.py); None where rows must be counted."""
    auto, bulk, sync = pipeline(), pipeline(write={"mode": "bulk"}), pipeline(write={"mode": "sync"})
    assert early_mode(auto, "bulk") == "bulk" and early_mode(sync, "bulk") == "bulk"
    assert early_mode(bulk, None) == "bulk" and early_mode(sync, None) == "sync"
    assert early_mode(auto, None) is None and early_mode(bulk, "auto") is None  # auto needs the row estimate
    assert early_mode(bulk, None, resume=True) is None  # the resumed run's journal holds its mode
    assert early_mode(auto, "sync", resume=True) == "sync"
    assert transport_kind(auto, "bulk") == "aiohttp-process" and transport_kind(auto, "sync") == "requests"
    assert transport_kind(pipeline(write={"transport": "aiohttp"}), "bulk") == "aiohttp"


def test_the_http_child_starts_early_only_for_a_delivering_run_through_it() -> None:
    """wanted(): the secrets to keep out of the spare's environment, or None (no spare)."""
    env = {"BRAZE_REST_ENDPOINT": "http://127.0.0.1:9", "BRAZE_API_KEY": "k-123"}
    bulk = pipeline(write={"mode": "bulk"})

    def want(p: Pipeline, mode: str | None = None, *, offline: bool = False, resume: bool = False,
             environ: dict[str, str] = env) -> tuple[str, ...] | None:  # fmt: skip
        return wanted(p, mode, offline=offline, resume=resume, environ=environ)

    assert want(bulk) == ("k-123",) and want(pipeline(), "bulk") == ("k-123",)
    assert want(bulk, offline=True) is None  # validate, --dry-run: nothing is sent
    assert want(pipeline()) is None and want(bulk, "auto") is None  # mode auto counts rows first
    assert want(bulk, resume=True) is None and want(bulk, "bulk", resume=True) == ("k-123",)
    assert want(pipeline(), "sync") is None  # sync sends with requests, in this process
    assert want(pipeline(write={"transport": "aiohttp-process"}), "sync") == ("k-123",)
    assert want(pipeline(write={"transport": "aiohttp"}), "bulk") is None
    assert want(bulk, environ={"BRAZE_REST_ENDPOINT": "http://127.0.0.1:9"}) is None  # no key: refused anyway
    local = pipeline(write={"mode": "bulk"}, destination={"url": "local"})
    assert want(local, environ={}) == ()  # the embedded emulator's key is random, never in the environment
    # A key in a variable of any name stays out of the child's environment.
    custom = pipeline(write={"mode": "bulk"}, destination={"api_key_env": "MY_CRED"})
    secrets = want(custom, environ={**env, "MY_CRED": "s3cr3t"})
    assert secrets == ("s3cr3t",)
    assert child_env({"MY_CRED": "s3cr3t", "COPY": "x s3cr3t", "HOME": "/h"}, secrets) == {"HOME": "/h"}


# --------------------------------------------------------------------------- estimates and folders


def test_row_estimates(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": list(range(1234))}), tmp_path / "t.parquet")
    assert estimate_rows(Source(path="t.parquet"), [tmp_path / "t.parquet"]) == (1234, True)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n5,6", encoding="utf-8")
    assert estimate_rows(Source(path="t.csv"), [tmp_path / "t.csv"]) == (3, False)
    both = estimate_rows(Source(path="*", format="auto"), [tmp_path / "t.parquet", tmp_path / "t.csv"])
    assert both == (1237, False)


def _rows_read(path: Path, **csv: object) -> int:
    from connector.readers import read_source

    return sum(c.table.num_rows + len(c.rejects) for c in read_source(Source(path=path.name, csv=csv), path.parent))


def test_a_csv_estimate_counts_records_not_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quoted fields holding line breaks (LF and CRLF), doubled quotes and blank lines: a small file's count is
    the rows the reader reads; a large one's sample estimate is near them. Both are labelled estimates."""
    body = "".join(f'u{i},"line one\nline two ""quoted""\r\nline three",{i}\r\n' + ("\n" if i % 10 == 0 else "")
                   for i in range(3000))  # fmt: skip
    path = tmp_path / "notes.csv"
    path.write_bytes(("id,note,n\r\n" + body).encode())
    read = _rows_read(path)
    assert read == 3000 and estimate_rows(Source(path="notes.csv"), [path]) == (3000, False)
    assert path.read_bytes().count(b"\n") > 3 * read  # what a line count said
    monkeypatch.setattr(estimate, "COUNT_CSV_BYTES", 1000)  # a large file: size over a sample's record length
    monkeypatch.setattr(estimate, "SAMPLE_BYTES", 20_000)
    rows, exact = estimate_rows(Source(path="notes.csv"), [path])
    assert not exact and abs(rows - read) <= 0.05 * read, rows
    semi = tmp_path / "semi.csv"  # another quote character
    semi.write_text("a;b\n1;'x\ny'\n2;'z'\n", encoding="utf-8")
    assert estimate_rows(Source(path="semi.csv", csv={"delimiter": ";", "quote_char": "'"}), [semi]) == (2, False)
    assert _rows_read(semi, delimiter=";", quote_char="'") == 2


def test_report_dir_placeholders() -> None:
    p = pipeline()
    assert report_dir_for(p, None, "R1") == Path("reports/p/R1")
    assert report_dir_for(p, "out/{run_id}-{pipeline}", "R1") == Path("out/R1-p")
    with pytest.raises(ConfigError, match="placeholders"):
        report_dir_for(p, "out/{date}", "R1")


def test_a_bad_destination_url_names_the_pipeline_file(tmp_path: Path) -> None:
    from connector.config import load_pipeline

    f = tmp_path / "p.yaml"
    f.write_text(
        "name: x\ndestination: {url: 'ftp://x'}\nstreams:\n  - {name: u, source: {path: u.csv}, kind: attributes,"
        " identifier: {external_id: user_id}, attributes: [{column: email}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}: destination.url: 'ftp://x' is not a URL"):
        resolve_destination(load_pipeline(f), {}, offline=True)


def test_the_killed_run_warning_says_which_streams_send_every_row_again() -> None:
    """Only delta or incremental state remembers what Braze confirmed before a kill -9: a stream with neither
    sends everything again on a plain re-run, and the warning must not promise otherwise."""
    from connector.config import load_pipeline
    from connector.delivery.unfinished import _what_this_run_sends

    pipeline = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml")
    names = [s.name for s in pipeline.streams]
    every = set(names)  # the killed run sent rows of every stream
    plain = _what_this_run_sends(pipeline, every)
    assert plain.startswith(f"Stream(s) {', '.join(names)} keep no state") and "for the other streams" not in plain
    first = pipeline.streams[0].model_copy(update={"delta": True})
    mixed = pipeline.model_copy(update={"streams": [first, *pipeline.streams[1:]]})
    text = _what_this_run_sends(mixed, every)
    assert len(names) > 1
    assert names[0] not in text.split(" keep no state")[0] and "for the other streams, this run sends again" in text
    # A stream the killed run sent nothing of loses nothing: not named.
    only = _what_this_run_sends(pipeline, {names[1]})
    assert only.startswith(f"Stream(s) {names[1]} keep no state") and "for the other streams" in only
    remembered = pipeline.model_copy(update={"streams": [s.model_copy(update={"delta": True}) for s in pipeline.streams]})
    assert _what_this_run_sends(remembered, every).startswith("This run sends again whatever that run did not confirm")


def test_the_killed_run_warning_says_count_twice_only_for_objects_that_add_up() -> None:
    """A kill -9 of a run whose stateful streams only set attributes: resending what it did not confirm sets
    the same values again, so the warning must not say events or inc may count twice; with an events stream
    among them it must."""
    from connector.config import load_pipeline
    from connector.delivery.unfinished import _what_this_run_sends

    pipeline = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml")
    stateful = pipeline.model_copy(update={"streams": [s.model_copy(update={"delta": True}) for s in pipeline.streams]})
    attrs = [s for s in stateful.streams if s.kind == "attributes" and all(f.op != "inc" for f in s.attributes)]
    adds = [s for s in stateful.streams if s.kind in ("events", "purchases")]
    assert attrs and adds
    only_attrs = _what_this_run_sends(stateful, {attrs[0].name})
    assert "count twice" not in only_attrs and "applying one again changes nothing" in only_attrs
    with_events = _what_this_run_sends(stateful, {attrs[0].name, adds[0].name})
    assert "(events, purchases and inc may count twice)" in with_events
