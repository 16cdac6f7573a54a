"""Assemble the report.json document from a run's counters (ReportCounters)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.report.counters import ReportCounters

EXIT_MEANINGS = {
    0: "success: every valid row delivered, rejects under the threshold",
    1: "rows rejected over the threshold, or rows not delivered",
    2: "usage or pipeline-file error",
    3: "destination fatal: bad API key, unreachable after retries, or rate limit spent beyond the retry budget",
    4: "stopped by a signal or the caller; unprocessed rows skipped and listed in failed.csv as not_sent",
    130: "stopped at once by a second SIGINT; rows in flight listed as unknown, rows not read not listed",
    143: "stopped at once by a second SIGTERM; rows in flight listed as unknown, rows not read not listed",
}
# Exit code 0 of a dry run or validate: nothing was sent, so "delivered" does not apply.
OFFLINE_SUCCESS = "success: nothing sent (dry run or validate), rejects under the threshold"
# Exit code 1 when a mirror stream's deletions were refused (delivery/mirror.py): no row was lost, so the
# meaning above would send the reader looking for rejects that are not there.
REFUSED_MEANING = ("deletion of users gone from the source refused by the max_delete_fraction guard (its warning "
                   "gives the numbers; run again with --allow-deletes N to allow them)")  # fmt: skip
MAX_TIMELINE_POINTS = 600


def exit_meaning(code: int, removed: dict[str, Any] | None, rows_failed: bool | str,
                 table_checks: Iterable[dict[str, Any]] = ()) -> str:  # fmt: skip
    """The words for an exit code; `rows_failed`: rows were rejected over the threshold or not delivered
    (a string: the words naming the figures, rows_cause()).

    Exit code 1 has three causes (rows, a failed table check, a refused deletion guard); name the ones that
    happened, so the reader is not sent looking for rejects that are not there.
    """
    if code != 1:
        return EXIT_MEANINGS.get(code, "unknown")
    causes = [REFUSED_MEANING] if any(m.get("refused") for m in (removed or {}).values()) else []
    if rows_failed:
        causes.append(rows_failed if isinstance(rows_failed, str) else EXIT_MEANINGS[1])
    checks = sorted({f"{c['stream']}: {c['expectation']}" + (f" on '{c['column']}'" if c.get("column") else "")
                     for c in table_checks if not c["success"] and c["action"] == "fail"})  # fmt: skip
    if checks:
        causes.append(f"table check failed ({', '.join(checks)}; see table_checks)")
    if not causes:
        return EXIT_MEANINGS[1]
    return "; also ".join(causes)


def report_meaning(r: ReportCounters, exit_code: int | None = None) -> str:
    """exit_meaning() of a run's report (its exit code unless another is given)."""
    code = r.exit_code if exit_code is None else exit_code
    rows: bool | str = rows_cause(r.rows, r.max_reject_fraction) if r.compute_exit_code() == 1 else False
    left = left_out_cause(r.retry)
    if left:
        rows = f"{rows}; {left}" if rows else left
    if code == 3 and (cause := fatal_cause(r)):
        return f"destination fatal: {cause}"
    if code == 0 and r.dry_run:
        return OFFLINE_SUCCESS
    return exit_meaning(code, r.removed, rows, r.table_checks)


def fatal_cause(r: ReportCounters) -> str:
    """Which of exit code 3's causes ended the run: the writer's abort reason its unsent rows were skipped
    with, or the sync probe's refusal of the key; "" when neither says (the generic meaning stands)."""
    for reason in r.skipped_by_reason:
        if reason.startswith("run aborted: "):
            return reason.removeprefix("run aborted: ")
    if any(p["status"] == 401 for p in r.probes):
        return "API key refused (HTTP 401) by the sync probe, before a row was read"
    return ""


