"""The HTTP child's curl engine: libcurl's multi interface (pycurl) driven from one epoll loop, no asyncio.

Why: with aiohttp the child spent ~220 µs of CPU per request (its per-request path in Python: the
connector, the request writer, the response parser, the read timers, asyncio's loop). libcurl does the
HTTP exchange in C; what is left in Python is a few setopt/getinfo calls, two list appends per response
and the pipe frames. The protocol to the parent is the one process.py describes, unchanged.

What a request's failure means (the Transport protocol's NotSent / SentLost) is decided by one fact: did
libcurl ask for the body? It asks only once it is connected (TLS done, proxy tunnel up) and about to
write the request, so a body never read cannot have reached the server (refused, DNS, connect timeout,
TLS, proxy: NotSent); once read, any failure (reset, timeout, a response cut short) leaves the outcome
unknown (SentLost). The body is given through a read callback without a seek callback on purpose:
libcurl silently resends a request whose reused keep-alive connection died before any answer byte,
which needs a rewind; refused, the transfer fails (SentLost, as aiohttp's ServerDisconnectedError)
instead of applying a non-idempotent request twice without the client knowing.

Differences from the aiohttp engine, none of which Braze's API exercises: redirects are not followed
(a 3xx is returned as is), and the read timeout is a bound on the whole exchange (connect + read timeout)
rather than on the gap between two reads.
"""

from __future__ import annotations

import math
import os
import select
import ssl
import time
from typing import Any

import orjson
import pycurl

from connector.delivery.transport.frames import ANSWER, NOT_SENT, SENT_LOST, Frames

# Answers are written to the parent at most this long after the first of them completed: the answers of a
# group of requests (sent together, answered within a millisecond or two) then cross the pipe in one write,
# and the parent's reader thread and event loop wake once for them, not three or four times (issue 12).
HOLD_S = 0.002


