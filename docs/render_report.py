"""Render a run's report.html in headless Chromium: a PNG to look at, and a layout check that can fail.

    python docs/render_report.py reports/quickstart            # -> reports/quickstart/report.png
    python docs/render_report.py path/to/report.html --out /tmp/r.png --width 800

Prints the PNG's path and the layout check: the viewport width, the page's width, any element wider than
the viewport or overflowing its box, and whether the trend and the requests/s axis are on the page. Exit
code 1 when the layout check finds a problem. Needs Chromium (`apt-get install chromium` on Debian); the
test tests/integration/test_report_render.py uses the same functions.

The layout check runs on a copy of the page with a small script appended (the report itself has no
script): it measures every element with getBoundingClientRect() once the page has laid out, and writes
the result as JSON into the DOM that `--dump-dom` prints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

MARK = "layout-check"
CHECK_SCRIPT = """<script>(function () {
  var vw = document.documentElement.clientWidth, wide = [], clipped = [];
  function name(el) {
    var cls = typeof el.className === "string" && el.className ? "." + el.className.trim().split(/\\s+/).join(".") : "";
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + cls;
  }
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) wide.push(name(el) + " " + Math.round(r.left) + ".." + Math.round(r.right));
    if (el.namespaceURI === "http://www.w3.org/1999/xhtml" && el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0
        && getComputedStyle(el).display !== "inline") clipped.push(name(el) + " " + el.scrollWidth + ">" + el.clientWidth);
  });
  var out = {viewport: vw, page_width: document.documentElement.scrollWidth, too_wide: wide.slice(0, 20),
    overflowing: clipped.slice(0, 20), trend_charts: document.querySelectorAll("#trend svg").length,
    trend_rows: document.querySelectorAll("#trend tbody tr").length,
    requests_axis_ticks: document.querySelectorAll(".axis-requests text:not(.title)").length,
    requests_axis_title: (document.querySelector(".axis-requests .title") || {}).textContent || null,
    rule_breaks: document.querySelectorAll("code.rule wbr").length};
  var pre = document.createElement("pre"); pre.id = "MARK"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>""".replace("MARK", MARK)


def find_chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(args: list[str], timeout_s: float) -> str:
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("Chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="braze-chromium-") as profile:
        done = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=3000", *args],
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-1500:]}")
    return done.stdout


def render_png(html: Path, png: Path, width: int = 1280, height: int = 2400, timeout_s: float = 60) -> Path:
    """A screenshot of the page, `width` x `height` pixels."""
    _chromium([f"--window-size={width},{height}", f"--screenshot={png.resolve()}", html.resolve().as_uri()], timeout_s)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png


def check_layout(html: Path, width: int = 1280, height: int = 2400, timeout_s: float = 60) -> dict[str, Any]:
    """Lay the page out at `width` and measure it (see the module docstring); returns the measurements."""
    text = html.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="braze-layout-") as tmp:
        copy = Path(tmp) / "report.html"
        copy.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
        dom = _chromium([f"--window-size={width},{height}", "--dump-dom", copy.as_uri()], timeout_s)
    start = dom.find(f'<pre id="{MARK}">')
    if start < 0:
        raise RuntimeError("the layout script did not run (no result in the dumped DOM)")
    raw = dom[start + len(f'<pre id="{MARK}">') : dom.index("</pre>", start)]
    result: dict[str, Any] = json.loads(raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    return result


def layout_problems(m: dict[str, Any]) -> list[str]:
    """What is wrong with a page's measurements (empty when nothing is)."""
    out = []
    if m["page_width"] > m["viewport"]:
        out.append(f"the page is {m['page_width']} px wide in a {m['viewport']} px viewport")
    out += [f"wider than the viewport: {e}" for e in m["too_wide"]]
    out += [f"content overflows its box: {e}" for e in m["overflowing"]]
    return out


def png_pixels(png: Path) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct colours of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    data = png.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{png} is not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{png}: only 8-bit RGB/RGBA, non-interlaced PNGs are read here")
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 4 == 0:  # every fourth line is plenty to tell a blank page from a drawn one
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, bpp * 2))
        prev = line
    return width, height, colours


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a report folder or its report.html")
    ap.add_argument("--out", type=Path, help="the PNG (default: report.png beside report.html)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args(argv)
    html = args.report / "report.html" if args.report.is_dir() else args.report
    if not html.is_file():
        print(f"{html}: no such file", file=sys.stderr)
        return 2
    png = render_png(html, args.out or html.with_name("report.png"), args.width, args.height)
    measured = check_layout(html, args.width, args.height)
    print(f"screenshot: {png} ({args.width}x{args.height})")
    print("layout: " + json.dumps(measured, indent=2))
    problems = layout_problems(measured)
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
