"""A loopback HTTP sink that answers like Braze after a fixed delay: nginx with its echo module.

nginx answers every POST on the Braze paths with 201 and a success body after `latency_ms`, and (when
`limit_rps` is set) enforces a request rate with limit_req, answering 429 above it, so a benchmark can
count the 429s a client provokes. Needs Debian's nginx and libnginx-mod-http-echo
(`apt-get install -y nginx-light libnginx-mod-http-echo`). Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from redis_server import free_port  # noqa: E402  (one port picker for test and bench servers)

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

_CONF = """
load_module {module};
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
daemon off;
events {{ worker_connections 8192; }}
http {{
  {access_log}
  client_body_buffer_size 4m;
  client_max_body_size 8m;
  keepalive_requests 1000000;
  {limit_zone}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location ~ ^(/w[0-9]+)?/users/track(/sync)?$ {{
      {limit_req}
      default_type application/json;
      add_header X-RateLimit-Limit {header_limit} always;
      echo_read_request_body;
      {sleep}
      echo_status 201;
      echo '{{"message":"success","attributes_processed":75}}';
    }}
  }}
}}
"""


def limit_req_refusals(arrivals: list[float], rate_per_s: float, burst: int) -> int:
    """How many of the requests arriving at `arrivals` (seconds) nginx's `limit_req ... burst=B nodelay`
    refuses: its excess (requests above the rate) drains per whole millisecond of its clock, each accepted
    request adds one, and a request that would take it above the burst is refused and not counted
    (ngx_http_limit_req_module's lookup, in requests instead of its thousandths). Replayed on the sink's own
    log it gives the sink's 429 count (within a few); replayed on when the workers' limiters granted, it
    says whether they had sent within the sink's accounting."""
    excess, last, refused = 0.0, None, 0
    per_ms = rate_per_s / 1000
    for t in sorted(arrivals):
        ms = int(t * 1000)
        new = 1.0 if last is None else max(excess - (ms - last) * per_ms, 0.0) + 1.0
        if new > burst + 1:
            refused += 1
            continue
        excess, last = new, ms
    return refused


def nginx_available() -> str | None:
    """The reason the sink cannot run here, or None when it can."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install -y nginx-light libnginx-mod-http-echo)"
    if not ECHO_MODULE.exists():
        return "the nginx echo module is not installed (apt-get install -y libnginx-mod-http-echo)"
    return None


class NginxSink:
    """Start nginx on a free loopback port; use as a context manager. `.url` is the base URL."""

    def __init__(self, latency_ms: float = 100.0, limit_rps: int | None = None, burst: int = 100,
                 per_minute: bool = False, access_log: bool = False) -> None:  # fmt: skip
        """`limit_rps`: requests per second enforced (per minute with `per_minute`, nginx's r/m);
        `access_log`: log each request's time and status (read them with `requests()`)."""
        self.access_log = access_log
        self.latency_ms = latency_ms
        self.limit_rps = limit_rps
        self.per_minute = per_minute
        self.burst = burst
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = Path(tempfile.mkdtemp(prefix="bench-sink-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NginxSink:
        reason = nginx_available()
        if reason:
            raise RuntimeError(reason)
        limit_zone = limit_req = ""
        if self.limit_rps:
            unit = "r/m" if self.per_minute else "r/s"
            # Keyed by the port: nginx does not count requests whose key is empty, as $server_name is here
            # (keyed by it, this sink enforced no limit at all).
            limit_zone = f"limit_req_zone $server_port zone=track:1m rate={self.limit_rps}{unit};"
            limit_req = f"limit_req zone=track burst={self.burst} nodelay; limit_req_status 429;"
        sleep = f"echo_sleep {self.latency_ms / 1000:.3f};" if self.latency_ms > 0 else ""
        conf = _CONF.format(
            module=ECHO_MODULE,
            tmp=self._tmp,
            port=self.port,
            limit_zone=limit_zone,
            limit_req=limit_req,
            header_limit=self.limit_rps or 3000,
            sleep=sleep,
            access_log=(f"log_format timing '$msec $request_time $status $uri'; access_log {self._tmp}/access.log timing;"
                        if self.access_log else "access_log off;"),
        )
        conf_path = self._tmp / "nginx.conf"
        conf_path.write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._proc = subprocess.Popen([nginx, "-c", str(conf_path), "-e", str(self._tmp / "error.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"nginx did not start; see {self._tmp / 'error.log'}")

    def requests(self) -> list[tuple[float, int]]:
        """(arrival, epoch seconds; status) of every request answered so far (needs access_log=True)."""
        return [(t, status) for t, status, _tag in self.tagged_requests()]

    def tagged_requests(self) -> list[tuple[float, int, str]]:
        """(arrival, status, tag) of every request answered so far: the tag is the base URL's `/wK` prefix
        ("" without one), so a benchmark can tell its workers apart in the sink's own log."""
        path = self._tmp / "access.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            done, took, status, uri = line.split()
            tag = uri.split("/")[1] if uri.startswith("/w") else ""
            out.append((float(done) - float(took), int(status), tag))
        return out

    def __exit__(self, *exc: object) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)