def left_out_cause(retry: dict[str, Any] | None) -> str:
    """Why a retry run exits 1 although all it sent was delivered: failed rows it did not send (outcome unknown
    without --include-unknown, or of no stream of this pipeline); "" when none were left out."""
    if not retry:
        return ""
    unknown, orphans = int(retry.get("unknown_outcome_excluded") or 0), int(retry.get("no_stream") or 0)
    parts = ([f"{unknown:,} of outcome unknown (add --include-unknown to send them)"] if unknown else []) + (
        [f"{orphans:,} of no stream of this pipeline"] if orphans else [])  # fmt: skip
    if not parts:
        return ""
    return f"{unknown + orphans:,} failed row(s) of {retry.get('failed_file')} left out of this retry: {', '.join(parts)}"


def rows_cause(rows: dict[str, int], max_reject_fraction: float) -> str:
    """Why the rows make exit code 1, in figures (e.g. "23.6 % of rows rejected (236 of 1,000), above
    max_reject_fraction 5 %"): the general words send the reader to count for themselves."""
    read, rejected, failed = rows["read"], rows["rejected"], rows["failed"]
    causes = []
    if read and rejected / read > max_reject_fraction:
        causes.append(f"{rejected / read * 100:.1f} % of rows rejected ({rejected:,} of {read:,}), above "
                      f"max_reject_fraction {max_reject_fraction * 100:g} %")  # fmt: skip
    if failed:
        causes.append(f"{failed:,} row(s) not delivered (listed in failed.csv)")
    return "; ".join(causes) or EXIT_MEANINGS[1]


def removed_outcome(m: dict[str, Any], *, dry_run: bool) -> str:
    """What became of a decided mirror stream's removed users, in words (the summary and report.html).

    The counts alone read "deleted 0, not deleted 0" whether the users were reported, refused by the guard or
    deleted: say which.
    """
    removed = m["removed"] or 0
    if not removed:
        return "none removed"
    if m["on_removed"] == "report":
        return f"{removed:,} reported (on_removed: report), none deleted"
    if m["refused"]:
        limit = f" (limit {m['limit']:,})" if m.get("limit") is not None else ""
        return f"{removed:,} removed, deletion refused by the guard{limit}: listed in removed.csv"
    if dry_run:
        return f"{removed:,} removed, would be deleted (dry run: nothing sent)"
    failed = m["delete_failed"]
    tail = " (they stay in the state; the next run tries again)" if failed else ""
    return f"{m['deleted']:,} deleted, {failed:,} failed{tail}"


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z") if dt else None


