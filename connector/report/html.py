"""Render report.json as one self-contained HTML page (inline CSS and SVG, no scripts or external assets).

Rule names break only after `.`, `_`, `-`, `/` or `:` (a `<wbr>` there), so a long one wraps inside its
column instead of widening the page; the sample of rejected rows is shown in source order (file, then row
number); the last runs' trend comes from the run history (trend.py).
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from connector.report.document import removed_outcome
from connector.report.trend import CSS as TREND_CSS
from connector.report.trend import render_trend

CSS = """
*{box-sizing:border-box}body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;
color:#1f2933;background:#f4f6f8;margin:0}main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0}h2{font-size:16px;margin:0 0 12px;color:#323f4b}
.sub{color:#616e7c;font-size:13px;margin-top:4px}.card{background:#fff;border-radius:8px;padding:16px 20px;
margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}.head{display:flex;justify-content:space-between;
align-items:center;gap:16px;flex-wrap:wrap}.badge{padding:6px 14px;border-radius:999px;font-weight:600;
color:#fff}.ok{background:#2f9e5b}.bad{background:#d64545}.fatal{background:#8a1c1c}
.grid{display:grid;grid-template-columns:repeat(5,1fr);gap:12px}.stat{background:#f8fafc;border-radius:6px;
padding:10px 12px;border-left:4px solid #9aa5b1}.stat b{display:block;font-size:22px}.stat span{color:#616e7c;
font-size:12px;text-transform:uppercase;letter-spacing:.04em}.s-delivered{border-color:#2f9e5b}
.s-rejected{border-color:#e8a33d}.s-failed{border-color:#d64545}.s-skipped{border-color:#7b93db}
.stack{display:flex;height:10px;border-radius:5px;overflow:hidden;margin:14px 0 4px;background:#e4e7eb}
.stack i{display:block}.c-delivered{background:#2f9e5b}.c-rejected{background:#e8a33d}.c-failed{background:#d64545}
.c-skipped{background:#7b93db}dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:#616e7c}dd{margin:0}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{color:#616e7c;font-weight:600;background:#f8fafc}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.bars{display:grid;grid-template-columns:fit-content(45%) minmax(40px,1fr) max-content;gap:6px 12px;align-items:center}
.bar{height:12px;background:#e8a33d;border-radius:3px;min-width:2px}.two{display:grid;
grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px;margin:16px 0}.two .card{margin:0}.muted{color:#9aa5b1}.pass{color:#2f9e5b;font-weight:600}
.fail{color:#d64545;font-weight:600}.warn{color:#b7791f;font-weight:600}code{font-size:12px;background:#f0f2f5;
padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}ul{margin:0;padding-left:20px}
code.rule{word-break:normal;overflow-wrap:break-word}.chart text{font-size:11px;fill:#616e7c}
.chart .title{font-size:12px;fill:#323f4b;font-weight:600}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_n(c)}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _wrappable(value: Any, after: str = "._-/:") -> str:
    """Escaped text with a line-break opportunity (<wbr>) after each of `after`: its word boundaries."""
    text = "" if value is None else str(value)
    out, word = [], ""
    for ch in text:
        word += ch
        if ch in after:
            out.append(_e(word))
            word = ""
    out.append(_e(word))
    return "<wbr>".join(p for p in out if p)


def _rule(name: Any) -> str:
    """A rule (or endpoint) name in <code> that wraps after `.`, `_`, `-`, `/` or `:`, never inside a word."""
    return f'<code class="rule">{_wrappable(name)}</code>'


def _bars(counts: dict[str, int], label: Any = None) -> str:
    if not counts:
        return '<p class="muted">None.</p>'
    top = max(counts.values()) or 1
    items = "".join(
        f'<div>{(label or _code)(k)}</div><div><div class="bar" style="width:{100 * v / top:.1f}%"></div></div>'
        f'<div class="num">{v:,}</div>'
        for k, v in counts.items()
    )
    return f'<div class="bars">{items}</div>'


def _code(value: Any) -> str:
    return f"<code>{_e(value)}</code>"


def _axis(value: float) -> str:
    """A tick label: whole numbers from 10 up, else at most two decimals (0.25, 0.5, 0.75, 1)."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}".rstrip("0").rstrip(".")


def _chart(timeline: list[list[int]], bin_s: int) -> str:
    """Objects delivered per second (bars, left axis) and requests per second (line, right axis) as an
    inline SVG, each axis with its ticks and title, time along the bottom."""
    if not timeline:
        return '<p class="muted">No requests were sent.</p>'
    w, h, left, right, bottom, top = 1040, 240, 64, 64, 40, 12
    pw, ph = w - left - right, h - bottom - top
    objs = [p[1] / bin_s for p in timeline]
    reqs = [p[2] / bin_s for p in timeline]
    ymax = max(max(objs), 1.0)
    rmax = max(max(reqs), 1.0)
    bw = pw / len(timeline)
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" width="100%" role="img" '
             'aria-label="objects and requests per second over the run">']  # fmt: skip
    left_ticks, right_ticks = [], []
    for i in range(5):
        y = top + ph - ph * i / 4
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>')
        left_ticks.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_axis(ymax * i / 4)}</text>')
        right_ticks.append(f'<text x="{w - right + 6}" y="{y + 4:.1f}" fill="#b7791f">{_axis(rmax * i / 4)}</text>')
    for i, v in enumerate(objs):
        bh = ph * v / ymax
        parts.append(
            f'<rect x="{left + i * bw:.2f}" y="{top + ph - bh:.2f}" width="{max(bw - 1, 0.8):.2f}" height="{bh:.2f}" fill="#4c8bf5"/>'
        )
    pts = " ".join(f"{left + (i + 0.5) * bw:.1f},{top + ph - ph * v / rmax:.1f}" for i, v in enumerate(reqs))
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#e8a33d" stroke-width="2"/>')
    mid = top + ph / 2
    parts.append(f'<g class="axis axis-objects">{"".join(left_ticks)}<text class="title" x="14" y="{mid:.0f}" '
                 f'transform="rotate(-90 14 {mid:.0f})" text-anchor="middle">objects/s</text></g>')  # fmt: skip
    parts.append(f'<g class="axis axis-requests"><line x1="{w - right}" x2="{w - right}" y1="{top}" '
                 f'y2="{top + ph}" stroke="#e8a33d"/>{"".join(right_ticks)}<text class="title" x="{w - 12}" '
                 f'y="{mid:.0f}" transform="rotate(90 {w - 12} {mid:.0f})" text-anchor="middle">requests/s</text></g>')  # fmt: skip
    span = timeline[-1][0] + bin_s
    ticks = "".join(f'<text x="{left + pw * i / 5:.1f}" y="{top + ph + 16}" text-anchor="middle">'
                    f"{_axis(span * i / 5)}s</text>" for i in range(6))  # fmt: skip
    parts.append(f'<g class="axis axis-time">{ticks}<text class="title" x="{left + pw / 2:.0f}" y="{h - 4}" '
                 'text-anchor="middle">seconds since the first read</text></g>')  # fmt: skip
    parts.append("</svg>")
    legend = (
        '<div class="sub"><span style="color:#4c8bf5">■</span> objects/s (left axis) &nbsp; '
        f'<span style="color:#e8a33d">━</span> requests/s (right axis, peak {_n(rmax)})</div>'
    )
    return "".join(parts) + legend


def _summary(d: dict[str, Any]) -> str:
    rows = d["rows"]
    code = d["exit_code"]
    cls = "ok" if code == 0 else ("fatal" if code >= 2 else "bad")
    label = "Succeeded" if code == 0 else "Needs attention" if code == 1 else "Failed"
    stats = "".join(f'<div class="stat s-{k}"><span>{k}</span><b>{v:,}</b></div>' for k, v in rows.items())
    total = max(rows["read"], 1)
    stack = "".join(
        f'<i class="c-{k}" style="width:{100 * rows[k] / total:.2f}%" title="{k}"></i>'
        for k in ("delivered", "rejected", "failed", "skipped")
    )
    inv = d.get("invariant_ok")
    inv_text = "holds" if inv else ("not checked yet" if inv is None else "VIOLATED")
    dest = d.get("destination") or {}
    return (
        f'<div class="card"><div class="head"><div><h1>{_e(d["pipeline"])}</h1><div class="sub">run '
        f"<code>{_e(d['run_id'])}</code> · {_e(d['started_at'])} → {_e(d['finished_at'] or 'running')}"
        f"{' · DRY RUN' if d['dry_run'] else ''}</div></div>"
        f'<div class="badge {cls}">{label} · exit {_e(code)}</div></div>'
        f'<p class="sub">{_e(d.get("exit_meaning"))}</p><div class="grid">{stats}</div>'
        f'<div class="stack">{stack}</div><div class="sub">read = delivered + rejected + failed + skipped: '
        f'<b class="{"pass" if inv else "fail"}">{inv_text}</b></div></div>'
        f'<div class="card"><h2>Run</h2><dl><dt>Mode</dt><dd><b>{_e(d["mode"] or "–")}</b> — '
        f"{_e(d['mode_reason'] or 'no reason recorded')}</dd><dt>Duration</dt><dd>{_n(d['duration_s'])} s</dd>"
        f"<dt>Destination</dt><dd>{_e(dest.get('kind') or '–')} <code>{_e(dest.get('url') or '')}</code></dd>"
        f"<dt>Throughput</dt><dd>{_n(d['throughput']['objects_per_s'])} objects/s · "
        f"{_n(d['throughput']['requests_per_s'])} requests/s over the run · "
        f"{_n(d['throughput'].get('requests_per_s_sending', 0))} requests/s while sending "
        f"({_n(d['throughput'].get('sending_s', 0))} s)</dd></dl></div>"
    )


def _requests(d: dict[str, Any]) -> str:
    req, lat, rl = d["requests"], d["latency_ms"], d["rate_limit"]
    rows = []
    for name, ep in req["by_endpoint"].items():
        statuses = ", ".join(
            f"{'no response' if s == '0' else _e(s)}: {n:,}" for s, n in sorted(ep["by_status"].items())
        )
        lim = rl.get(name, {})
        util = lim.get("utilisation")
        rows.append(
            [_rule(name), ep["requests"], ep["objects"], statuses, ep["retries"], ep["rate_limited"],
             lim.get("peak_requests_per_s"), lim.get("limit_per_s"), "–" if util is None else f"{util:.0%}"]
        )  # fmt: skip
    probes = req.get("probes") or []
    for p in probes:  # asked before delivering: a row of its own, labelled, outside the totals below
        rows.append(
            [f"{_rule(p['endpoint'])} <em>({_e(p['purpose'])} probe, not a delivery)</em>", 1, 0,
             f"{_e(p['answer'])} → {_e(p['decided'])}", None, None, None, None, "–"]
        )  # fmt: skip
    table = _table(
        ["endpoint", "requests", "objects", "statuses", "retries", "429s", "peak req/s", "limit/s", "use"],
        rows,
        {1, 2, 4, 5, 6, 7},
    )
    latency = "".join(f"<dt>{k}</dt><dd>{_n(lat[k])} ms</dd>" for k in ("p50", "p95", "p99", "max"))
    probed = f" · {len(probes)} probe{'s' if len(probes) > 1 else ''} apart" if probes else ""
    if req.get("http_engine"):
        probed += f" · sent by {escape(req['http_engine'])}"
    return (
        f'<div class="card"><h2>Requests</h2>{table if rows else "<p class=muted>None.</p>"}'
        f'<p class="sub">{req["total"]:,} requests · {req["retries"]:,} retries · {req["rate_limited"]:,} '
        f"rate limited (429){probed}</p></div>"
        f'<div class="two"><div class="card"><h2>Latency</h2><dl>{latency}</dl></div>'
        f'<div class="card"><h2>Skipped</h2>{_bars(d["skipped"]["by_reason"])}{_not_sent(d)}</div></div>'
    )


def _not_sent(d: dict[str, Any]) -> str:
    """Skipped rows a stop (or an abort) did not send are listed in the failed file: say so where they are counted."""
    n = d["failed"].get("not_sent") or 0
    return f'<p class="sub">{n:,} of them not sent: listed in failed.csv as not_sent</p>' if n else ""


def _reject_bars(d: dict[str, Any]) -> str:
    rej = d["rejects"]
    return (
        f'<div class="two"><div class="card"><h2>Rejects by stage</h2>{_bars(rej["by_stage"])}</div>'
        f'<div class="card"><h2>Rejects by rule</h2>{_bars(rej["by_rule"], _rule)}</div></div>'
    )


def _warnings(d: dict[str, Any]) -> str:
    if not d["warnings"]:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in d["warnings"])
    return f'<div class="card"><h2>Warnings ({len(d["warnings"])})</h2><ul>{items}</ul></div>'


def _source_order(sample: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sample by file (in the order files first appear), then row number (a key such as `id=42` after)."""
    files: dict[Any, int] = {}
    for s in sample:
        files.setdefault(s.get("file"), len(files))

    def key(s: dict[str, Any]) -> tuple[int, int, int, list[tuple[int, str]]]:
        row, f = s.get("row"), files[s.get("file")]
        if isinstance(row, int):
            return (f, 0, row, [])
        # A key such as id=7 before id=10: digit runs compare as numbers.
        return (f, 1, 0, [(int(t), "") if t.isdigit() else (-1, t) for t in re.split(r"(\d+)", str(row)) if t])

    return sorted(sample, key=key)


def _removed(d: dict[str, Any]) -> str:
    """Mirror streams: the users gone from the source and what became of them (counts only)."""
    streams = d.get("removed") or {}
    if not streams:
        return ""
    rows = [[_e(name), _e(m["on_removed"]), _n(m["known"]), _n(m["removed"]), _n(m["deleted"]), _n(m["delete_failed"]),
             _e(removed_outcome(m, dry_run=bool(d.get("dry_run"))) if m.get("decided") else m.get("reason") or "")]
            for name, m in streams.items()]  # fmt: skip
    headers = ["stream", "on_removed", "known", "removed", "deleted", "delete failed", "outcome"]
    return f'<div class="card"><h2>Removed users</h2>{_table(headers, rows, {2, 3, 4, 5})}</div>'


def _reject_sample(d: dict[str, Any]) -> str:
    rej = d["rejects"]
    sample = [
        [_wrappable(s["file"], "/\\"), _n(s["row"]), _e(s["stage"]), _rule(s["column"] or ""),
         f"<code>{_e(s.get('value'))}</code>" if s.get("value") else "", _rule(s["rule"]), _e(s["reason"])]
        for s in _source_order(rej.get("sample", []))
    ]  # fmt: skip
    table = _table(["file", "row", "stage", "column", "value", "rule", "reason"], sample) if sample else ""
    return (
        f'<div class="card"><h2>Sample of rejected rows ({len(sample)} of {d["rows"]["rejected"]:,})</h2>'
        f'{table or "<p class=muted>No rows were rejected.</p>"}<p class="sub">All rejected rows: '
        f"<code>{_e(rej['file'])}</code> · failed rows: <code>{_e(d['failed']['file'])}</code>"
        + (f" ({d['rows']['failed']:,} failed, {d['failed']['not_sent']:,} skipped as not_sent)"
           if d["failed"].get("not_sent") else "") + "</p></div>"
    )


def _alerts(d: dict[str, Any]) -> str:
    """The alerts this run fired (`alerts:` in the pipeline) and whether the webhook took them."""
    alerts = d.get("alerts") or {}
    if not alerts.get("fired"):
        return ""
    state = ("delivered" if alerts.get("delivered") else f"NOT delivered: {alerts.get('error') or 'pending'}")
    items = "".join(f"<li><b>{_e(f['trigger'])}</b>: {_e(f['detail'])}</li>" for f in alerts["fired"])
    return (f'<div class="card"><h2>Alerts</h2><ul>{items}</ul><p class="sub">Posted to the webhook from '
            f"<code>${_e(alerts.get('url_env'))}</code>: {_e(state)}</p></div>")


def _duplicates(d: dict[str, Any]) -> str:
    """Rows Braze may have applied more than once, and what a resumed run carried over."""
    dup = d.get("possibly_duplicated") or {}
    resume = d.get("resume")
    if not dup.get("count") and not resume:
        return ""
    text = f"<p><b>{dup.get('count', 0):,}</b> row(s) possibly applied more than once by Braze"
    if dup.get("count"):
        reasons = "; ".join(f"{n:,} {_e(why)}" for why, n in dup.get("by_reason", {}).items())
        text += f" ({reasons}); listed in <code>{_e(dup.get('file'))}</code>"
    text += ".</p>"
    if resume:
        carried = ", ".join(f"{k} {v:,}" for k, v in resume.get("carried", {}).items())
        text += (f"<p class=\"sub\">Resumed run (attempt {_e(resume.get('attempt'))}) from "
                 f"<code>{_e(resume.get('journal'))}</code>; outcomes carried over from earlier attempts: "
                 f"{_e(carried or 'none')}.</p>")  # fmt: skip
    return f'<div class="card"><h2>Possible duplicates</h2>{text}</div>'


def _table_checks(d: dict[str, Any]) -> str:
    out = ""
    if d["table_checks"]:
        rows = []
        for c in d["table_checks"]:
            state = "pass" if c["success"] else ("fail" if c["action"] == "fail" else "warn")
            rows.append(
                [_e(c["stream"]), _rule(c["expectation"]), _e(c["column"] or ""),
                 f'<span class="{state}">{state.upper()}</span>', _e(c["observed"]), _e(c["detail"])]
            )  # fmt: skip
        headers = ["stream", "expectation", "column", "result", "observed", "detail"]
        out += f'<div class="card"><h2>Table checks</h2>{_table(headers, rows)}</div>'
    return out


def _details(d: dict[str, Any]) -> str:
    out = ""
    if d["streams"]:
        keys = ["read", "delivered", "rejected", "failed", "skipped"]
        rows = [
            [_e(s["name"]), _e(s["kind"]), f"<code>{_e(s['source'])}</code>", *[s[k] for k in keys]]
            for s in d["streams"]
        ]
        out += f'<div class="card"><h2>Streams</h2>{_table(["stream", "kind", "source", *keys], rows, {3, 4, 5, 6, 7})}</div>'
    if d.get("emulator"):
        items = "".join(
            f"<dt>{_e(k)}</dt><dd><code>{_e(json.dumps(v) if isinstance(v, dict | list) else v)}</code></dd>"
            for k, v in d["emulator"].items()
        )
        out += f'<div class="card"><h2>Local emulator</h2><dl>{items}</dl></div>'
    files = {k: v for k, v in d["files"].items() if v}
    items = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in files.items())
    if d.get("sample_requests"):
        items += f"<dt>sample requests</dt><dd>{len(d['sample_requests'])} bodies in <code>sample_requests/</code></dd>"
    return out + f'<div class="card"><h2>Files</h2><dl>{items}</dl></div>'


def _partitions(d: dict[str, Any]) -> str:
    """A merged report (report merge): one line per partition, with its own report."""
    parts = d.get("partitions")
    if not parts:
        return ""
    keys = ["read", "delivered", "rejected", "failed", "skipped"]
    rows = [[_e(p["partition"]), f"<code>{_e(p['run_id'])}</code>", _e(p["exit_code"]), *[p["rows"][k] for k in keys],
             _n(p["latency_ms"].get("p95")), f"<code>{_e(p['files'].get('report_json'))}</code>"] for p in parts]  # fmt: skip
    headers = ["partition", "run", "exit", *keys, "p95 ms", "report"]
    return f'<div class="card"><h2>Partitions</h2>{_table(headers, rows, {3, 4, 5, 6, 7})}</div>'


def render_html(d: dict[str, Any], recent_runs: list[dict[str, Any]] | None = None) -> str:
    """The report page for a report.json document; `recent_runs` (the history's earlier runs, oldest
    first) adds the trend of the last runs."""
    tp = d["throughput"]
    chart = f'<div class="card"><h2>Throughput over time</h2>{_chart(tp["timeline"], tp.get("timeline_bin_s", 1))}</div>'
    parts = [
        _summary(d),
        _alerts(d),
        _duplicates(d),
        _warnings(d),
        chart,
        render_trend(d, recent_runs) if recent_runs is not None else "",
        _requests(d),
        _reject_bars(d),
        _table_checks(d),
        _removed(d),
        _reject_sample(d),
    ]
    body = "".join(parts) + _partitions(d) + _details(d)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(d['pipeline'])} · run {_e(d['run_id'])}</title><style>{CSS}{TREND_CSS}</style></head>"
        f'<body><main>{body}<p class="sub">braze-connector report · report.json beside this file holds the same '
        "figures.</p></main></body></html>\n"
    )