class _Exchange:
    """One easy handle and the request it carries; reused for request after request (its connection
    stays in the multi handle's pool)."""

    __slots__ = ("curl", "rid", "body", "pos", "chunks", "lines", "touched")

    def __init__(self, options: list[tuple[int, Any]]) -> None:
        self.curl = pycurl.Curl()
        self.rid = 0
        self.body = memoryview(b"")
        self.pos = 0
        self.chunks: list[bytes] = []
        self.lines: list[bytes] = []
        self.touched = False  # libcurl asked for the body: the request may have reached the server
        c = self.curl
        for opt, value in options:
            c.setopt(opt, value)
        c.setopt(pycurl.WRITEFUNCTION, self.chunks.append)
        c.setopt(pycurl.HEADERFUNCTION, self.lines.append)
        c.setopt(pycurl.READFUNCTION, self.read)

    def read(self, size: int) -> bytes:
        self.touched = True
        start = self.pos
        self.pos = end = min(start + size, len(self.body))
        return bytes(self.body[start:end])

    def load(self, rid: int, url: bytes, body: bytes) -> None:
        # An empty body is never asked for: count it as sent from the start (unknown if it fails).
        self.rid, self.body, self.pos, self.touched = rid, memoryview(body), 0, not body
        self.chunks.clear()
        self.lines.clear()
        self.curl.setopt(pycurl.URL, url)
        self.curl.setopt(pycurl.POSTFIELDSIZE_LARGE, len(body))

    def headers(self) -> dict[str, str]:
        """The last response's headers, lower-case names (a later duplicate wins, as with aiohttp)."""
        out: dict[str, str] = {}
        for line in self.lines:
            if line.startswith(b"HTTP/"):  # after an interim response (100, a proxy's CONNECT): start again
                out.clear()
                continue
            name, sep, value = line.partition(b":")
            if sep:
                out[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
        return out


def easy_options(cfg: dict[str, Any]) -> list[tuple[int, Any]]:
    """The options every easy handle gets once: headers, timeouts, TLS, proxy, HTTP/1.1 like aiohttp."""
    headers = [f"{k}: {v}" for k, v in cfg["headers"].items()]
    headers += ["Expect:"]  # no 100-continue round trip (aiohttp sends none)
    connect_s = float(cfg["sock_connect"])
    options: list[tuple[int, Any]] = [
        (pycurl.POST, 1),
        (pycurl.HTTPHEADER, headers),
        (pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1),
        (pycurl.ACCEPT_ENCODING, "gzip, deflate"),
        (pycurl.CONNECTTIMEOUT_MS, max(1, math.ceil(connect_s * 1000))),
        (pycurl.TIMEOUT_MS, max(1, math.ceil((connect_s + float(cfg["sock_read"])) * 1000))),
        (pycurl.NOSIGNAL, 1),
        (pycurl.FOLLOWLOCATION, 0),
        (pycurl.SSL_VERIFYPEER, 1),
        (pycurl.SSL_VERIFYHOST, 2),
        (pycurl.DNS_CACHE_TIMEOUT, 300),
        # "" = no proxy, not even one from the environment: the parent resolved it (base.environ_proxy).
        (pycurl.PROXY, cfg.get("proxy") or ""),
    ]
    # The CA certificates Python's ssl (and so aiohttp) trusts, SSL_CERT_FILE / SSL_CERT_DIR included.
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        options.append((pycurl.CAINFO, paths.cafile))
    if paths.capath:
        options.append((pycurl.CAPATH, paths.capath))
    return options


class _Engine:
    """The loop: stdin frames in, curl sockets and timer through one epoll, answers out on `out_fd`."""

    def __init__(self, cfg: dict[str, Any], out_fd: int, answer_frame: Any) -> None:
        limit = int(cfg["concurrency"])
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self.multi.setopt(pycurl.M_MAXCONNECTS, limit)
        self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, limit)
        self.multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, limit)
        self.options = easy_options(cfg)
        self.idle: list[_Exchange] = []
        self.busy: dict[pycurl.Curl, _Exchange] = {}
        self.poll = select.epoll()
        self.watched: dict[int, int] = {}  # curl's sockets and the epoll events asked for them
        self.due: float | None = None  # curl's timer (monotonic seconds)
        self.out_fd = out_fd
        self.frame = answer_frame
        self.outgoing: list[bytes] = []
        self.held_since = 0.0  # when the oldest answer in `outgoing` was gathered

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        if what == pycurl.POLL_REMOVE:
            if self.watched.pop(fd, None) is not None:
                try:
                    self.poll.unregister(fd)
                except (OSError, ValueError):
                    pass  # closed already (epoll forgets a closed descriptor by itself)
            return
        events = (select.EPOLLIN if what & pycurl.POLL_IN else 0) | (
            select.EPOLLOUT if what & pycurl.POLL_OUT else 0
        )
        if fd in self.watched:
            try:
                self.poll.modify(fd, events)
            except FileNotFoundError:  # the number was closed and reused for a new socket
                self.poll.register(fd, events)
        else:
            try:
                self.poll.register(fd, events)
            except FileExistsError:
                self.poll.modify(fd, events)
        self.watched[fd] = events

    def _on_timer(self, timeout_ms: int) -> None:
        self.due = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def start(self, rid: int, url: bytes, body: bytes) -> None:
        ex = self.idle.pop() if self.idle else _Exchange(self.options)
        try:
            ex.load(rid, url, body)
        except (
            pycurl.error,
            ValueError,
        ) as exc:  # a URL libcurl refuses: nothing left (the requests in flight go on)
            self.answer(rid, NOT_SENT, b"{}", f"curl refused the request: {exc}".encode())
            self._release(ex)
            return
        self.busy[ex.curl] = ex
        self.multi.add_handle(ex.curl)

    def answer(self, rid: int, status: int, headers: bytes, content: bytes) -> None:
        if not self.outgoing:
            self.held_since = time.monotonic()
        self.outgoing += (self.frame(rid, status, len(headers), len(content)), headers, content)

    def hold_s(self) -> float:
        """How much longer the gathered answers may wait for others (0: write them now); see HOLD_S."""
        if not self.outgoing:
            return -1
        return max(0.0, self.held_since + HOLD_S - time.monotonic())

    def flush(self) -> None:
        """Write the answers gathered in this turn of the loop at once (one wake-up of the parent's reader)."""
        if not self.outgoing:
            return
        data = memoryview(b"".join(self.outgoing))
        self.outgoing.clear()
        while data:
            data = data[os.write(self.out_fd, data) :]

    def finish(self) -> None:
        """Answer every transfer libcurl has completed."""
        while True:
            queued, ok, failed = self.multi.info_read()
            for c in ok:
                ex = self._done(c)
                status = c.getinfo(pycurl.RESPONSE_CODE)
                self.answer(ex.rid, status, orjson.dumps(ex.headers()), b"".join(ex.chunks))
                self._release(ex)
            for c, code, message in failed:
                ex = self._done(c)
                why = f"curl error {code}: {message}".encode()
                self.answer(ex.rid, SENT_LOST if ex.touched else NOT_SENT, b"{}", why)
                self._release(ex)
            if not queued:
                return

    def _done(self, c: pycurl.Curl) -> _Exchange:
        self.multi.remove_handle(c)
        return self.busy.pop(c)

    def _release(self, ex: _Exchange) -> None:
        ex.body = memoryview(b"")
        ex.chunks.clear()
        self.idle.append(ex)

    def act(self, fd: int, events: int) -> None:
        mask = (pycurl.CSELECT_IN if events & (select.EPOLLIN | select.EPOLLHUP) else 0) | (
            pycurl.CSELECT_OUT if events & select.EPOLLOUT else 0
        )
        if events & select.EPOLLERR:
            mask |= pycurl.CSELECT_ERR
        self.multi.socket_action(fd, mask)

    def timeout_s(self) -> float:
        """How long epoll may wait: until curl's timer, or for ever (-1) without one."""
        if self.due is None:
            return -1
        return max(0.0, self.due - time.monotonic())

    def tick(self) -> None:
        """Run curl's timer if it is due."""
        if self.due is not None and time.monotonic() >= self.due:
            self.due = None
            self.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)

    def close(self) -> None:
        for c in list(self.busy):
            self.multi.remove_handle(c)
        for ex in [*self.idle, *self.busy.values()]:
            ex.curl.close()
        self.multi.close()
        self.poll.close()


