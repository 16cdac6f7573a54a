"""`report merge`: the reports of a partitioned run's partitions -> one report.json and report.html.

Counts are sums, so the merged invariant (read = delivered + rejected + failed + skipped) holds exactly
when it held in every partition: a partition counts only its own rows (readers/partition.py). The
throughput timeline is re-based on the earliest start. Latency percentiles cannot be added: the merged
report keeps the largest `max` and each partition's percentiles in `partitions`. The rejects and failed
files stay in the partitions' folders (`partitions[].files`); retry each with its own `--partition K/N`.

Refused (ConfigError): a folder without report.json, reports of different pipelines, a report that is not
a partition, partitions of different N, the same partition twice, dry runs mixed with delivering runs.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from connector.errors import ConfigError
from connector.report.document import EXIT_MEANINGS, build_timeline
from connector.report.run import SAMPLE_SIZE

ROW_KEYS = ("read", "delivered", "rejected", "failed", "skipped", "valid", "possibly_duplicated")


def load_report(folder: Path) -> dict[str, Any]:
    """A report folder's report.json (a path to the file itself works too)."""
    path = folder if folder.suffix == ".json" else folder / "report.json"
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no report.json here; give the report folders of a partitioned run") from None
    except (OSError, orjson.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read this report ({e})") from None
    if not isinstance(doc, dict) or "rows" not in doc:
        raise ConfigError(f"{path}: not a braze-connector report.json")
    doc["_dir"] = str(path.parent)
    return doc


def check_partitions(docs: list[dict[str, Any]]) -> int:
    """N, after checking the reports are distinct partitions of one pipeline's run.

    Raises:
        ConfigError: see the module docstring.
    """
    if not docs:
        raise ConfigError("report merge: give at least one report folder")
    names = sorted({str(d["pipeline"]) for d in docs})
    if len(names) > 1:
        raise ConfigError(f"report merge: the reports are of different pipelines ({', '.join(names)}); merge one pipeline's partitions")
    for d in docs:
        if not d.get("partition"):
            raise ConfigError(f"{d['_dir']}: run {d['run_id']} was not a partitioned run (--partition K/N); nothing to merge it with")
    ns = sorted({int(d["partition"]["n"]) for d in docs})
    if len(ns) > 1:
        raise ConfigError(f"report merge: the partitions split the data {' and '.join(map(str, ns))} ways; merge one run's partitions")
    seen: dict[int, str] = {}
    for d in docs:
        k = int(d["partition"]["k"])
        if k in seen:
            raise ConfigError(
                f"report merge: partition {k}/{ns[0]} appears twice ({seen[k]} and {d['_dir']}); the partitions overlap"
            )
        seen[k] = d["_dir"]
    if len({bool(d["dry_run"]) for d in docs}) > 1:
        raise ConfigError("report merge: dry runs and delivering runs cannot be merged")
    return ns[0]


def merge_reports(docs: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The merged report.json document of the partitions' reports (written under `out` by write_merged)."""
    n = check_partitions(docs)
    docs = sorted(docs, key=lambda d: int(d["partition"]["k"]))
    ks = [int(d["partition"]["k"]) for d in docs]
    missing = [k for k in range(1, n + 1) if k not in ks]
    starts = [_time(d["started_at"]) for d in docs]
    t0 = min(starts)
    ends = [_time(d["finished_at"] or d["started_at"]) for d in docs]
    duration = round(max(e.timestamp() for e in ends) - t0.timestamp(), 3)
    rows = {k: sum(int(d["rows"].get(k, 0)) for d in docs) for k in ROW_KEYS}
    invariant = rows["read"] == rows["delivered"] + rows["rejected"] + rows["failed"] + rows["skipped"]
    invariant = invariant and all(d.get("invariant_ok") for d in docs)
    exit_code = max([int(d["exit_code"]) for d in docs] + [0 if invariant else 1])
    warnings = [f"partition {k}/{n}: {w}" for d, k in zip(docs, ks, strict=True) for w in d["warnings"]]
    if missing:
        warnings.insert(0, f"partitions {', '.join(f'{k}/{n}' for k in missing)} are not in this merge: the counts "
                           "cover part of the data")  # fmt: skip
    requests = _requests(docs)
    timeline, bin_s = _timeline(docs, starts, t0)
    busy = [p for p in timeline if p[2]]
    sending = (busy[-1][0] + bin_s - busy[0][0]) if busy else 0
    objects = sum(p[1] for p in timeline)
    modes = sorted({str(d["mode"]) for d in docs})
    first = docs[0]
    return {
        "run_id": "merge of " + ", ".join(str(d["run_id"]) for d in docs),
        "pipeline": first["pipeline"],
        "started_at": min(d["started_at"] for d in docs),
        "finished_at": max((d["finished_at"] or "") for d in docs) or None,
        "duration_s": duration,
        "dry_run": bool(first["dry_run"]),
        "mode": modes[0] if len(modes) == 1 else "mixed",
        "mode_reason": "; ".join(sorted({f"{d['mode']}: {d['mode_reason']}" for d in docs})),
        "exit_code": exit_code,
        "exit_meaning": _meaning(docs, exit_code),
        "destination": first["destination"],
        "rows": rows,
        "invariant_ok": invariant,
        "max_reject_fraction": first["max_reject_fraction"],
        "rejects": {
            "by_stage": _sum_counts(d["rejects"]["by_stage"] for d in docs),
            "by_rule": _sum_counts(d["rejects"]["by_rule"] for d in docs),
            "file": None,
            "sample": [s for d in docs for s in d["rejects"]["sample"]][:SAMPLE_SIZE],
        },
        "failed": {"count": rows["failed"], "not_sent": sum(int(d["failed"]["not_sent"]) for d in docs),
                   "unknown": sum(int(d["failed"].get("unknown", 0)) for d in docs), "file": None},
        "possibly_duplicated": {
            "count": rows["possibly_duplicated"],
            "by_reason": _sum_counts(d.get("possibly_duplicated", {}).get("by_reason", {}) for d in docs),
            "file": None,
        },
        "skipped": {"by_reason": _sum_counts(d["skipped"]["by_reason"] for d in docs),
                    "not_sent": sum(int(d["failed"]["not_sent"]) for d in docs)},
        "requests": requests,
        "throughput": {
            "objects_per_s": round(objects / duration, 3) if duration else 0.0,
            "requests_per_s": round(requests["total"] / duration, 3) if duration else 0.0,
            "sending_s": sending,
            "requests_per_s_sending": round(requests["total"] / sending, 3) if sending else 0.0,
            "timeline_bin_s": bin_s,
            "timeline": timeline,
        },
        "latency_ms": {"p50": None, "p95": None, "p99": None,
                       "max": max((d["latency_ms"]["max"] or 0 for d in docs), default=None) or None},  # fmt: skip
        "rate_limit": _rate_limit(docs, requests, timeline, bin_s),
        "table_checks": [{**c, "stream": f"{c['stream']} (partition {k}/{n})"}
                         for d, k in zip(docs, ks, strict=True) for c in d["table_checks"]],  # fmt: skip
        "warnings": warnings,
        "streams": _streams(docs),
        "confirmed": sum(int(d.get("confirmed") or 0) for d in docs),
        "sample_requests": [],
        "emulator": None,
        "retry": None,
        "delta": _delta(docs),
        "shared_limits": None,
        "partition": {"n": n, "k": ks, "missing": missing},
        "partitions": [_partition_entry(d, k, n) for d, k in zip(docs, ks, strict=True)],
        "files": {"report_json": str(out / "report.json"), "report_html": str(out / "report.html"),
                  "rejects": None, "failed": None, "confirmed": None},  # fmt: skip
    }


def write_merged(folders: list[Path], out: Path | None = None, *, overwrite: bool = False) -> tuple[dict[str, Any], Path]:
    """Merge the reports in `folders` into `out` (default: `merged/` beside them); return (document, folder).

    Raises:
        ConfigError: as check_partitions, or `out` already holds a report and `overwrite` is not set.
    """
    docs = [load_report(Path(f)) for f in folders]
    if out is None:
        out = Path(os.path.commonpath([str(Path(d["_dir"]).resolve().parent) for d in docs])) / "merged"
    doc = merge_reports(docs, out)  # refuses reports that do not belong together first
    if (out / "report.json").exists() and not overwrite:
        raise ConfigError(
            f"report merge: {out} already holds a report; give another --out, or --overwrite to replace it"
        )
    from connector.report.html import render_html

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    (out / "report.html").write_text(render_html(doc), encoding="utf-8")
    return doc, out


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _sum_counts(items: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in items:
        total.update({k: int(v) for k, v in c.items()})
    return dict(total.most_common())


def _requests(docs: list[dict[str, Any]]) -> dict[str, Any]:
    by_endpoint: dict[str, dict[str, Any]] = {}
    for d in docs:
        for name, ep in d["requests"]["by_endpoint"].items():
            into = by_endpoint.setdefault(name, {"requests": 0, "objects": 0, "retries": 0, "rate_limited": 0,
                                                 "by_status": Counter()})  # fmt: skip
            for key in ("requests", "objects", "retries", "rate_limited"):
                into[key] += int(ep.get(key, 0))
            into["by_status"].update({k: int(v) for k, v in ep["by_status"].items()})
    return {
        "total": sum(int(d["requests"]["total"]) for d in docs),
        "by_endpoint": {k: {**v, "by_status": dict(v["by_status"])} for k, v in sorted(by_endpoint.items())},
        "by_status": dict(sorted(_sum_counts(d["requests"]["by_status"] for d in docs).items())),
        "retries": sum(int(d["requests"]["retries"]) for d in docs),
        "retry_reasons": _sum_counts(d["requests"]["retry_reasons"] for d in docs),
        "rate_limited": sum(int(d["requests"]["rate_limited"]) for d in docs),
        # The parts' engines, in order, once each (older parts have none).
        "http_engine": ", ".join(dict.fromkeys(e for d in docs if (e := d["requests"].get("http_engine")))) or None,
        "probes": [p for d in docs for p in d["requests"].get("probes") or []],
    }


def _timeline(docs: list[dict[str, Any]], starts: list[datetime], t0: datetime) -> tuple[list[list[int]], int]:
    """Each partition's timeline moved to seconds since the earliest start, summed (and binned when long)."""
    per_second: dict[int, list[int]] = {}
    for d, start in zip(docs, starts, strict=True):
        shift = int((start - t0).total_seconds())
        for second, objects, reqs in d["throughput"]["timeline"]:
            slot = per_second.setdefault(int(second) + shift, [0, 0])
            slot[0] += int(objects)
            slot[1] += int(reqs)
    return build_timeline(per_second)


def _rate_limit(docs: list[dict[str, Any]], requests: dict[str, Any], timeline: list[list[int]],
                bin_s: int) -> dict[str, Any]:  # fmt: skip
    """Per endpoint: the limit, the mean over the merged sending window, and the peak when the merged
    timeline is that endpoint's alone (it counts every endpoint's requests together)."""
    out: dict[str, Any] = {}
    busy = [p for p in timeline if p[2]]
    span = (busy[-1][0] + bin_s - busy[0][0]) if busy else 0
    used = [name for name, ep in requests["by_endpoint"].items() if ep["requests"]]
    for name in sorted({n for d in docs for n in d["rate_limit"]}):
        limit = next((d["rate_limit"][name]["limit_per_s"] for d in docs if name in d["rate_limit"]), None)
        count = requests["by_endpoint"].get(name, {}).get("requests", 0)
        peak = max((p[2] for p in timeline), default=0) // bin_s if used == [name] else None
        out[name] = {
            "limit_per_s": limit,
            "peak_requests_per_s": peak if count else 0,
            "mean_requests_per_s": round(count / span, 3) if span and count else 0.0,
            "utilisation": round(peak / limit, 3) if peak and limit else (None if count else 0.0),
        }
    return out


def _streams(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        for s in d["streams"]:
            into = out.setdefault(s["name"], {"name": s["name"], "kind": s["kind"], "source": s["source"],
                                              **dict.fromkeys(ROW_KEYS[:5], 0)})  # fmt: skip
            for key in ROW_KEYS[:5]:
                into[key] += int(s.get(key, 0))
            if "delta" in s:  # delta sync's counts add up like the rows
                kept = into.setdefault("delta", {})
                for key, n in s["delta"].items():
                    kept[key] = kept.get(key, 0) + int(n)
    return list(out.values())


def _delta(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The partitions' delta sections as one: each partition keeps its own state file (delta package doc)."""
    deltas = [d["delta"] for d in docs if d.get("delta")]
    if not deltas:
        return None
    files = sorted({str(x.get("state_file")) for x in deltas})
    merged = {**deltas[0], "state_file": files[0] if len(files) == 1 else None, "state_files": files}
    lost = [x["not_recorded"] for x in deltas if x.get("not_recorded")]  # partitions whose state failed
    if lost:
        causes = sorted({str(x.get("cause")) for x in lost})
        merged["not_recorded"] = {"cause": "; ".join(causes),
                                  **{k: sum(int(x.get(k, 0)) for x in lost) for k in lost[0] if k != "cause"}}  # fmt: skip
    return merged


def _partition_entry(d: dict[str, Any], k: int, n: int) -> dict[str, Any]:
    return {
        "partition": f"{k}/{n}",
        "run_id": d["run_id"],
        "dir": d["_dir"],
        "exit_code": d["exit_code"],
        "invariant_ok": d["invariant_ok"],
        "rows": d["rows"],
        "duration_s": d["duration_s"],
        "latency_ms": d["latency_ms"],
        "by": d["partition"].get("by", {}),
        "shared_limits": d.get("shared_limits"),
        "stop": d.get("stop"),
        "state_file": (d.get("delta") or {}).get("state_file"),
        "files": {key: d["files"].get(key) for key in ("report_json", "rejects", "failed")},
    }


def _meaning(docs: list[dict[str, Any]], exit_code: int) -> str:
    """The parts' own words for the merged exit code (each part's report named its causes), else the code's."""
    said = dict.fromkeys(str(d.get("exit_meaning") or "") for d in docs if int(d["exit_code"]) == exit_code)
    said.pop("", None)
    return "; ".join(said) if said else EXIT_MEANINGS.get(exit_code, "unknown")
