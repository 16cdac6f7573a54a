"""The writer against the real emulator over HTTP on 127.0.0.1: delivery, rejects, splits, faults, order, aborts."""

from __future__ import annotations

import csv
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from connector import config
from connector.delivery.client import BrazeClient
from connector.delivery.ratelimit import RateLimiter
from connector.delivery.writer import Writer
from connector.emulator import EmulatorServer
from connector.errors import AuthError, DestinationUnreachable
from connector.records import Chunk, MappedChunk, RowRef
from connector.report import RunReport

SOAK = os.environ.get("BRAZE_CONNECTOR_SOAK") == "1"
pytestmark = pytest.mark.timeout(900 if SOAK else 60)

FILE = "people.csv"
ERR_EMAIL = "The value provided for the 'email' field is not a valid email."
FAST_RETRY = {"max_attempts": 6, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_elapsed_s": 20}

# A random 30 % of requests take 25 ms longer: without per-user ordering, later updates would overtake.
JITTER: dict[str, Any] = {"faults": {"slow": 0.3}, "slow_ms": 25, "seed": 11}

_STREAMS: dict[str, dict[str, Any]] = {
    "attributes": {"attributes": [{"column": "plan"}, {"column": "email"}]},
    "events": {"event": {"name": "event", "time": "time"}},
    "canvas_trigger": {"canvas": {"canvas_id": "cv-1"}},
    "live_activity": {
        "live_activity": {"app_id": "app", "activity_id": "act", "content_state": {"json_column": "s"}}
    },
}


def make_pipeline(kind: str = "attributes", sample_bodies: int = 5, **write: Any) -> config.Pipeline:
    """A one-stream pipeline; `write` overrides the write section (retries are fast by default)."""
    write.setdefault("retry", FAST_RETRY)
    write.setdefault(
        "rate_limits", {e: {"requests": 100_000, "per_seconds": 1} for e in config.DEFAULT_RATE_LIMITS}
    )
    stream: dict[str, Any] = {"name": "s", "source": {"path": FILE}, "kind": kind}
    if kind != "live_activity":
        stream["identifier"] = {"external_id": "id"}
    stream.update(_STREAMS[kind])
    return config.Pipeline.model_validate(
        {"name": "t", "streams": [stream], "write": write, "report": {"sample_bodies": sample_bodies}}
    )


_OPENED: list[RunReport] = []


def opened(report: RunReport) -> RunReport:
    """Remember a report so its rejects/failed files are closed after the test (most tests here never finish())."""
    _OPENED.append(report)
    return report


@pytest.fixture(autouse=True)
def close_reports() -> Iterator[None]:
    yield
    while _OPENED:
        report = _OPENED.pop()
        for sink in (report.rejects, report.failed, report.duplicated):
            if sink is not None:
                sink.close()


def mapped_chunk(
    kind: str, objects: list[dict[str, Any]], keys: list[str] | None = None, offset: int = 0
) -> MappedChunk:
    """A MappedChunk whose object i came from CSV line offset + i + 2, whose `id` cell is row<offset + i>."""
    n = len(objects)
    table = pa.table({"id": [f"row{offset + i}" for i in range(n)], "marker": [str(i) for i in range(n)]})
    chunk = Chunk(FILE, table, [offset + i + 2 for i in range(n)])
    if keys is None:
        keys = [f"external_id:{o.get('external_id') or o.get('external_user_id')}" for o in objects]
    return MappedChunk(kind, chunk, objects, list(range(n)), keys)  # type: ignore[arg-type]


def make_writer(
    pipeline: config.Pipeline, url: str | None, tmp_path: Path, *, mode: str = "bulk", key: str = "test-key",
    dry_run: bool = False,
) -> tuple[Writer, RunReport]:  # fmt: skip
    report = opened(RunReport("t", report_dir=tmp_path / "report", dry_run=dry_run))
    client = None
    if url is not None:
        limiter = RateLimiter.from_write(pipeline.write)
        client = BrazeClient(url, key, write=pipeline.write, limiter=limiter, on_retry=report.record_retry)
    return Writer(pipeline, client, report, mode=mode, dry_run=dry_run), report  # type: ignore[arg-type]


def stream_of(pipeline: config.Pipeline) -> config.Stream:
    return pipeline.streams[0]


def rows(report: RunReport) -> dict[str, int]:
    return {k: v for k, v in report.rows.items() if k != "read"}


def accounted(report: RunReport) -> int:
    r = report.rows
    return r["delivered"] + r["rejected"] + r["failed"] + r["skipped"]


def _read_rows(sink: Any) -> list[dict[str, str]]:
    sink.flush()
    with open(sink.path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def rejects_file(report: RunReport) -> list[dict[str, str]]:
    return _read_rows(report.rejects)


def failed_file(report: RunReport) -> list[dict[str, str]]:
    return _read_rows(report.failed)


def applied_ids(emulator: EmulatorServer) -> Counter[str]:
    """How many times each external_id was applied, over every 2xx in the ledger (dropped included)."""
    seen: Counter[str] = Counter()
    for entry in emulator.ledger():
        for a in entry["applied"]:
            ident = a.get("identifier", {})
            seen[str(ident.get("external_id") or ident.get("external_user_id"))] += 1
    return seen


def attrs(n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"external_id": f"u{i}", "plan": f"p{i}", **extra} for i in range(start, start + n)]


# ---------------------------------------------------------------------------------------------- bulk


def test_bulk_delivers_every_object_exactly_once(emulator: EmulatorServer, tmp_path: Path) -> None:
    pipeline = make_pipeline(concurrency=8)
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(1000)))
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(500, start=1000)))
    writer.close()
    assert rows(report) == {"delivered": 1500, "rejected": 0, "failed": 0, "skipped": 0}
    stats = emulator.stats()
    assert stats["objects_applied"]["attributes"] == 1500
    assert stats["requests"]["/users/track"] == {"201": 14 + 7}  # ceil(1000/75) + ceil(500/75)
    assert applied_ids(emulator) == Counter({f"u{i}": 1 for i in range(1500)})
    assert report.requests["users_track"]["objects"] == 1500
    assert emulator.user("external_id", "u1234")["attributes"]["plan"] == "p1234"


