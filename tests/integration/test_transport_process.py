"""The aiohttp-process transport against the real emulator: answers, a child that dies, secrets, fallback.

The status table and retry policy over this transport are covered by test_client.py (parametrized over
every transport); here is what only a transport in another process can get wrong.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from processes import running

from connector.delivery.transport import NotSent, SentLost, make_transport
from connector.delivery.transport.aiohttp_transport import AiohttpTransport
from connector.delivery.transport.frames import ENGINE_VAR
from connector.delivery.transport.process import ProcessTransport
from connector.emulator import EmulatorServer

KEY = "test-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def attrs(*ids: str) -> bytes:
    return orjson.dumps({"attributes": [{"external_id": i, "plan": "pro"} for i in ids]})


@pytest.fixture(autouse=True, params=["curl", "aiohttp"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each engine of the HTTP child (BRAZE_CONNECTOR_HTTP_ENGINE)."""
    monkeypatch.setenv(ENGINE_VAR, str(request.param))
    return str(request.param)


@pytest.fixture
def transport(emulator: EmulatorServer) -> Any:
    t = ProcessTransport(emulator.url, HEADERS, concurrency=16, timeout_s=10)
    yield t
    t.close()


def test_answers_come_back_to_the_right_caller(emulator: EmulatorServer, transport: ProcessTransport) -> None:
    """64 concurrent sends, each gets its own answer (ids are not mixed up), and each was applied once."""
    url = emulator.url + "/users/track"

    def one(i: int) -> tuple[int, int, dict[str, Any]]:
        a = transport.send(url, attrs(f"u{i}") if i % 2 else b"{not json")
        return i, a.status, orjson.loads(a.content)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    for i, status, doc in results:
        if i % 2:
            assert status == 201 and doc["attributes_processed"] == 1
        else:
            assert status == 400 and "message body does not match declared format" in doc["error"]
    ledger = emulator.ledger()
    applied = [e for e in ledger if e["status"] == 201]
    assert len(applied) == 32
    assert emulator.user("external_id", "u7")["attributes"]["plan"] == "pro"


def test_headers_are_lower_case_and_rate_limit_headers_arrive(
    emulator: EmulatorServer, transport: ProcessTransport, engine: str
) -> None:
    transport.wait_ready()
    assert transport.engine == engine
    a = transport.send(emulator.url + "/users/track", attrs("h1"))
    assert a.status == 201
    assert "x-ratelimit-limit" in a.headers and "x-ratelimit-remaining" in a.headers
    assert all(k == k.lower() for k in a.headers)


def test_a_four_megabyte_body_crosses_the_pipe(emulator: EmulatorServer, transport: ProcessTransport) -> None:
    big = b'{"attributes":[{"external_id":"b","x":"' + b"a" * (4 * 1024 * 1024 + 10) + b'"}]}'
    a = transport.send(emulator.url + "/users/track", big)
    assert a.status == 413


class HeldRequests:
    """A loopback HTTP server that reads each request and never answers: `.arrived` counts the requests
    it holds, so a test knows for certain that they are in flight (no sleep, whatever the machine's load)."""

    def __init__(self) -> None:
        self.arrived = 0
        self._cond = threading.Condition()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.arrived >= n, timeout), f"{self.arrived} of {n} requests arrived"

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            conn.close()


def test_a_killed_child_loses_in_flight_requests_as_unknown_then_restarts(emulator: EmulatorServer) -> None:
    """Requests in the child when it dies are SentLost (Braze may have applied them); the next send works."""
    held = HeldRequests()
    t = ProcessTransport(emulator.url, HEADERS, concurrency=8, timeout_s=10)
    # Killed once it runs: a child killed while it starts makes the transport send from this process instead
    # (the sends then succeed), which a loaded machine's slow start used to turn this test into.
    t.wait_ready()
    try:
        errors: list[BaseException] = []

        def send() -> None:
            try:
                t.send(held.url + "/users/track", attrs("k1"))
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                errors.append(e)

        threads = [threading.Thread(target=send) for _ in range(3)]
        for th in threads:
            th.start()
        held.wait_for(3)  # the three requests reached the server: the child holds them, awaiting answers
        os.kill(t.pid, signal.SIGKILL)
        for th in threads:
            th.join(timeout=30)
        assert len(errors) == 3 and all(isinstance(e, SentLost) for e in errors), errors
        old = t.pid
        a = t.send(emulator.url + "/users/track", attrs("k2"))
        assert a.status == 201 and t.pid != old
    finally:
        t.close()
        held.close()