def serve(in_fd: int, out_fd: int) -> None:
    """Read the config frame, answer ready (engine "curl"), then serve request frames until stdin closes,
    answering every request it took before exiting."""
    frames = Frames()
    cfg: dict[str, Any] | None = None
    while cfg is None:
        data = os.read(in_fd, 1 << 16)
        if not data:
            return  # the parent went away before configuring us
        raw = frames.feed_config(data)
        if raw is not None:
            cfg = orjson.loads(raw)
    engine = _Engine(cfg, out_fd, ANSWER.pack)
    try:
        engine.poll.register(in_fd, select.EPOLLIN)
        engine.answer(0, 0, b"{}", b"curl")
        frames.cut(engine.start)  # requests that came with the config frame
        engine.flush()
        reading = True
        while reading or engine.busy:
            timeout = engine.timeout_s()
            hold = engine.hold_s()
            if hold == 0:
                engine.flush()
            elif hold > 0:
                timeout = hold if timeout < 0 else min(timeout, hold)
            for fd, events in engine.poll.poll(timeout):
                if fd == in_fd:
                    data = os.read(in_fd, 1 << 16)
                    if data:
                        frames.buf += data
                        frames.cut(engine.start)
                    else:  # the parent closed our stdin (or exited): finish what we hold, then exit
                        reading = False
                        engine.poll.unregister(in_fd)
                else:
                    engine.act(fd, events)
            engine.tick()
            engine.finish()
        engine.flush()
    finally:
        engine.close()
