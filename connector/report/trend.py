"""report.html's "Last runs" card: the trend of the pipeline's runs from its history, as inline SVG and a table.

Five small bar charts (rows read, rejected, failed, duration, 429s), one bar per run, oldest left, this
run last and darker; a run that did not exit 0 has a red mark under its bar. Then a table of the runs,
newest first. No scripts and no external assets: the page stays one self-contained file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METRICS = (  # (title, how to read a value from a history entry, unit)
    ("rows read", lambda e: e.get("rows", {}).get("read", 0), ""),
    ("rejected", lambda e: e.get("rows", {}).get("rejected", 0), ""),
    ("failed", lambda e: e.get("rows", {}).get("failed", 0), ""),
    ("duration", lambda e: e.get("duration_s") or 0.0, " s"),
    ("429s", lambda e: e.get("rate_limited", 0), ""),
)
TABLE_ROWS = 10
MIN_SLOTS = 10
CSS = (
    ".trend{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin-bottom:12px}"
    ".trend figure{margin:0;background:#f8fafc;border-radius:6px;padding:8px 10px}.trend figcaption{display:flex;"
    "justify-content:space-between;gap:8px;font-size:12px;color:#616e7c}.trend figcaption b{color:#1f2933}"
    ".trend svg{display:block;width:100%;height:48px}"
)


def partition_of(partition: Mapping[str, Any] | None) -> str | None:
    """"K/N" for a `--partition K/N` run (its report's `partition`), None for a run of the whole pipeline
    (and for a merged report, whose `k` lists the partitions merged)."""
    if not partition or not isinstance(partition.get("k"), int):
        return None
    return f"{partition['k']}/{partition['n']}"


def current_entry(d: dict[str, Any]) -> dict[str, Any]:
    """This run, shaped like a history line (report/history.py run_entry)."""
    kind = "validate" if str(d.get("mode_reason") or "").startswith("validate only") else (
        "dry_run" if d.get("dry_run") else "run")  # fmt: skip
    return {"run_id": d.get("run_id"), "started_at": d.get("started_at"), "duration_s": d.get("duration_s"),
            "kind": kind, "exit_code": d.get("exit_code"), "rows": d.get("rows", {}),
            "rate_limited": d.get("requests", {}).get("rate_limited", 0),
            "partition": partition_of(d.get("partition"))}  # fmt: skip


def _n(value: float) -> str:
    return f"{value:,.1f}" if isinstance(value, float) and not value.is_integer() else f"{int(value):,}"


def _spark(title: str, values: list[float], codes: list[Any], unit: str) -> str:
    from html import escape  # (html.entities: only when report.html is written)

    w, h, gap = 200, 48, 2
    top = max(values) or 1
    slots = max(len(values), MIN_SLOTS)  # few runs: thin bars at the right, as they will be once more run
    bw = w / slots
    bars = [f'<line x1="0" x2="{w}" y1="{h - 4}" y2="{h - 4}" stroke="#cbd2d9"/>']
    for i, (v, code) in enumerate(zip(values, codes, strict=True), start=slots - len(values)):
        bh = max((h - 6) * v / top, 1.0 if v else 0.0)
        last = i == slots - 1
        fill = "#1f5fbf" if last else "#9db9e8"
        bars.append(f'<rect x="{i * bw + gap / 2:.1f}" y="{h - 4 - bh:.1f}" width="{max(bw - gap, 1):.1f}" '
                    f'height="{bh:.1f}" fill="{fill}"><title>{escape(_n(v))}{unit}</title></rect>')  # fmt: skip
        if code not in (0, None):
            bars.append(f'<rect x="{i * bw + gap / 2:.1f}" y="{h - 3}" width="{max(bw - gap, 1):.1f}" height="3" '
                        'fill="#d64545"/>')  # fmt: skip
    svg = (f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" '
           f'aria-label="{escape(title)} over the last {len(values)} runs">{"".join(bars)}</svg>')  # fmt: skip
    return (f'<figure class="spark"><figcaption><span>{escape(title)}</span><b>{escape(_n(values[-1]))}{unit}'
            f"</b></figcaption>{svg}</figure>")  # fmt: skip


def render_trend(d: dict[str, Any], recent: list[dict[str, Any]]) -> str:
    """The card: earlier runs (oldest first) and this run."""
    from html import escape  # (html.entities: only when report.html is written)

    runs = [*recent, current_entry(d)]
    codes = [e.get("exit_code") for e in runs]
    charts = "".join(_spark(t, [float(get(e) or 0) for e in runs], codes, u) for t, get, u in METRICS)
    head = "".join(f"<th{' class=num' if i > 1 else ''}>{h}</th>" for i, h in enumerate(
        ["started (UTC)", "kind", "exit", "read", "delivered", "rejected", "failed", "429s", "duration s"]))  # fmt: skip
    body = []
    for e in reversed(runs[-TABLE_ROWS:]):
        r = e.get("rows", {})
        cells = [r.get("read", 0), r.get("delivered", 0), r.get("rejected", 0), r.get("failed", 0),
                 e.get("rate_limited", 0), e.get("duration_s") or 0.0]  # fmt: skip
        started = escape(str(e.get("started_at") or "")[:19].replace("T", " "))
        mark = " (this run)" if e is runs[-1] else ""
        body.append(f"<tr><td>{started}{mark}</td><td>{escape(str(e.get('kind', '')))}</td>"
                    f"<td class=num>{escape(str(e.get('exit_code', '')))}</td>"
                    + "".join(f"<td class=num>{_n(float(c))}</td>" for c in cells) + "</tr>")  # fmt: skip
    part = runs[-1]["partition"]
    whose = f"partition {escape(part)}" if part else "the pipeline"
    note = ("" if recent else f'<p class="sub">No earlier runs of {whose} in the history yet: the trend fills in '
            "as it runs again (report.history).</p>")  # fmt: skip
    title = f"Last runs of partition {escape(part)}" if part else "Last runs"
    return (f'<div class="card" id="trend"><h2>{title} ({len(runs)})</h2><div class="trend">{charts}</div>'
            f"{note}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