def test_a_child_that_keeps_dying_is_not_restarted_for_ever(emulator: EmulatorServer) -> None:
    t = ProcessTransport(emulator.url, HEADERS, concurrency=4, timeout_s=5)
    t.wait_ready()  # a first child killed before it is ready means no child at all: the in-process fallback
    try:
        for _ in range(4):
            os.kill(t.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while t._child.alive and time.monotonic() < deadline:  # the reader thread sees the EOF
                time.sleep(0.01)
            try:
                t.send(emulator.url + "/users/track", attrs("d"))
            except NotSent as e:
                assert "not restarting" in str(e)
                return
        pytest.fail("the transport restarted its child more than MAX_RESTARTS times")
    finally:
        t.close()


def test_the_api_key_is_not_in_the_childs_command_line_or_environment(transport: ProcessTransport) -> None:
    proc = Path(f"/proc/{transport.pid}")
    if not proc.exists():
        pytest.skip("no /proc on this system")
    assert KEY.encode() not in (proc / "cmdline").read_bytes()
    assert KEY.encode() not in (proc / "environ").read_bytes()


def test_close_ends_the_child_and_later_sends_are_not_sent(emulator: EmulatorServer) -> None:
    t = ProcessTransport(emulator.url, HEADERS, concurrency=4, timeout_s=5)
    assert t.send(emulator.url + "/users/track", attrs("c1")).status == 201
    child = t._child.proc
    t.close()
    assert child.poll() is not None  # exited, and reaped
    with pytest.raises(NotSent):
        t.send(emulator.url + "/users/track", attrs("c2"))


def test_unreachable_server_is_not_sent(transport: ProcessTransport) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(NotSent):
        transport.send(f"http://127.0.0.1:{port}/users/track", attrs("x"))


def test_a_child_that_cannot_start_falls_back_to_the_in_process_transport(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The child is waited for at the first send (its start overlaps the run's local stages): a child that
    never gets ready there is replaced by the in-process transport, and the requests still go out."""
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with caplog.at_level(logging.WARNING, logger="connector.delivery.transport"):
        t = make_transport("aiohttp-process", emulator.url, HEADERS, concurrency=4, timeout_s=5)
        try:
            assert t.send(emulator.url + "/users/track", attrs("f1")).status == 201
            assert "sending from this process instead" in caplog.text
            # Popen succeeds; /bin/false may be gone before the config frame is written (fallback at once)
            # or only before the first send (fallback there).
            assert isinstance(getattr(t, "_fallback", t), AiohttpTransport)
            assert t.send(emulator.url + "/users/track", attrs("f2")).status == 201
        finally:
            t.close()


def test_a_child_that_stops_reading_cannot_hang_senders(emulator: EmulatorServer) -> None:
    """SIGSTOP the child: a 4 MB send and a small one both give up within the deadline (the child is killed),
    the small one unsent or unknown, and the transport serves the next request from a new child."""
    t = ProcessTransport(emulator.url, HEADERS, concurrency=4, timeout_s=1)
    t._wait_s = 2.0  # the real deadline is connect + read timeout + 30 s
    t.wait_ready()  # stopped once it runs, not while it starts
    try:
        os.kill(t.pid, signal.SIGSTOP)
        big = b'{"attributes":[{"external_id":"b","x":"' + b"a" * (4 * 1024 * 1024) + b'"}]}'
        errors: list[BaseException] = []

        def send(body: bytes) -> None:
            try:
                t.send(emulator.url + "/users/track", body)
            except (NotSent, SentLost) as e:
                errors.append(e)

        threads = [threading.Thread(target=send, args=(b,)) for b in (big, attrs("s1"))]
        started = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=20)
        assert time.monotonic() - started < 10 and len(errors) == 2, errors
        assert t.send(emulator.url + "/users/track", attrs("s2")).status == 201
    finally:
        t.close()


def test_coroutines_waiting_on_a_stopped_child_give_up_at_the_deadline(emulator: EmulatorServer) -> None:
    """send_async's deadlines (one timer per event loop, not one per request): every coroutine waiting on a
    SIGSTOPped child gets NotSent or SentLost once the deadline passes, and the next send gets a new child."""
    import asyncio

    t = ProcessTransport(emulator.url, HEADERS, concurrency=8, timeout_s=1)
    t._wait_s = 1.5
    t.wait_ready()
    url = emulator.url + "/users/track"

    async def go() -> tuple[list[BaseException | object], float]:
        assert (await t.send_async(url, attrs("a0"))).status == 201  # the loop's deadlines exist and empty out
        os.kill(t.pid, signal.SIGSTOP)
        started = time.monotonic()
        results = await asyncio.gather(*(t.send_async(url, attrs(f"a{i}")) for i in range(1, 6)),
                                       return_exceptions=True)  # fmt: skip
        return results, time.monotonic() - started

    try:
        results, took = asyncio.run(go())
        assert all(isinstance(r, (NotSent, SentLost)) for r in results), results
        assert took < 10
        assert t.send(url, attrs("a9")).status == 201
    finally:
        t.close()


# A parent process that starts the transport, puts one request in flight, prints the child's pid, then waits.
ORPHAN_PARENT = """
import sys, threading, time
from connector.delivery.transport.process import ProcessTransport
t = ProcessTransport(sys.argv[1], {"Authorization": "Bearer test-key", "Content-Type": "application/json"},
                     concurrency=4, timeout_s=30)
t.wait_ready()
threading.Thread(target=t.send, args=(sys.argv[1] + "/users/track", sys.argv[2].encode()), daemon=True).start()
print(t.pid, flush=True)
time.sleep(600)
"""


def _connected_to(port: int) -> bool:
    """Whether some loopback TCP connection to `port` is established (/proc/net/tcp, hex addresses)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        remote, state = line.split()[2], line.split()[3]
        if int(remote.rsplit(":", 1)[1], 16) == port and state == "01":
            return True
    return False


def test_the_child_has_its_own_session_and_does_not_outlive_a_killed_parent(emulator_factory: Any) -> None:
    """Ctrl-C in a terminal cannot reach the child (its own session); when the parent is SIGKILLed, the child
    answers what it holds (the request in flight is applied) and exits."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    slow = emulator_factory(latency_ms=1000)
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_PARENT, slow.url, attrs("orphan").decode()],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert os.getsid(child) == child != os.getsid(parent.pid)
        # Killed once the child has connected to the emulator (it read the request and is sending it; the
        # answer then waits on the latency). No sleep: a loaded machine may take longer to get there.
        deadline = time.monotonic() + 60
        while not _connected_to(int(slow.url.rsplit(":", 1)[1])):
            assert time.monotonic() < deadline, "the request never left the child"
            time.sleep(0.01)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 30
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child), "the HTTP child outlived its killed parent"
        assert [e["status"] for e in slow.ledger()] == [201]  # in flight, still answered (then nobody read it)
    finally:
        parent.kill()


def test_the_child_inherits_no_variable_holding_the_key(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-Child-Env-3b9f0d"
    emulator = emulator_factory(api_keys=(secret,))
    monkeypatch.setenv("BRAZE_API_KEY", secret)
    monkeypatch.setenv("MY_CRM_KEY", secret)  # the variable destination.api_key_env may name
    monkeypatch.setenv("NOTES", f"key={secret};")
    monkeypatch.setenv("BRAZE_OTHER_TOKEN", "another")
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", emulator.url)  # not a secret: kept
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    t = ProcessTransport(emulator.url, headers, concurrency=4, timeout_s=10)
    try:
        # Past its exec first: between fork and exec /proc shows the parent's environment, and during the exec
        # an empty one (seen under load: every name missing).
        t.wait_ready()
        environ = Path(f"/proc/{t.pid}/environ")
        if not environ.exists():
            pytest.skip("no /proc on this system")
        names = {v.split(b"=", 1)[0] for v in environ.read_bytes().split(b"\0") if v}
        assert secret.encode() not in environ.read_bytes()
        assert not names & {b"BRAZE_API_KEY", b"MY_CRM_KEY", b"NOTES", b"BRAZE_OTHER_TOKEN"}
        assert {b"BRAZE_REST_ENDPOINT", b"PATH"} <= names
        assert t.send(emulator.url + "/users/track", attrs("u1")).status == 201  # the key reached the child
    finally:
        t.close()


def test_the_child_imports_the_same_connector_package_as_its_parent() -> None:
    import connector
    from connector.delivery.transport.process import package_root

    assert package_root() / "connector" == Path(connector.__file__).resolve().parent


@pytest.mark.parametrize("kind", ["aiohttp-process", "aiohttp", "requests"])
def test_a_request_leaves_only_after_its_gate_and_a_failing_gate_stops_it(emulator: EmulatorServer, kind: str) -> None:
    """The run journal's gate: the request waits for it; if it raises, the sender gets the error, unsent."""
    t = make_transport(kind, emulator.url, HEADERS, concurrency=4, timeout_s=10)
    url = emulator.url + "/users/track"
    opened = threading.Event()
    try:
        def late_gate() -> None:
            assert opened.wait(10)

        result: list[int] = []
        sender = threading.Thread(target=lambda: result.append(t.send(url, attrs("g1"), late_gate).status))
        sender.start()
        time.sleep(0.2)
        assert emulator.ledger() == [] and not result  # held back by its gate
        opened.set()
        sender.join(10)
        assert result == [201] and len(emulator.ledger()) == 1

        def broken_gate() -> None:
            raise OSError("journal.log: No space left on device")

        with pytest.raises(OSError, match="No space left"):
            t.send(url, attrs("g2"), broken_gate)
        assert len(emulator.ledger()) == 1 and t.send(url, attrs("g3")).status == 201  # the transport goes on
    finally:
        t.close()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.example:3128"},
        {"http_proxy": "http://lower.example:8080", "HTTP_PROXY": "http://upper.example:8080"},
        {"https_proxy": "http://proxy.example:3128", "no_proxy": "api.example.com"},
        {"https_proxy": "http://proxy.example:3128", "NO_PROXY": ".example.com"},
        {"no_proxy": "*"},
        {"https_proxy": ""},
    ],
)
@pytest.mark.parametrize("url", ["https://api.example.com", "http://127.0.0.1:8080"])
def test_the_proxy_is_the_one_requests_would_use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str) -> None:
    """environ_proxy skips importing requests when no proxy variable is set, and otherwise asks requests."""
    import requests

    from connector.delivery.transport.base import environ_proxy

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environ_proxy(url) == requests.utils.get_environ_proxies(url).get(url.split(":", 1)[0])