def build_timeline(per_second: dict[int, list[int]]) -> tuple[list[list[int]], int]:
    """[[second_offset, objects, requests], ...] with gaps filled; binned when the run is long."""
    if not per_second:
        return [], 1
    span = max(per_second) + 1
    bin_s = max(1, math.ceil(span / MAX_TIMELINE_POINTS))
    points = [[i * bin_s, 0, 0] for i in range(math.ceil(span / bin_s))]
    for sec, (objects, requests) in per_second.items():
        points[sec // bin_s][1] += objects
        points[sec // bin_s][2] += requests
    return points, bin_s


def _rate_limit(r: ReportCounters, duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for endpoint in sorted(set(r.rate_limits) | set(r.per_second_by_endpoint)):
        counts: Counter[int] = r.per_second_by_endpoint.get(endpoint, Counter())
        peak = max(counts.values(), default=0)
        limit = r.rate_limits.get(endpoint)
        # The mean over the seconds from this endpoint's first request to its last (the same one-second
        # bins as the peak, so the mean never exceeds it).
        span = (max(counts) - min(counts) + 1) if counts else 0
        out[endpoint] = {
            "limit_per_s": limit,
            "peak_requests_per_s": peak,
            "mean_requests_per_s": round(sum(counts.values()) / span, 3) if span else 0.0,
            "utilisation": round(peak / limit, 3) if limit else None,
        }
    return out


def _rows(r: ReportCounters) -> dict[str, int]:
    """The row counts, plus `valid`: rows that passed every local check (parse, expectations, contract).

    Valid rows are then delivered, rejected by Braze (stage destination), failed or skipped.
    """
    local_rejects = sum(n for stage, n in r.by_stage.items() if stage != "destination")
    valid = r.rows["read"] - local_rejects - r.unchecked
    return {**r.rows, "valid": valid, "possibly_duplicated": r.possibly_duplicated}


def _name(path: Path | None) -> str | None:
    return None if path is None else str(path)


def build_document(r: ReportCounters) -> dict[str, Any]:
    """The report.json document (the caller holds the report's lock)."""
    duration = r.duration_s if r.duration_s is not None else round(r.elapsed(), 3)
    objects = r.objects_ok
    total = sum(ep["requests"] for ep in r.requests.values())
    timeline, bin_s = build_timeline(r.timeline)
    # Requests/s over the sending window alone (first request to last answer), not the reading before it.
    sending = (r.last_answer_s - r.first_sent_s) if r.first_sent_s is not None and r.last_answer_s else 0.0
    lat = r.latency
    by_endpoint = {
        name: {**{k: v for k, v in ep.items() if k != "by_status"}, "by_status": dict(ep["by_status"])}
        for name, ep in sorted(r.requests.items())
    }
    exit_code = r.exit_code
    files = {
        "report_json": str(r.report_dir / "report.json"),
        "report_html": str(r.report_dir / "report.html"),
        "rejects": _name(r.rejects.file),  # None: nothing was rejected (or failed), no file was written
        "failed": _name(r.failed.file),
        "confirmed": str(r.report_dir / "confirmed.jsonl") if r.confirmed_count else None,
        "possibly_duplicated": str(r.duplicated.path) if r.duplicated is not None else None,
        "removed": next((s["file"] for s in (r.removed or {}).values() if s.get("file")), None),
    }
    doc: dict[str, Any] = {
        "run_id": r.run_id,
        "pipeline": r.pipeline_name,
        "started_at": _iso(r.started),
        "finished_at": _iso(r.finished),
        "duration_s": duration,
        "dry_run": r.dry_run,
        "mode": r.mode,
        "mode_reason": r.mode_reason,
        "exit_code": exit_code,
        "exit_meaning": report_meaning(r, exit_code),
        "destination": dict(r.destination),
        "rows": _rows(r),
        "invariant_ok": r.invariant_ok,
        "max_reject_fraction": r.max_reject_fraction,
        "rejects": {
            "by_stage": dict(r.by_stage.most_common()),
            "by_rule": dict(r.by_rule.most_common()),
            "file": files["rejects"],
            "sample": list(r.sample),
        },
        "failed": {"count": r.rows["failed"], "not_sent": r.not_sent, "unknown": r.unknown, "file": files["failed"]},
        "skipped": {"by_reason": dict(r.skipped_by_reason.most_common()), "not_sent": r.not_sent},
        "possibly_duplicated": {
            "count": r.possibly_duplicated,
            "by_reason": dict(r.duplicated_by_reason.most_common()),
            "file": files["possibly_duplicated"],
        },
        "requests": {
            "total": total,
            "by_endpoint": by_endpoint,
            "by_status": dict(sorted(r.by_status.items())),
            "retries": r.retries,
            "retry_reasons": dict(r.retry_reasons.most_common()),
            "rate_limited": r.rate_limited,
            "http_engine": r.http_engine,
            "probes": [dict(p) for p in r.probes],
        },
        "throughput": {
            "objects_per_s": round(objects / duration, 3) if duration else 0.0,
            "requests_per_s": round(total / duration, 3) if duration else 0.0,
            "sending_s": round(sending, 3),
            "requests_per_s_sending": round(total / sending, 3) if sending else 0.0,
            "timeline_bin_s": bin_s,
            "timeline": timeline,
        },
        "latency_ms": {
            "p50": lat.percentile(50),
            "p95": lat.percentile(95),
            "p99": lat.percentile(99),
            "max": round(lat.max, 3) if lat.n else None,
        },
        "rate_limit": _rate_limit(r, duration),
        "table_checks": list(r.table_checks),
        "warnings": list(r.warnings),
        "streams": [dict(s) for s in r.streams.values()],
        "confirmed": r.confirmed_count,
        "sample_requests": [str(p) for p in r.sample_files],
        "emulator": r.emulator,
        "retry": r.retry,
        "delta": r.delta,
        "removed": r.removed,
        "resume": r.resume,
        "stop": r.stop,
        "shared_limits": r.shared_limits,
        "partition": r.partition,
        "alerts": r.alerts,
        "files": files,
    }
    return doc
