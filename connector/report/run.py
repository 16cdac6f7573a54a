"""RunReport: thread-safe accounting of one run, feeding report.json, report.html and the row files."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from connector.errors import ConnectorError
from connector.records import Failed, Rejected, RowRef
from connector.report.counters import ReportCounters
from connector.report.document import build_document, report_meaning
from connector.report.masking import mask_sample
from connector.report.sinks import DuplicatedSink, to_text

log = logging.getLogger(__name__)

SAMPLE_SIZE = 50


class ReportInvariantError(ConnectorError):
    """The row accounting does not add up: read != delivered + rejected + failed + skipped (a bug)."""


class RunFailed(ConnectorError):
    """The run did not succeed (exit code not 0): rows rejected over the threshold, not delivered, a failed
    table check, a stop, ... The finished, written report is `.report`; `.exit_code` is its exit code."""

    def __init__(self, report: RunReport) -> None:
        r = report.rows
        meaning = report_meaning(report)
        failed, rejects = report.failed.file, report.rejects.file
        super().__init__(
            f"pipeline {report.pipeline_name} exit code {report.exit_code} ({meaning}): {r['failed']} of "
            f"{r['read']} rows not delivered" + (f" (see {failed})" if failed else "") + f", {r['rejected']} "
            "rejected (" + (f"see {rejects}; " if rejects else "") + f"threshold {report.max_reject_fraction:.1%}); "
            f"report: {report.report_dir / 'report.json'}"
        )
        self.report = report
        self.exit_code = report.exit_code


class RunReport(ReportCounters):
    """Everything that happened in one run; recorders are thread-safe and cheap."""

    # ---- row accounting -------------------------------------------------------------------------
    def _count(self, key: str, n: int, stream: str | None) -> None:
        self.rows[key] += n
        if stream is not None:
            self._stream(stream)[key] += n

    def _stream(self, name: str) -> dict[str, Any]:
        return self.streams.setdefault(
            name,
            {
                "name": name,
                "kind": None,
                "source": None,
                "read": 0,
                "delivered": 0,
                "rejected": 0,
                "failed": 0,
                "skipped": 0,
            },
        )

    def add_stream(self, name: str, kind: str, source: str, masked: frozenset[str] = frozenset()) -> None:
        """Declare a stream (its per-stream counts start at zero) and the columns its samples mask."""
        with self._lock:
            self._stream(name).update(kind=kind, source=source)
            self.masked[name] = masked

    def add_read(self, n: int, stream: str | None = None) -> None:
        """Count n source records read (including records that failed to parse)."""
        with self._lock:
            self._count("read", n, stream)

    def add_delivered(self, n: int, stream: str | None = None) -> None:
        """Count n rows acknowledged by the destination (or accepted in a dry run)."""
        with self._lock:
            self._count("delivered", n, stream)

    def add_skipped(self, n: int, reason: str, stream: str | None = None) -> None:
        """Count n rows deliberately not sent (e.g. unchanged since the last sync), by reason (a reason with
        no row is not kept: a first delta run would list "0 unchanged" in the summary and report.json)."""
        if not n:
            return
        with self._lock:
            self._count("skipped", n, stream)
            self.skipped_by_reason[reason] += n

    def add_delta(self, stream: str, counts: Any) -> None:
        """Delta sync's decision on a chunk: rows `added` (a key the state did not know), `changed` (sent
        with what differs) and `unchanged` (skipped), kept per stream under `delta`; `repeated`: rows whose
        user has an earlier row in the same chunk (attributes), when there are any."""
        with self._lock:
            kept = self._stream(stream).setdefault("delta", {"added": 0, "changed": 0, "unchanged": 0})
            for k in ("added", "changed", "unchanged"):
                kept[k] += getattr(counts, k)
            repeated = getattr(counts, "repeated", 0)
            if repeated:  # listed only when some user recurs (the summary explains what it costs)
                kept["repeated"] = kept.get("repeated", 0) + repeated

    def add_rejects(self, rejects: list[Rejected], stream: str | None = None) -> None:
        """Stream rejected rows to the rejects file and count them by stage and rule."""
        if not rejects:
            return
        rows = [(r.values, [r.ref.file, r.ref.where, r.stage, r.rule, r.column, r.reason]) for r in rejects]
        self.rejects.write(rows)
        with self._lock:
            self._count("rejected", len(rejects), stream)
            for r in rejects:
                self.by_stage[r.stage] += 1
                self.by_rule[r.rule] += 1
                self._keep_sample(r, stream)

    def _keep_sample(self, r: Rejected, stream: str | None = None) -> None:
        full = len(self.sample) >= SAMPLE_SIZE
        if full and r.rule in self._sample_rules:
            return
        value = r.values.get(r.column) if r.column else r.values.get("_raw")
        text = to_text(value)
        entry: dict[str, Any] = {"file": r.ref.file, "row": r.ref.where, "stage": r.stage, "rule": r.rule,
                                 "column": r.column, "value": text, "reason": r.reason}  # fmt: skip
        masked = self.masked.get(stream, frozenset()) if stream else frozenset().union(*self.masked.values())
        entry = mask_sample(entry, masked)
        shown = entry["value"]
        if isinstance(shown, str) and len(shown) > 200:
            entry["value"] = shown[:200] + "…"
        if full:
            # Make room for a rule not yet shown by replacing the last entry of the most common rule.
            top = self._sample_rules.most_common(1)[0][0]
            idx = max(i for i, s in enumerate(self.sample) if s["rule"] == top)
            self._sample_rules[top] -= 1
            self.sample[idx] = entry
        else:
            self.sample.append(entry)
        self._sample_rules[r.rule] += 1

    def add_failed(self, failed: list[Failed], stream: str | None = None) -> None:
        """Stream rows that could not be delivered to failed.csv (a later run can retry them)."""
        if not failed:
            return
        self.failed.write([(f.values, [f.ref.file, f.ref.where, f.status, f.outcome, f.error, stream or ""])
                           for f in failed])  # fmt: skip
        with self._lock:
            self._count("failed", len(failed), stream)
            self.unknown += sum(f.outcome == "unknown" for f in failed)

    def add_not_sent(self, rows: list[tuple[RowRef, dict[str, Any]]], reason: str, stream: str | None = None,
                     *, checked: bool = True) -> None:  # fmt: skip
        """Rows a stopped run did not send: counted skipped (with the reason) and written to the failed file
        with outcome "not_sent", so a retry run (--retry-failed) picks them up; they are safe to send."""
        if not rows:
            return
        self.failed.write([(values, [ref.file, ref.where, None, "not_sent", reason, stream or ""])
                           for ref, values in rows])  # fmt: skip
        self.add_skipped(len(rows), reason, stream)
        with self._lock:
            self.not_sent += len(rows)
            if not checked:  # read after the run stopped: never validated, so not counted as valid
                self.unchecked += len(rows)

    def add_confirmed(self, ref: RowRef, profile: dict[str, Any]) -> None:
        """Append a profile confirmed by /users/track/sync to confirmed.jsonl."""
        line = orjson.dumps({"file": ref.file, "row": ref.where, "profile": profile}, default=str) + b"\n"
        with self._lock:
            if self._confirmed is None:
                self._confirmed = (self.report_dir / "confirmed.jsonl").open("wb")
            self._confirmed.write(line)
            self.confirmed_count += 1

    def progress_counts(self) -> dict[str, int]:
        """Rows read, delivered, rejected, skipped, failed and requests sent so far (for the progress display)."""
        with self._lock:
            out = dict(self.rows)
            out["requests"] = sum(int(ep["requests"]) for ep in self.requests.values())
        return out

    def add_possibly_duplicated(self, refs: list[RowRef], reason: str, stream: str | None = None) -> None:
        """Rows Braze may have applied more than once (a resend after a dropped attempt, or a resumed row
        that had no answer): counted, and listed in possibly_duplicated.csv. Their outcome is counted apart."""
        if not refs:
            return
        with self._lock:
            if self.duplicated is None:
                self.duplicated = DuplicatedSink(self.report_dir)
            self.possibly_duplicated += len(refs)
            self.duplicated_by_reason[reason] += len(refs)
            sink = self.duplicated
        sink.write([({}, [ref.file, ref.where, stream or "", reason]) for ref in refs])

    # ---- requests -------------------------------------------------------------------------------
    def record_request(
        self,
        endpoint: str,
        status: int,
        latency_ms: float,
        objects: int,
        retried: int = 0,
        rate_limited: int = 0,
    ) -> None:
        """Record one completed request (its final status) with its latency and object count."""
        now = max(0.0, self.elapsed())
        with self._lock:
            self._record_request(now, endpoint, status, latency_ms, objects, retried, rate_limited)

    def record_requests(self, answered: list[tuple[str, int, float, int]]) -> None:
        """record_request() for requests answered together: (endpoint, status, latency_ms, objects) each."""
        now = max(0.0, self.elapsed())
        with self._lock:
            for endpoint, status, latency_ms, objects in answered:
                self._record_request(now, endpoint, status, latency_ms, objects, 0, 0)

    def _record_request(self, now: float, endpoint: str, status: int, latency_ms: float, objects: int,
                        retried: int, rate_limited: int) -> None:  # fmt: skip
        """record_request's counting (the caller holds the lock)."""
        sec = int(now)
        started = max(0.0, now - latency_ms / 1000)
        if self.first_sent_s is None or started < self.first_sent_s:
            self.first_sent_s = started
        if self.last_answer_s is None or now > self.last_answer_s:
            self.last_answer_s = now
        ep = self.requests.get(endpoint)
        if ep is None:  # not built per call: a Counter per request was most of this method's cost
            ep = self.requests[endpoint] = {
                "requests": 0, "objects": 0, "by_status": Counter(), "retries": 0, "rate_limited": 0,
            }  # fmt: skip
        code = str(status)
        ep["requests"] += 1
        ep["objects"] += objects
        ep["by_status"][code] += 1
        ep["retries"] += retried
        ep["rate_limited"] += rate_limited + (status == 429)
        self.by_status[code] += 1
        self.retries += retried
        self.rate_limited += rate_limited + (status == 429)
        self.latency.add(latency_ms)
        slot = self.timeline.setdefault(sec, [0, 0])
        ok = objects if 200 <= status < 300 else 0
        self.objects_ok += ok
        slot[0] += ok
        slot[1] += 1
        self.per_second_by_endpoint.setdefault(endpoint, Counter())[sec] += 1

    def record_probe(self, endpoint: str, status: int, latency_ms: float, *, purpose: str, answer: str,
                     decided: str) -> None:  # fmt: skip
        """Record a request that only asks Braze something (the sync-access probe): listed apart in
        `requests.probes`, not counted with the delivery requests (their totals, statuses and latency)."""
        with self._lock:
            self.probes.append({"endpoint": endpoint, "purpose": purpose, "status": status,
                                "latency_ms": round(latency_ms, 3), "answer": answer, "decided": decided})  # fmt: skip

    def record_retry(self, endpoint: str, reason: str) -> None:
        """Record one retry attempt as it happens (reason "rate_limited"/"429" counts as a 429)."""
        with self._lock:
            ep = self.requests.setdefault(
                endpoint,
                {"requests": 0, "objects": 0, "by_status": Counter(), "retries": 0, "rate_limited": 0},
            )
            ep["retries"] += 1
            self.retries += 1
            self.retry_reasons[reason] += 1
            if reason in ("rate_limited", "429"):
                ep["rate_limited"] += 1
                self.rate_limited += 1

    # ---- run facts ------------------------------------------------------------------------------
    def set_mode(self, mode: str, reason: str) -> None:
        """Record the delivery mode chosen and why."""
        with self._lock:
            self.mode, self.mode_reason = mode, reason

    def set_destination(self, kind: str, url: str) -> None:
        """Record where rows went; credentials, query and fragment are stripped from the URL."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        with self._lock:
            self.destination = {
                "kind": kind,
                "url": urlunsplit((parts.scheme, netloc, parts.path, "", "")) or url,
            }

    def set_stopped(self, reason: str, *, immediate: bool, exit_code: int) -> None:
        """Record that a stop cut the run short (`stopped` is then true): why, whether at once, its exit code."""
        with self._lock:
            self.stop = {"reason": reason, "how": "at once" if immediate else "gracefully", "exit_code": exit_code}

    def set_rate_limits(self, limits: dict[str, float]) -> None:
        """Configured limit per endpoint, in requests per second (for the utilisation figures)."""
        with self._lock:
            self.rate_limits.update(limits)

    def add_table_check(
        self,
        stream: str,
        expectation: str,
        column: str | None,
        success: bool,
        observed: Any,
        detail: str,
        action: str,
    ) -> None:
        """Record a table-level expectation result; action is "fail" or "warn"."""
        check = {"stream": stream, "expectation": expectation, "column": column, "success": bool(success)}
        check.update(observed=to_text(observed), detail=detail, action=action)
        with self._lock:
            self.table_checks.append(check)

    def add_warning(self, text: str) -> None:
        """Record a warning shown in the report (also logged)."""
        log.warning("%s", text)
        with self._lock:
            self.warnings.append(text)

    def add_sample_body(self, endpoint: str, body: bytes) -> None:
        """Dry run: keep the first N request bodies under report_dir/sample_requests/."""
        with self._lock:
            if len(self.sample_files) >= self.sample_bodies:
                return
            folder = self.report_dir / "sample_requests"
            folder.mkdir(exist_ok=True)
            safe = "".join(c if c.isalnum() or c == "_" else "_" for c in endpoint)  # stays in the folder
            path = folder / f"{len(self.sample_files) + 1:03d}_{safe}.json"
            self.sample_files.append(path)
        path.write_bytes(body)

    def set_emulator_stats(self, stats: dict[str, Any]) -> None:
        """Attach the local emulator's /_emulator/stats (destination local)."""
        with self._lock:
            self.emulator = dict(stats)

    # ---- end of run -----------------------------------------------------------------------------
    def finish(self, exit_code: int | None = None) -> None:
        """Stamp the end, close the sinks and check read == delivered + rejected + failed + skipped.

        The exit code is the larger of `exit_code` and the one the counts imply (compute_exit_code()).

        Raises:
            ReportInvariantError: the counts do not add up (the report stays writable).
        """
        with self._lock:
            if self.finished is None:
                self.finished = datetime.now(UTC)
                self.duration_s = round(self.elapsed(), 3)
                # Never claim success the counts contradict; a caller's 2 or 3 (fatal) wins over 1.
                self._exit_code = max(exit_code or 0, self.compute_exit_code())
                for sink in (self.rejects, self.failed, self.duplicated):
                    if sink is not None:
                        sink.close()
                if self._confirmed is not None:
                    self._confirmed.close()
            r = self.rows
            self.invariant_ok = r["read"] == r["delivered"] + r["rejected"] + r["failed"] + r["skipped"]
            if not self.invariant_ok:
                self._exit_code = max(self._exit_code or 0, 1)
                raise ReportInvariantError(
                    f"row accounting does not add up: read {r['read']} != delivered {r['delivered']} + rejected "
                    f"{r['rejected']} + failed {r['failed']} + skipped {r['skipped']}"
                )

    def raise_on_failures(self) -> None:
        """For library callers: raise RunFailed when the run did not succeed (exit code not 0)."""
        if self.exit_code:
            raise RunFailed(self)

    def to_dict(self) -> dict[str, Any]:
        """The report.json document."""
        with self._lock:
            return build_document(self)

    def to_json(self) -> bytes:
        """report.json as bytes (orjson, indented, sorted keys)."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def write(self, dir: Path | None = None, *, announce: bool = True) -> dict[str, Path]:
        """Write report.json and report.html (beside the streamed rejects/failed files); return the paths.

        `announce` logs where (off when the report is written again, e.g. with an alert's outcome).
        """
        from connector.report.html import render_html

        out = Path(dir) if dir is not None else self.report_dir
        out.mkdir(parents=True, exist_ok=True)
        for sink in (self.rejects, self.failed, self.duplicated):
            if sink is not None:
                sink.flush()
        data = self.to_dict()
        paths = {"report_json": out / "report.json", "report_html": out / "report.html"}
        paths["report_json"].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        paths["report_html"].write_text(render_html(data, self.recent_runs), encoding="utf-8")
        for name, sink in (("rejects", self.rejects), ("failed", self.failed)):
            if sink.file is not None:
                paths[name] = sink.file
        if self.duplicated is not None:
            paths["possibly_duplicated"] = self.duplicated.path
        if self._confirmed is not None:
            paths["confirmed"] = self.report_dir / "confirmed.jsonl"
        if announce:
            log.info("report written to %s (exit code %d)", paths["report_json"], self.exit_code,
                     extra={"counters": {**data["rows"], "exit_code": self.exit_code}})  # fmt: skip
        return paths