def test_a_child_never_sent_anything_is_stopped_without_waiting_for_its_exit(emulator: EmulatorServer) -> None:
    """A run that sends nothing (an unchanged delta run, a refused one) holds no request in the child: closing
    kills it instead of waiting for it to finish starting and exit on EOF; a used child still exits on EOF."""
    unused = ProcessTransport(emulator.url, HEADERS, concurrency=2, timeout_s=5)
    pid = unused.pid
    unused.close()
    assert unused._child.proc.returncode == -signal.SIGKILL and not running(pid)
    used = ProcessTransport(emulator.url, HEADERS, concurrency=2, timeout_s=5)
    assert used.send(emulator.url + "/users/track", attrs("u1")).status == 201
    used.close()
    assert used._child.proc.returncode == 0  # answered what it held, then exited by itself


def group_answers(t: ProcessTransport, url: str, bodies: list[bytes], gate: Any = None) -> list[Any]:
    """start_many on a fresh event loop: each request's outcome (Answer or error), in order."""
    import asyncio

    async def go() -> list[Any]:
        loop = asyncio.get_running_loop()
        got: dict[int, Any] = {}
        done = loop.create_future()

        def answered(items: list[tuple[Any, Any]]) -> None:
            got.update(items)
            if len(got) == len(bodies) and not done.done():
                done.set_result(None)

        assert t.start_many([(url, b, i) for i, b in enumerate(bodies)], gate, answered)
        await asyncio.wait_for(done, 60)
        return [got[i] for i in range(len(bodies))]

    return asyncio.run(go())