def test_per_object_errors_reject_exactly_those_rows(emulator: EmulatorServer, tmp_path: Path) -> None:
    objects = attrs(200)
    bad = {3, 74, 75, 150, 199}
    for i in bad:
        objects[i]["email"] = f"not-an-email-{i}"
    pipeline = make_pipeline(concurrency=4)
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": 195, "rejected": 5, "failed": 0, "skipped": 0}
    got = rejects_file(report)
    assert sorted(int(r["_row_number"]) for r in got) == sorted(i + 2 for i in bad)
    for r in got:
        assert r["_stage"] == "destination" and r["_rule"] == "braze.attributes" and r["_reason"] == ERR_EMAIL
        assert r["id"] == f"row{int(r['_row_number']) - 2}"  # the row's own source values
    applied = applied_ids(emulator)
    assert set(applied) == {f"u{i}" for i in range(200) if i not in bad}
    assert all(emulator.user("external_id", f"u{i}") is None for i in bad)


def test_request_where_braze_names_every_object_is_rejected_without_splitting(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    objects = [{"external_id": f"u{i}", "email": "nope"} for i in range(10)]
    pipeline = make_pipeline()
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": 0, "rejected": 10, "failed": 0, "skipped": 0}
    assert emulator.stats()["requests"]["/users/track"] == {"400": 1}
    assert {r["_rule"] for r in rejects_file(report)} == {"braze.attributes"}


def test_poison_recipient_is_isolated_and_no_good_row_is_lost(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """One bad recipient makes Braze refuse the whole /canvas/trigger/send; splitting isolates it."""
    recipients: list[dict[str, Any]] = [
        {"external_user_id": f"u{i}", "send_to_existing_only": False, "attributes": {"plan": "x"}}
        for i in range(120)
    ]
    recipients[37] = {"send_to_existing_only": False, "attributes": {"plan": "x"}}  # no identifier at all
    keys = [f"external_id:u{i}" for i in range(120)]
    pipeline = make_pipeline("canvas_trigger", concurrency=4)
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("canvas_trigger", recipients, keys))
    writer.close()
    assert rows(report) == {"delivered": 119, "rejected": 1, "failed": 0, "skipped": 0}
    (rej,) = rejects_file(report)
    assert (rej["_row_number"], rej["_rule"]) == ("39", "braze.request")
    assert rej["_reason"].startswith("HTTP 400")
    sent = Counter(
        r["identifier"].get("external_user_id") for d in emulator.dispatches() for r in d["recipients"]
    )
    assert sent == Counter({f"u{i}": 1 for i in range(120) if i != 37})


def test_oversized_object_is_rejected_alone(emulator: EmulatorServer, tmp_path: Path) -> None:
    """An object over Braze's 4 MB body limit gets 413 and is rejected; the objects around it are delivered."""
    objects = attrs(150)
    objects[80]["blob"] = "x" * (4 * 1024 * 1024 + 10)
    pipeline = make_pipeline(max_request_bytes=4_000_000)
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": 149, "rejected": 1, "failed": 0, "skipped": 0}
    (rej,) = rejects_file(report)
    assert rej["_row_number"] == "82" and rej["_rule"] == "braze.request" and "413" in rej["_reason"]
    assert set(applied_ids(emulator)) == {f"u{i}" for i in range(150) if i != 80}


def test_429_storm_and_5xx_still_deliver_every_row_once(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    # Each injected 429 says "retry after 1 s" and pauses the shared bucket, so keep their number small.
    server = emulator_factory(faults={"429": 0.15, "500": 0.1, "503": 0.1}, seed=3)
    retry = {**FAST_RETRY, "max_attempts": 12}  # 0.35 ** 12: no request should exhaust its retries
    pipeline = make_pipeline("events", concurrency=8, max_objects_per_request=50, retry=retry)
    events = [{"external_id": f"u{i}", "name": "bought", "time": "2024-01-01T00:00:00Z"} for i in range(600)]
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("events", events))
    writer.close()
    assert rows(report) == {"delivered": 600, "rejected": 0, "failed": 0, "skipped": 0}
    statuses = server.stats()["requests"]["/users/track"]
    assert (
        statuses["201"] == 12
        and statuses.get("429", 0) > 0
        and statuses.get("500", 0) + statuses.get("503", 0) > 0
    )
    assert applied_ids(server) == Counter({f"u{i}": 1 for i in range(600)})
    assert report.retries > 0


def test_dropped_after_apply_with_on_ambiguous_fail_is_unknown(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = emulator_factory(faults={"drop": 0.3}, seed=5)
    pipeline = make_pipeline("events", concurrency=4, max_objects_per_request=10, on_ambiguous="fail")
    events = [{"external_id": f"u{i}", "name": "e", "time": "2024-01-01T00:00:00Z"} for i in range(200)]
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("events", events))
    writer.close()
    dropped = [e for e in server.ledger() if e["dropped"]]
    assert dropped, "the seed should drop some requests"
    dropped_ids = {a["identifier"]["external_id"] for e in dropped for a in e["applied"]}
    failed = failed_file(report)
    assert {r["_outcome"] for r in failed} == {"unknown"}
    assert {f"u{int(r['_row_number']) - 2}" for r in failed} == dropped_ids
    assert rows(report) == {
        "delivered": 200 - len(dropped_ids),
        "rejected": 0,
        "failed": len(dropped_ids),
        "skipped": 0,
    }
    assert applied_ids(server) == Counter({f"u{i}": 1 for i in range(200)})  # nothing resent


def test_mixed_faults_every_row_accounted_once(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """5xx, drops and slow replies together; a few retries only, so some rows do fail.

    Delivered rows were applied exactly once, "unknown" rows were applied exactly once (dropped after
    apply), "failed" rows were never applied. BRAZE_CONNECTOR_SOAK=1 runs 100x the rows.
    """
    n = 3000 * (100 if SOAK else 1)
    # 120+ requests: some surely fail twice in a row (0.4 ** 2 each) and some are dropped (0.1 each).
    faults = {"500": 0.2, "503": 0.2, "drop": 0.1, "slow": 0.05}
    server = emulator_factory(faults=faults, seed=9, slow_ms=20)
    retry = {**FAST_RETRY, "max_attempts": 2}
    pipeline = make_pipeline(
        "events", concurrency=16, on_ambiguous="fail", retry=retry, max_objects_per_request=25
    )
    events = [{"external_id": f"u{i}", "name": "e", "time": "2024-01-01T00:00:00Z"} for i in range(n)]
    writer, report = make_writer(pipeline, server.url, tmp_path)
    for start in range(0, n, 1000):
        writer.submit(stream_of(pipeline), mapped_chunk("events", events[start : start + 1000], offset=start))
    writer.close()
    assert accounted(report) == n and report.rows["skipped"] == report.rows["rejected"] == 0
    by_outcome: dict[str, set[str]] = {"failed": set(), "unknown": set()}
    for r in failed_file(report):
        by_outcome[r["_outcome"]].add(f"u{int(r['_row_number']) - 2}")
    assert report.rows["failed"] == len(by_outcome["failed"]) + len(by_outcome["unknown"])
    assert by_outcome["failed"] and by_outcome["unknown"], "the seed should produce both outcomes"
    applied = applied_ids(server)
    assert set(applied.values()) == {1}  # nothing applied twice
    assert by_outcome["unknown"] <= set(applied) and not by_outcome["failed"] & set(applied)
    assert len(applied) == report.rows["delivered"] + len(by_outcome["unknown"])


def test_bulk_keeps_one_users_updates_in_order(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """One object per request, 8 workers, jittery server: each user's last value in source order wins."""
    server = emulator_factory(**JITTER)
    objects = [{"external_id": f"u{i % 4}", "plan": f"v{i}"} for i in range(80)]
    pipeline = make_pipeline(concurrency=8, max_objects_per_request=1)
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert report.rows["delivered"] == 80
    for u in range(4):
        assert server.user("external_id", f"u{u}")["attributes"]["plan"] == f"v{76 + u}"


def test_bulk_input_sorted_by_user_packs_runs_whole_and_keeps_order(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """Runs of 4 objects per user: grouped requests of 75, 75, 74 (a run split to fill a request, chains of at
    most 3 requests, delivery/bins.py), 9 in all; each user's last value wins."""
    server = emulator_factory(**JITTER)
    objects = [{"external_id": f"u{i // 4}", "plan": f"v{i}"} for i in range(600)]
    pipeline = make_pipeline(concurrency=8)
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": 600, "rejected": 0, "failed": 0, "skipped": 0}
    assert server.stats()["requests"]["/users/track"] == {"201": 9}  # 2 x (75 + 75 + 74) + 75 + 75 + 2
    assert applied_ids(server) == Counter({f"u{u}": 4 for u in range(150)})
    for u in range(150):
        assert server.user("external_id", f"u{u}")["attributes"]["plan"] == f"v{4 * u + 3}"


def test_dropped_after_apply_with_on_ambiguous_retry_resends_attribute_sets(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """Plain attribute sets are idempotent: a dropped connection is retried, every row ends delivered."""
    server = emulator_factory(faults={"drop": 0.2}, seed=5)
    retry = {**FAST_RETRY, "max_attempts": 10}  # 0.2 ** 10: no request should be dropped every time
    pipeline = make_pipeline(concurrency=4, max_objects_per_request=10, on_ambiguous="fail", retry=retry)
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(400)))
    writer.close()
    assert rows(report) == {"delivered": 400, "rejected": 0, "failed": 0, "skipped": 0}
    applied = applied_ids(server)
    assert set(applied) == {f"u{i}" for i in range(400)} and max(applied.values()) > 1  # at-least-once


def test_live_activity_one_update_per_request(emulator: EmulatorServer, tmp_path: Path) -> None:
    updates: list[dict[str, Any]] = [
        {"app_id": "app", "activity_id": f"game{i % 2}", "content_state": {"score": i}} for i in range(6)
    ]
    del updates[4]["content_state"]
    pipeline = make_pipeline("live_activity", concurrency=3)
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(
        stream_of(pipeline), mapped_chunk("live_activity", updates, [u["activity_id"] for u in updates])
    )
    writer.close()
    assert rows(report) == {"delivered": 5, "rejected": 1, "failed": 0, "skipped": 0}
    assert emulator.stats()["requests"]["/messages/live_activity/update"] == {"201": 5, "400": 1}
    (rej,) = rejects_file(report)
    assert (rej["_row_number"], rej["_rule"]) == ("6", "braze.request")
    assert "content_state" in rej["_reason"]


def test_paused_canvas_notice_becomes_one_warning(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = emulator_factory(canvases={"cv-1": "paused"})
    recipients = [{"external_user_id": f"u{i}"} for i in range(120)]
    pipeline = make_pipeline("canvas_trigger")
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(
        stream_of(pipeline), mapped_chunk("canvas_trigger", recipients, [f"u{i}" for i in range(120)])
    )
    writer.close()
    assert report.rows["delivered"] == 120
    assert server.stats()["requests"]["/canvas/trigger/send"] == {"201": 3}
    assert len(report.warnings) == 1 and "paused" in report.warnings[0]


def test_wrong_endpoint_path_fails_rows_without_splitting(emulator: EmulatorServer, tmp_path: Path) -> None:
    pipeline = make_pipeline()
    writer, report = make_writer(pipeline, emulator.url + "/wrong-prefix", tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(100)))
    writer.close()
    assert rows(report) == {"delivered": 0, "rejected": 0, "failed": 100, "skipped": 0}
    assert sum(emulator.stats()["requests"]["/wrong-prefix/users/track"].values()) == 2
    assert {r["_status"] for r in failed_file(report)} == {"404"}


# ---------------------------------------------------------------------------------------------- sync


def test_sync_keeps_each_users_order_and_confirms_profiles(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = emulator_factory(**JITTER)
    users, per_user = 6, 8
    objects = [{"external_id": f"u{i % users}", "plan": f"v{i}"} for i in range(users * per_user)]
    pipeline = make_pipeline(concurrency=6, confirm_profiles=True)
    writer, report = make_writer(pipeline, server.url, tmp_path, mode="sync")
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": 48, "rejected": 0, "failed": 0, "skipped": 0}
    assert server.stats()["requests"]["/users/track/sync"] == {"201": 48}
    last = users * (per_user - 1)
    for u in range(users):
        assert server.user("external_id", f"u{u}")["attributes"]["plan"] == f"v{last + u}"
    assert report.confirmed_count == 48

    report.add_read(48)
    report.finish()
    lines = [orjson.loads(x) for x in (report.report_dir / "confirmed.jsonl").read_bytes().splitlines()]
    by_row = {x["row"]: x["profile"] for x in lines}
    assert by_row[2] == {"external_id": "u0", "custom_attributes": {"plan": "v0"}}


def test_sync_events_last_time_follows_source_order(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = emulator_factory(**JITTER)
    events = [
        {"external_id": f"u{i % 3}", "name": "visit", "time": f"2024-01-01T00:{i:02d}:00Z"} for i in range(30)
    ]
    pipeline = make_pipeline("events", concurrency=6)
    writer, report = make_writer(pipeline, server.url, tmp_path, mode="sync")
    writer.submit(stream_of(pipeline), mapped_chunk("events", events))
    writer.close()
    assert report.rows["delivered"] == 30
    for u in range(3):
        agg = server.user("external_id", f"u{u}")["custom_events"]["visit"]
        assert agg["count"] == 10 and agg["last"].startswith(f"2024-01-01T00:{27 + u:02d}:00")
    # `last` is a max, so the ledger (in apply order) is what shows that no event overtook an earlier one.
    applied: dict[str, list[str]] = {}
    for entry in server.ledger():
        for a in entry["applied"]:
            applied.setdefault(a["identifier"]["external_id"], []).append(a["object"]["time"])
    assert applied == {f"u{u}": [e["time"] for e in events if e["external_id"] == f"u{u}"] for u in range(3)}


def test_sync_invalid_object_is_rejected(emulator: EmulatorServer, tmp_path: Path) -> None:
    objects = attrs(3)
    objects[1]["email"] = "bad"
    pipeline = make_pipeline()
    writer, report = make_writer(pipeline, emulator.url, tmp_path, mode="sync")
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": 2, "rejected": 1, "failed": 0, "skipped": 0}
    (rej,) = rejects_file(report)
    assert (rej["_row_number"], rej["_rule"], rej["_reason"]) == ("3", "braze.attributes", ERR_EMAIL)


# ---------------------------------------------------------------------------------------------- aborts


@pytest.mark.parametrize("concurrency", [4, 64])
def test_401_aborts_and_accounts_for_every_row(emulator: EmulatorServer, tmp_path: Path, concurrency: int) -> None:
    """A refused key costs one request whatever the concurrency: the others wait for the first answer
    (FirstAnswer), then are not sent."""
    pipeline = make_pipeline(concurrency=concurrency)
    writer, report = make_writer(pipeline, emulator.url, tmp_path, key="wrong-key")
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(500)))
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(100, start=500)))
    with pytest.raises(AuthError) as info:
        writer.close()
    assert "wrong-key" not in str(info.value)
    assert rows(report) == {"delivered": 0, "rejected": 0, "failed": 0, "skipped": 600}
    assert set(report.skipped_by_reason) == {"run aborted: API key refused (HTTP 401)"}
    stats = emulator.stats()
    assert stats["objects_applied"]["attributes"] == 0
    assert set(stats["requests"]["/users/track"]) == {"401"}
    assert stats["requests"]["/users/track"] == {"401": 1}  # the first request alone was on the wire


def test_403_access_denied_aborts(emulator_factory: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    server = emulator_factory(api_keys=("test-key", "synconly:users.track.sync"))
    pipeline = make_pipeline(concurrency=16)
    writer, report = make_writer(pipeline, server.url, tmp_path, key="synconly")
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(300)))
    with pytest.raises(AuthError):
        writer.close()
    assert rows(report) == {"delivered": 0, "rejected": 0, "failed": 0, "skipped": 300}
    assert set(report.skipped_by_reason) == {"run aborted: access denied (HTTP 403)"}
    # like a 401, the key's first answer refused it: the other requests waited for it and were not sent
    assert server.stats()["requests"]["/users/track"] == {"403": 1}


