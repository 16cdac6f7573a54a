"""The terminal display as a person sees it: `braze-connector run` in a pseudo-terminal of 80 columns.

The bytes the program writes go through a small terminal model (cursor up, erase line, carriage return,
line feed, wrapping at the last column); the test then reads the screen. Log lines must scroll above the
progress display, never into it, and the display must fit 80 columns.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from connector.emulator import EmulatorServer

pytestmark = pytest.mark.timeout(120)

COLUMNS = 80
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) connector[.\w]*: ")
CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


class Screen:
    """Enough of a VT100 for rich's live display: CR, LF, CUU, EL, SGR; notes writes past the last column."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines: list[str] = [""]
        self.row = 0
        self.col = 0
        self.overflows: list[str] = []

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            m = CSI.match(text, i)
            if m:
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            ch = text[i]
            i += 1
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                if self.row == len(self.lines):
                    self.lines.append("")
            elif ch == "\x1b":  # another escape (e.g. OSC): skip to its end
                end = text.find("\x07", i)
                i = len(text) if end < 0 else end + 1
            elif ch >= " ":
                if self.col >= self.columns:
                    self.overflows.append(self.lines[self.row])
                    self.row, self.col = self.row + 1, 0  # the terminal wraps
                    if self.row == len(self.lines):
                        self.lines.append("")
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + ch + line[self.col + 1 :]
                self.col += 1

    def _csi(self, args: str, op: str) -> None:
        n = int(args) if args.isdigit() else 1
        if op == "A":
            self.row = max(0, self.row - n)
        elif op == "K":  # erase in line: 2 = the whole line, 0 = to its end
            self.lines[self.row] = "" if args == "2" else self.lines[self.row][: self.col]
        elif op == "G":
            self.col = max(0, n - 1)

    def text(self) -> list[str]:
        return [line.rstrip() for line in self.lines]


def run_in_pty(args: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 90) -> tuple[int, str]:
    """Run a command on a pseudo-terminal of COLUMNS x 24; its exit code and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_run_on_an_80_column_terminal(tmp_path: Path, emulator_factory: Callable[..., EmulatorServer]) -> None:
    # Slow answers and some 503s: the display lives a few seconds and retry warnings are logged meanwhile.
    server = emulator_factory(latency_ms=60, faults={"users_track:503": 0.15}, seed=5)
    rows = ["user_id,first_name,age"] + [f"u{i},Name{i},{20 + i % 50}" for i in range(1200)]
    rows[7] = "u6,Bad,notanumber"
    (tmp_path / "users.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    pipeline = {
        "name": "tty",
        "destination": {"url": server.url},
        "write": {"concurrency": 2, "max_objects_per_request": 25,
                  "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2}},
        "report": {"dir": "out", "max_reject_fraction": 0.5},
        "streams": [{"name": "users", "source": {"path": "users.csv"}, "kind": "attributes",
                     "identifier": {"external_id": "user_id"},
                     "attributes": [{"column": "first_name"}, {"column": "age", "type": "integer"}]}],
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_") and k not in ("COLUMNS", "LINES")}
    env.update(BRAZE_API_KEY=server.api_key, TERM="xterm-256color")
    code, raw = run_in_pty([sys.executable, "-m", "connector", "run", "p.yaml"], tmp_path, env)
    screen = Screen(COLUMNS)
    screen.feed(raw)
    lines = [line for line in screen.text() if line]
    assert code == 0, "\n".join(lines)
    # Long log and summary lines may wrap like any terminal output; the display itself never does.
    assert not [row for row in screen.overflows if "req/s" in row or "━" in row or row.startswith("read ")]

    logs = [line for line in lines if TS.match(line)]
    display = [line for line in lines if "req/s" in line or line.startswith("read ")]
    summary_at = next(i for i, line in enumerate(lines) if line.startswith("run tty"))
    assert logs, lines
    # Every log line is whole: no display text inside it, and no display line holds a log line.
    for line in logs:
        assert "━" not in line and "req/s" not in line, line
    for line in display:
        assert not TS.search(line) and " INFO " not in line and " WARNING " not in line, line
    # The retries were logged (aggregated: far fewer lines than retries) above the display.
    retry_lines = [line for line in logs if "retr" in line and "users_track" in line]
    assert retry_lines, logs
    # The display stayed as two lines (above the summary), with the final counts.
    assert len(display) == 2 and lines.index(display[1]) == lines.index(display[0]) + 1 < summary_at, display
    assert all(len(line) <= COLUMNS for line in display)
    bar, counts = display
    assert "100% of 1,200 rows" in bar and "ETA" in bar
    assert counts.startswith("read 1,200") and "delivered 1,199" in counts
    assert "rejected 1" in counts and "skipped 0" in counts and "failed 0" in counts