def test_a_group_whose_gate_passed_is_written_by_the_sender_itself(emulator: EmulatorServer) -> None:
    """start_many: a group without a gate (its journal records on disk) goes to the pipe from the calling
    thread when the pipe has room (no hand-off to the writer thread); with a gate, through the writer thread,
    which calls the gate once for the group. Each request gets its own answer either way."""
    t = ProcessTransport(emulator.url, HEADERS, concurrency=16, timeout_s=10)
    try:
        t.wait_ready()
        child = t._child
        direct: list[bool] = []
        write_direct = child._direct
        child._direct = lambda requests: direct.append(write_direct(requests)) or direct[-1]  # type: ignore[method-assign]
        url = emulator.url + "/users/track"
        answers = group_answers(t, url, [attrs(f"g{i}") for i in range(10)])
        assert [a.status for a in answers] == [201] * 10
        if child.pipe_size is not None:  # Linux: the room in the pipe can be read
            assert direct == [True]
        direct.clear()
        gates: list[int] = []
        answers = group_answers(t, url, [attrs(f"h{i}") for i in range(5)], gate=lambda: gates.append(1))
        assert [a.status for a in answers] == [201] * 5 and gates == [1] and direct == []
        assert all(emulator.user("external_id", f"{p}{i}") for p, n in (("g", 10), ("h", 5)) for i in range(n))
    finally:
        t.close()


def test_a_group_waiting_on_a_stopped_child_gives_up_at_the_deadline(emulator: EmulatorServer) -> None:
    """start_many's deadlines (one entry per group): every request of a group sent to a SIGSTOPped child gets
    NotSent or SentLost once the deadline passes, and the next send gets a new child."""
    t = ProcessTransport(emulator.url, HEADERS, concurrency=8, timeout_s=1)
    t._wait_s = 1.5
    t.wait_ready()
    url = emulator.url + "/users/track"
    try:
        os.kill(t.pid, signal.SIGSTOP)
        results = group_answers(t, url, [attrs(f"d{i}") for i in range(6)])
        assert all(isinstance(r, (NotSent, SentLost)) for r in results), results
        assert t.send(url, attrs("d9")).status == 201
    finally:
        t.close()
