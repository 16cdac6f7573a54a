"""The HTTP transport in a child process, so HTTP has a core (and a GIL) of its own.

Why: in one process the bulk run is bound by one GIL. Reading, validating and mapping chunks on the main
thread delays the event loop, and a bulk run plateaued near 870 requests/s at a 1,000/s limit on two
cores (BENCHMARKS.md, delivery). Here the parent only writes each request to a pipe and reads its answer
back; the child (`python -m connector.delivery.transport.child`, child.py) runs the HTTP engine: libcurl's
multi interface (curl_child.py) or, with BRAZE_CONNECTOR_HTTP_ENGINE=aiohttp or without pycurl, an aiohttp
session on an event loop. The kind keeps its old name, `aiohttp-process`.

Protocol over the child's stdin/stdout, all integers big-endian:
- parent -> child: one config frame (u32 length + JSON: headers, concurrency, timeouts, proxy;
  the API key travels here, never in argv or the environment: `child_env` (spare.py) drops every
  variable holding it, and BRAZE_* key variables), then request frames
  (u32 id, u32 url length, u32 body length, url, body).
- child -> parent: one ready frame (id 0; its content names the engine), then answer frames (u32 id, i32 status, u32 headers length,
  u32 content length, headers as JSON, content). Status -1 means NotSent, -2 SentLost (content: why).

Failure semantics match the in-process transports: a request the child never received is NotSent; a
request in the child when it exited (or unanswered past every timeout) is SentLost, because Braze may
have applied it. A dead child is restarted on the next send, a few times at most. Closing stdin lets
the child finish what is in flight and exit; a parent that dies closes it too, so no child outlives it.
The child runs in a session of its own, so a terminal's Ctrl-C reaches only the parent, which stops it.

The first child is the one `braze-connector run` started at its start when it could tell the run would
need it (delivery/spare.py), if any: its start-up overlaps the command's own imports.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, Any

import orjson

from connector.delivery import spare
from connector.delivery.spare import child_env as child_env  # re-exported: its home was here
from connector.delivery.spare import package_root as package_root
from connector.delivery.transport.base import (
    CONNECT_TIMEOUT_S,
    Answer,
    Gate,
    NotSent,
    SentLost,
    Transport,
    environ_proxy,
)
from connector.delivery.transport.frames import ANSWER as _ANSWER
from connector.delivery.transport.frames import ENGINE_VAR, engine_name_unknown, engine_wanted
from connector.delivery.transport.frames import LENGTH as _LENGTH
from connector.delivery.transport.frames import NOT_SENT as _NOT_SENT
from connector.delivery.transport.frames import REQUEST as _REQUEST
from connector.delivery.transport.frames import SENT_LOST as _SENT_LOST

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
MAX_RESTARTS = 3


class ProcessTransportError(Exception):
    """The HTTP child process could not be started (the caller may fall back to an in-process transport)."""


class _Child:
    """One child process: its pipes, the requests it holds, a thread writing them and one reading answers.

    Writes go through a queue to a writer thread, so a child that stops reading cannot block a sender past
    its deadline: the sender gives up (SentLost), kills the child, and every request it held fails too.
    """

    def __init__(
        self, config: bytes, secrets: tuple[str, ...] = (), proc: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Spawn a child (or use `proc`, one already spawned: the command's spare, delivery/spare.py) and
        send it its config frame."""
        if proc is None:
            try:
                proc = spare.spawn(secrets)
            except OSError as exc:
                raise ProcessTransportError(f"cannot start the HTTP process: {exc}") from None
        self.proc = proc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.pending: dict[int, _Entry] = {}
        self.written: set[int] = set()  # requests whose frame may have reached the child, even partly
        self.used = False  # a request was ever queued for the child
        self.lock = threading.Lock()  # guards pending, written and alive
        # (gate, requests): the requests sent together (a group) pass one gate, leave in one write
        self.outbox: queue.SimpleQueue[tuple[Gate | None, list[tuple[int, bytes, bytes]]] | None] = queue.SimpleQueue()
        self.wlock = threading.Lock()  # one thread writes to the pipe at a time (the writer, or a sender: _direct)
        self.pipe_size = _pipe_size(self.stdin.fileno())  # None: the room left in the pipe cannot be known
        self.alive = True
        self.engine = ""  # "curl" or "aiohttp", once ready
        ready: Future[None] = Future()
        self.reader = threading.Thread(target=self._read, args=(ready,), name="braze-http-reader", daemon=True)
        try:
            self.stdin.write(_LENGTH.pack(len(config)) + config)
            self.stdin.flush()
        except OSError as exc:
            self.kill()
            raise ProcessTransportError(f"the HTTP process did not start: {exc}") from None
        self.reader.start()
        self.writer = threading.Thread(target=self._write, name="braze-http-writer", daemon=True)
        self.writer.start()
        self._ready = ready

    def wait_ready(self) -> None:
        """Block until the child has started (its imports done). Not in __init__: the run spawns the child
        before its local stages and waits here only at its first send, so the child's start overlaps them."""
        try:
            self._ready.result(timeout=START_TIMEOUT_S)
        except (FutureTimeout, ProcessTransportError) as exc:
            self.kill()
            raise ProcessTransportError(f"the HTTP process did not start: {exc or 'timed out'}") from None
        asked = os.environ.get(ENGINE_VAR, "").strip()
        unknown = engine_name_unknown()
        if unknown is not None:  # the run's report says it too (stages.py)
            logger.warning("%s: the HTTP process sends with %s", unknown, self.engine)
        elif self.engine != engine_wanted():
            level = logging.WARNING if asked else logging.INFO
            logger.log(level, "the HTTP process sends with %s (pycurl cannot be imported there)", self.engine)

    def _read(self, ready: Future[None]) -> None:
        """Resolve each request's future from the child's answers, until the child's stdout closes.

        One read takes every answer the pipe holds; the coroutines' futures among them are handed to their
        event loop in one call (one wake-up of that loop per read, not per answer)."""
        fd = self.stdout.fileno()
        buf = bytearray()
        head = _ANSWER.size
        pending, written = self.pending, self.written
        try:
            while True:
                data = os.read(fd, _READ_SIZE)
                if not data:
                    break  # a frame cut short stays pending: its outcome is unknown (SentLost below)
                buf += data
                pos, n = 0, len(buf)
                out = _Outcomes()
                while n - pos >= head:
                    rid, status, n_headers, n_content = _ANSWER.unpack_from(buf, pos)
                    end = pos + head + n_headers + n_content
                    if end > n:
                        break
                    at = pos + head
                    pos = end
                    if rid == 0:  # ready; its content names the engine serving
                        self.engine = bytes(buf[at + n_headers : end]).decode("ascii", "replace") or "aiohttp"
                        ready.set_result(None)
                        continue
                    entry = pending.pop(rid, None)
                    written.discard(rid)
                    if entry is None:  # the sender gave up waiting (and reported SentLost)
                        continue
                    content = bytes(buf[at + n_headers : end])
                    if status == _NOT_SENT:
                        out.add(entry, NotSent(content.decode("utf-8", "replace")))
                    elif status == _SENT_LOST:
                        out.add(entry, SentLost(content.decode("utf-8", "replace")))
                    else:
                        out.add(entry, Answer(status, orjson.loads(buf[at : at + n_headers]), content))
                del buf[:pos]
                out.flush()
        except OSError:
            pass  # the pipe broke: the child is gone
        finally:
            if not ready.done():
                ready.set_exception(ProcessTransportError("it exited before it was ready"))
            with self.lock:  # no new request can slip in between the check and the failure
                self.alive = False
                lost, self.pending = self.pending, {}
                written = self.written
            self.outbox.put(None)  # stop the writer
            out = _Outcomes()
            for rid, entry in lost.items():
                if rid in written:
                    out.add(entry, SentLost("the HTTP process exited while the request was in flight"))
                else:
                    out.add(entry, NotSent("the HTTP process exited before the request reached it"))
            out.flush()

    def _write(self) -> None:
        """Write queued requests to the child, in order, until the sentinel or a broken pipe; the requests
        queued together leave in one write."""
        fd = self.stdin.fileno()
        while True:
            batch = [self.outbox.get()]
            while len(batch) < _WRITE_BATCH:
                try:
                    batch.append(self.outbox.get_nowait())
                except queue.Empty:
                    break
            frames: list[bytes] = []
            sizes: list[tuple[int, int]] = []  # (request id, frame length), in the order written
            stop = False
            for item in batch:
                if item is None:
                    stop = True
                    break
                gate, requests = item
                if gate is not None and not self._passes(requests, gate):
                    continue
                self._frames(requests, frames, sizes)
            if frames:
                with self.wlock:
                    sent = self._send_frames(fd, b"".join(frames), sizes)
                if not sent:
                    return
            if stop:
                return

    def _send_frames(self, fd: int, data: bytes, sizes: list[tuple[int, int]]) -> bool:
        """Write `data` (the frames of `sizes`) to the child; False when the pipe broke (the child is killed)."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, view[done:])
            return True
        except (OSError, ValueError):
            # The child is gone. A frame wholly in the pipe may have reached it (outcome unknown if it gets
            # no answer); one cut short was never read whole, so it was not sent.
            with self.lock:
                offset = 0
                for rid, size in sizes:
                    offset += size
                    if offset > done:
                        self.written.discard(rid)
            self.kill()
            return False

    def _passes(self, requests: list[tuple[int, bytes, bytes]], gate: Gate) -> bool:
        """Wait for the requests' gate (their journal records on disk); if it raises, their senders get that
        error."""
        try:
            gate()
            return True
        except Exception as exc:
            out = _Outcomes()
            with self.lock:
                for rid, _, _ in requests:
                    entry = self.pending.pop(rid, None)
                    if entry is not None:
                        out.add(entry, exc)
            out.flush()
            return False

    def start(self, url: bytes, body: bytes, gate: Gate | None, entry: _Entry) -> int:
        """Queue a request for the child: its id. Its answer resolves `entry`: a Future (on the reader
        thread), or goes to a callback on an event loop (_Entry)."""
        return self.start_many([(url, body, entry)], gate)[0]

    def start_many(self, requests: list[tuple[bytes, bytes, _Entry]], gate: Gate | None) -> list[int]:
        """Queue requests that leave together (one gate, one write): their ids, in order."""
        out: list[tuple[int, bytes, bytes]] = []
        with self.lock:
            if not self.alive:
                raise NotSent("the HTTP process has exited")
            pending = self.pending
            for url, body, entry in requests:
                rid = next(_IDS)
                pending[rid] = entry
                out.append((rid, url, body))
            self.used = True
        if gate is not None or not self._direct(out):
            self.outbox.put((gate, out))
        return [rid for rid, _, _ in out]

    def _frames(self, requests: list[tuple[int, bytes, bytes]], frames: list[bytes],
                sizes: list[tuple[int, int]]) -> None:  # fmt: skip
        """Add the pipe frames of `requests` still pending (a sender may have given up on one) to `frames`, and
        (request id, frame length) to `sizes`; each is marked written: from here on the child may have it, so
        its outcome is unknown if lost."""
        with self.lock:
            pending, written = self.pending, self.written
            for rid, url, body in requests:
                if rid not in pending:
                    continue
                written.add(rid)
                frames += (_REQUEST.pack(rid, len(url), len(body)), url, body)
                sizes.append((rid, _REQUEST.size + len(url) + len(body)))

    def _direct(self, requests: list[tuple[int, bytes, bytes]]) -> bool:
        """Write requests (whose gate has passed) to the pipe from the calling thread when that cannot block:
        nothing is queued for the writer thread, which is not writing either, and the pipe has room for them
        all. False: queue them for the writer thread. Saves that thread a wake-up (and the GIL's hand-offs)
        per group of requests; a child that stops reading still never blocks a sender (the room is checked)."""
        if self.pipe_size is None or not self.outbox.empty() or not self.wlock.acquire(blocking=False):
            return False
        try:
            fd = self.stdin.fileno()
            size = sum(_REQUEST.size + len(url) + len(body) for _, url, body in requests)
            if self.pipe_size - _unread(fd) < size:
                return False
            frames: list[bytes] = []
            sizes: list[tuple[int, int]] = []
            self._frames(requests, frames, sizes)
            if frames:
                self._send_frames(fd, b"".join(frames), sizes)
            return True
        except OSError:
            return False  # the room could not be read: the writer thread takes them (and sees the pipe's state)
        finally:
            self.wlock.release()

    def send(self, url: bytes, body: bytes, wait_s: float, gate: Gate | None = None) -> Answer:
        future: Future[Answer] = Future()
        rid = self.start(url, body, gate, future)
        try:
            return future.result(timeout=wait_s)
        except FutureTimeout:
            raise self.expire(rid, wait_s) from None

    def expire(self, rid: int, wait_s: float) -> SentLost:
        """Request `rid` was neither taken nor answered in time: the child is stuck. Kill it so that every
        request it holds fails now (SentLost: it may have been applied) instead of hanging its sender."""
        with self.lock:
            self.pending.pop(rid, None)
            self.written.discard(rid)
        logger.warning("the HTTP process did not answer within %.0f s; stopping it", wait_s)
        self.kill()
        return SentLost("no answer from the HTTP process in time")

    def expire_many(self, rids: list[int], wait_s: float) -> list[_Entry]:
        """expire() for the requests of `rids` still unanswered (a group): their entries, which the caller
        fails with SentLost; the child is killed when any was left."""
        late: list[_Entry] = []
        with self.lock:
            for rid in rids:
                entry = self.pending.pop(rid, None)
                self.written.discard(rid)
                if entry is not None:
                    late.append(entry)
        if late:
            logger.warning("the HTTP process did not answer within %.0f s; stopping it", wait_s)
            self.kill()
        return late

    def close(self, timeout_s: float) -> None:
        self.outbox.put(None)  # the writer finishes what is queued, then stops
        with self.lock:
            unused = not self.used
        if unused:  # a run that sent nothing (unchanged, refused, dry): no request to answer, no exit to await
            self.writer.join(timeout=timeout_s)
            self.kill()
            for pipe in (self.stdin, self.stdout):
                try:
                    pipe.close()
                except (OSError, ValueError):
                    pass
            self.reader.join(timeout=timeout_s)
            return
        self.writer.join(timeout=timeout_s)
        if self.writer.is_alive():  # the child stopped reading
            self.kill()
        try:
            self.stdin.close()  # EOF: the child answers what it holds, then exits
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self.reader.join(timeout=timeout_s)
        self.stdout.close()

    def kill(self) -> None:
        self.alive = False
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _pipe_size(fd: int) -> int | None:
    """The capacity of pipe `fd` (Linux), else None; raised to PIPE_BYTES where the system allows."""
    try:
        import fcntl

        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default (64 KB) stays, groups go through the writer
        return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    except (ImportError, AttributeError, OSError):
        return None


def _unread(fd: int) -> int:
    """Bytes written to pipe `fd` that its reader has not read yet (Linux: FIONREAD works on either end)."""
    import fcntl
    import termios

    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder, signed=True)


_IDS = itertools.count(1)
_READ_SIZE = 1 << 16  # below malloc's mmap threshold: a bigger read buffer costs an mmap per read
_WRITE_BATCH = 64  # requests per write at most
# The requests pipe's capacity where Linux allows it (its default is 64 KB): a group of ten 12 KB bodies
# fits, so a group whose journal records are on disk is written by the sender itself (_Child._direct).
PIPE_BYTES = 1 << 20

# Where a request's answer goes: a Future (a thread waits), or (loop, answered, token): answered([(token,
# outcome), ...]) is called on that loop with the answers of one read that go to it (a coroutine's future
# through _settle, or the requests of a group: start_many).
_Answered = Callable[[list[tuple[Any, "Answer | BaseException"]]], None]
_Entry = Future[Answer] | tuple[asyncio.AbstractEventLoop, _Answered, Any]


class _Outcomes:
    """Answers (or errors) for pending entries: Futures are resolved at once; the others are handed to
    their loop in one call per (loop, callback) and flush."""

    def __init__(self) -> None:
        self._by_target: dict[tuple[asyncio.AbstractEventLoop, _Answered], list[tuple[Any, Answer | BaseException]]] = {}

    def add(self, entry: _Entry, outcome: Answer | BaseException) -> None:
        if isinstance(entry, Future):
            if isinstance(outcome, BaseException):
                entry.set_exception(outcome)
            else:
                entry.set_result(outcome)
            return
        loop, answered, token = entry
        items = self._by_target.get((loop, answered))
        if items is None:
            items = self._by_target[(loop, answered)] = []
        items.append((token, outcome))

    def flush(self) -> None:
        for (loop, answered), items in self._by_target.items():
            try:
                loop.call_soon_threadsafe(answered, items)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits these answers any more
        self._by_target = {}


def _settle(items: list[tuple[asyncio.Future[Answer], Answer | BaseException]]) -> None:
    """On the waiters' loop: resolve each (a waiter that timed out is done already)."""
    for waiter, outcome in items:
        if waiter.done():
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


class _AnswerLate(Exception):
    """No answer from the child within the transport's wait (send_async)."""


def _time_out(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(_AnswerLate())


class _Deadlines:
    """The answers the coroutines of one event loop wait for, oldest first, and one timer failing those
    past the transport's wait. Not a timer per request: at 1,000 requests a second, each cancelled only at
    its answer, they would fill the loop's timer heap with tens of thousands of entries that every
    rate-limit sleep then sorts past."""

    def __init__(self, wait_s: float) -> None:
        self._wait_s = wait_s
        self._due: dict[asyncio.Future[Answer], float] = {}  # insertion order = deadline order
        self._timer: asyncio.TimerHandle | None = None

    def add(self, waiter: asyncio.Future[Answer]) -> None:
        """On the loop's thread (the loop is not kept: a gone loop must not stay alive through us)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self._wait_s
        self._due[waiter] = due
        if self._timer is None:
            self._timer = loop.call_at(due, self._check)

    def discard(self, waiter: asyncio.Future[Answer]) -> None:
        self._due.pop(waiter, None)

    def _check(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = []
        for waiter, due in self._due.items():
            if due > now:
                break
            late.append(waiter)
        for waiter in late:
            del self._due[waiter]
            _time_out(waiter)
        if self._due:
            self._timer = loop.call_at(next(iter(self._due.values())), self._check)


class _GroupDeadlines:
    """_Deadlines for the groups of one event loop (start_many): a group's requests still unanswered past the
    transport's wait fail with SentLost. Checked at most once a second (the wait is over 40 s): one timer,
    and one entry per group, not per request."""

    def __init__(self, wait_s: float) -> None:
        self._wait_s = wait_s
        self._groups: deque[tuple[float, _Child, list[int]]] = deque()  # deadline order
        self._timer: asyncio.TimerHandle | None = None

    def add(self, child: _Child, rids: list[int]) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._wait_s
        self._groups.append((due, child, rids))
        if self._timer is None:
            self._timer = loop.call_at(due, self._check)

    def _check(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        groups = self._groups
        out = _Outcomes()
        while groups and groups[0][0] <= now:
            _, child, rids = groups.popleft()
            for entry in child.expire_many(rids, self._wait_s):  # the ones still unanswered
                out.add(entry, SentLost("no answer from the HTTP process in time"))
        out.flush()
        if groups:
            self._timer = loop.call_at(max(groups[0][0], now + 1.0), self._check)


def _secrets_of(headers: dict[str, str]) -> tuple[str, ...]:
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    key = auth.partition(" ")[2].strip()
    return (key,) if key else ()


class ProcessTransport:
    """Transport protocol (send/close) over an HTTP engine (curl or aiohttp) that lives in a child process."""

    def __init__(self, base_url: str, headers: dict[str, str], *, concurrency: int, timeout_s: float) -> None:
        proxy = environ_proxy(base_url)
        self._config = orjson.dumps(
            {
                "headers": headers,
                "concurrency": concurrency,
                "sock_connect": min(CONNECT_TIMEOUT_S, timeout_s),
                "sock_read": timeout_s,
                "proxy": proxy,
            }
        )
        # An answer can take the connect timeout plus the read timeout; past that (and a margin), the
        # child is stuck and the request's outcome is unknown.
        self._wait_s = CONNECT_TIMEOUT_S + timeout_s + 30.0
        self._deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
            weakref.WeakKeyDictionary()
        )  # per event loop that sends (weakly: a loop that is gone takes its waiters with it)
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupDeadlines] = (
            weakref.WeakKeyDictionary()
        )  # the same for the groups of start_many
        self._close_s = timeout_s + CONNECT_TIMEOUT_S
        self._lock = threading.Lock()
        self._closed = False
        self._restarts = 0
        self._secrets = _secrets_of(headers)
        self._fallback_args = (base_url, headers, concurrency, timeout_s)
        self._fallback: Transport | None = None  # in-process aiohttp, if the first child never got ready
        self._ready = False
        self._child = self._first_child()  # waited for at the first send

    def _first_child(self) -> _Child:
        """The child the command started early (spare.py) if it is fit for this run, else a new one."""
        early = spare.take(self._secrets)
        if early is not None:
            try:
                return _Child(self._config, self._secrets, early)
            except ProcessTransportError as exc:  # it exited meanwhile (it is reaped): start another
                logger.info("the HTTP process started early is gone (%s); starting a new one", exc)
        return _Child(self._config, self._secrets)

    def _first_ready(self) -> None:
        """Wait for the first child; if it never gets ready, send from this process instead (as before)."""
        self._ready = True
        try:
            self._child.wait_ready()
        except ProcessTransportError as exc:
            from connector.delivery.transport.aiohttp_transport import AiohttpTransport

            logger.warning("%s; sending from this process instead (slower on a busy run)", exc)
            base_url, headers, concurrency, timeout_s = self._fallback_args
            self._fallback = AiohttpTransport(base_url, headers, concurrency=concurrency, timeout_s=timeout_s)

    def _current(self) -> _Child | Transport:
        with self._lock:
            if self._closed:
                raise NotSent("transport closed")
            if not self._ready:
                self._first_ready()
            if self._fallback is not None:
                return self._fallback
            if self._child.alive:
                return self._child
            if self._restarts >= MAX_RESTARTS:
                raise NotSent(f"the HTTP process exited {self._restarts + 1} times; not restarting it")
            self._restarts += 1
            logger.warning("the HTTP process exited (code %s); starting a new one", self._child.proc.poll())
            self._child.close(1.0)
            try:
                self._child = _Child(self._config, self._secrets)
                self._child.wait_ready()
            except ProcessTransportError as exc:
                raise NotSent(str(exc)) from None
            return self._child

    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        child = self._current()
        if not isinstance(child, _Child):
            return child.send(url, body, gate)
        return child.send(url.encode(), body, self._wait_s, gate)

    async def send_async(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        child = self._current()
        if not isinstance(child, _Child):
            return await child.send_async(url, body, gate)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        rid = child.start(url.encode(), body, gate, (loop, _settle, waiter))
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            deadlines = self._deadlines[loop] = _Deadlines(self._wait_s)
        # Not asyncio.wait_for: no task per request (this runs 1,000 times a second).
        deadlines.add(waiter)
        try:
            return await waiter
        except _AnswerLate:
            raise child.expire(rid, self._wait_s) from None
        finally:
            deadlines.discard(waiter)

    def start_many(self, requests: list[tuple[str, bytes, Any]], gate: Gate | None, answered: _Answered) -> bool:
        """Send requests together (a group: one gate, one hand-off to the pipe), on the running loop:
        answered([(token, outcome), ...]) is called there with their outcomes (an Answer, NotSent or SentLost,
        or what the gate raised), those of one read in one call. False when this transport sends from this
        process now (the child never got ready): the caller sends them one by one."""
        loop = asyncio.get_running_loop()
        try:
            child = self._current()
            if not isinstance(child, _Child):
                return False
            rids = child.start_many([(url.encode(), body, (loop, answered, token)) for url, body, token in requests],
                                    gate)  # fmt: skip
        except NotSent as exc:
            failed: list[tuple[Any, Answer | BaseException]] = [(token, exc) for _, _, token in requests]
            loop.call_soon(answered, failed)
            return True
        groups = self._groups.get(loop)
        if groups is None:
            groups = self._groups[loop] = _GroupDeadlines(self._wait_s)
        groups.add(child, rids)
        return True

    def close(self, wait_s: float | None = None) -> None:
        """Close the child's stdin (it answers what it holds, then exits); kill it past `wait_s`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._fallback is not None:
            self._fallback.close(wait_s)
        self._child.close(self._close_s if wait_s is None else wait_s)

    def wait_ready(self) -> None:
        """Wait until the child can send (the first send waits for it anyway)."""
        self._current()

    @property
    def engine(self) -> str:
        """The HTTP engine of the child ("curl" or "aiohttp"; "" before it is ready)."""
        return self._child.engine if self._fallback is None else "aiohttp (in this process)"

    @property
    def pid(self) -> int:
        """The child's process id (tests use it to kill the child)."""
        return self._child.proc.pid