def test_unreachable_destination_aborts(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retry = {"max_attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.01, "max_elapsed_s": 2}
    pipeline = make_pipeline(concurrency=2, retry=retry, timeout_s=2)
    writer, report = make_writer(pipeline, f"http://127.0.0.1:{port}", tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(1000)))
    with pytest.raises(DestinationUnreachable):
        writer.close()
    assert accounted(report) == 1000
    assert report.rows["delivered"] == 0 and report.rows["failed"] >= 3 * 75
    assert report.skipped_by_reason["run aborted: destination unreachable"] == report.rows["skipped"] > 0
    outcomes = Counter(r["_outcome"] for r in failed_file(report))
    # every row is listed for a retry run: those that failed, and those never sent after the abort
    assert outcomes == {"failed": report.rows["failed"], "not_sent": report.rows["skipped"]}
    assert report.not_sent == report.rows["skipped"]


def test_dry_run_sends_nothing_and_keeps_sample_bodies(emulator: EmulatorServer, tmp_path: Path) -> None:
    pipeline = make_pipeline(sample_bodies=2)
    writer, report = make_writer(pipeline, None, tmp_path, dry_run=True)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", attrs(300)))
    writer.close()
    assert rows(report) == {"delivered": 0, "rejected": 0, "failed": 0, "skipped": 300}
    assert report.skipped_by_reason == {"dry run": 300}
    assert emulator.stats()["requests"] == {}

    bodies = [orjson.loads(p.read_bytes()) for p in report.sample_files]
    assert len(bodies) == 2
    assert [o["external_id"] for o in bodies[0]["attributes"]] == [f"u{i}" for i in range(75)]


def test_row_refs_survive_non_contiguous_indices(emulator: EmulatorServer, tmp_path: Path) -> None:
    """MappedChunk.indices may skip rows (mapper rejects): rejects point at the chunk row, not the object."""
    n = 6
    table = pa.table({"id": [f"row{i}" for i in range(n)]})
    chunk = Chunk(FILE, table, [10, 11, 13, 14, 20, 21])
    objects = [{"external_id": "a", "email": "bad"}, {"external_id": "b", "plan": "x"}]
    mapped = MappedChunk("attributes", chunk, objects, [2, 5], ["external_id:a", "external_id:b"])
    pipeline = make_pipeline()
    writer, report = make_writer(pipeline, emulator.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped)
    writer.close()
    (rej,) = rejects_file(report)
    assert (rej["_row_number"], rej["id"]) == ("13", "row2")
    assert mapped.ref(0) == RowRef(FILE, 13)
    assert report.rows["delivered"] == 1
