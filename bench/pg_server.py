"""A throwaway PostgreSQL server for benchmarks: initdb in a temporary folder, loopback, a free port.

    with PgServer() as pg: ... pg.url ...

Needs Debian's `postgresql` server binaries (/usr/lib/postgresql/<version>/bin). As root the server runs as
the `postgres` user (PostgreSQL refuses root), as the test fixture in tests/conftest.py does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sink import free_port


def pg_bindir() -> Path | None:
    """The newest installed server binaries, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


class PgServer:
    def __init__(self) -> None:
        self.url = ""
        self._root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self._runas: list[str] = []
        self._bindir = pg_bindir()

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._runas, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    def __enter__(self) -> PgServer:
        if self._bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            shutil.chown(self._root, "postgres")
            os.chmod(self._root, 0o700)
            self._runas = ["runuser", "-u", "postgres", "--"]
        data = self._root / "data"
        self._run(str(self._bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        port = free_port()  # after initdb (seconds on a busy machine), and outside the ephemeral range
        opts = f"-p {port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(str(self._bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self._root / "log"), "-w", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self

    def cpu(self) -> float:
        """CPU seconds of the server so far: the postmaster, its finished children (cutime) and its live ones
        (0.0 where /proc cannot tell)."""
        try:
            pid = int((self._root / "data" / "postmaster.pid").read_text().split()[0])
            pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        except (OSError, ValueError, IndexError):
            return 0.0
        total = 0
        for p in pids:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:13]) + (sum(int(f) for f in fields[13:15]) if p == pid else 0)
        return total / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self._bindir is not None and (self._root / "data").exists():
            subprocess.run([*self._runas, str(self._bindir / "pg_ctl"), "-D", str(self._root / "data"), "-m", "fast",
                            "-w", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self._root, ignore_errors=True)
