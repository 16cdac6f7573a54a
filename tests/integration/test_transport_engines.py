"""The HTTP child's two engines (curl, aiohttp) against scripted loopback servers: the same answers and the
same failure classes, NotSent (certainly never sent: safe to resend) or SentLost (may have been applied).

Each server is a socket on 127.0.0.1 that reads requests and does what the test scripts (answer, hold,
close mid-response, ...), and counts the requests it read, so a test can tell a silent resend apart.
"""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector.delivery.transport import NotSent, SentLost
from connector.delivery.transport.frames import ENGINE_VAR
from connector.delivery.transport.process import ProcessTransport

HEADERS = {"Authorization": "Bearer engine-test-key", "Content-Type": "application/json"}
BODY = orjson.dumps({"attributes": [{"external_id": "e1", "plan": "pro"}]})

# handler(connection, request head, request body, index of the request on this server) -> keep the connection?
Handler = Callable[[socket.socket, bytes, bytes, int], bool]


@pytest.fixture(params=["curl", "aiohttp"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENGINE_VAR, str(request.param))
    return str(request.param)


def open_transport(url: str, *, timeout_s: float = 10) -> ProcessTransport:
    t = ProcessTransport(url, HEADERS, concurrency=4, timeout_s=timeout_s)
    t.wait_ready()
    return t


@pytest.fixture
def transport_for(engine: str) -> Iterator[Callable[..., ProcessTransport]]:
    opened: list[ProcessTransport] = []

    def make(url: str, **kw: Any) -> ProcessTransport:
        t = open_transport(url, **kw)
        assert t.engine == engine
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


class Scripted:
    """A loopback HTTP/1.1 server running `handler` for every request it reads (optionally over TLS)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.requests: list[bytes] = []  # request bodies, in the order read
        self.connections = 0
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                while len(data) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                body, data = data[:length], data[length:]
                with self._lock:
                    self.requests.append(body)
                    index = len(self.requests) - 1
                if not self.handler(conn, head, body, index):
                    conn.close()
                    return
        except OSError:
            return

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def serve() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def make(handler: Handler, tls: ssl.SSLContext | None = None) -> Scripted:
        s = Scripted(handler, tls)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def respond(status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer_ok(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
    conn.sendall(respond(201, b'{"message":"success"}', (("Content-Type", "application/json"),)))
    return True


def test_an_answer_comes_back_whole_with_its_headers(serve: Any, transport_for: Any) -> None:
    seen: list[bytes] = []

    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        seen.append(head)
        return answer_ok(conn, head, body, index)

    server = serve(handler)
    a = transport_for(server.url).send(server.url + "/users/track", BODY)
    assert (a.status, a.content, a.headers["content-type"]) == (
        201,
        b'{"message":"success"}',
        "application/json",
    )
    assert server.requests == [BODY]
    head = seen[0].lower()
    assert b"authorization: bearer engine-test-key" in head and b"content-type: application/json" in head
    assert b"expect:" not in head and head.startswith(b"post /users/track http/1.1")


def test_a_429_and_its_rate_limit_headers_arrive_as_sent(serve: Any, transport_for: Any) -> None:
    headers = (("X-RateLimit-Limit", "3000"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "1764755400"),
               ("X-Ratelimit-Retry-After", "2"), ("Retry-After", "3"))  # fmt: skip

    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        conn.sendall(respond(429, b'{"message":"Rate Limit Exceeded"}', headers))
        return True

    server = serve(handler)
    a = transport_for(server.url).send(server.url + "/users/track", BODY)
    assert a.status == 429 and orjson.loads(a.content) == {"message": "Rate Limit Exceeded"}
    for name, value in headers:
        assert a.headers[name.lower()] == value


def test_large_bodies_cross_both_ways(serve: Any, transport_for: Any) -> None:
    """A 4 MB request arrives whole; an 8 MB answer comes back whole."""
    big = b'{"attributes":[{"external_id":"b","x":"' + b"a" * (4 * 1024 * 1024) + b'"}]}'
    answer = bytes(range(256)) * (32 * 1024)

    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        conn.sendall(respond(200, answer))
        return True

    server = serve(handler)
    a = transport_for(server.url).send(server.url + "/users/track", big)
    assert server.requests == [big] and a.status == 200 and a.content == answer


def test_a_gzip_answer_is_decompressed(serve: Any, transport_for: Any) -> None:
    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        conn.sendall(respond(201, gzip.compress(b'{"message":"success"}'), (("Content-Encoding", "gzip"),)))
        return True

    server = serve(handler)
    a = transport_for(server.url).send(server.url + "/users/track", BODY)
    assert a.content == b'{"message":"success"}'


def test_connect_refused_is_not_sent(transport_for: Any) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there now
    with pytest.raises(NotSent):
        transport_for(url).send(url + "/users/track", BODY)


def test_an_unknown_host_is_not_sent(transport_for: Any) -> None:
    url = "http://no-such-host.invalid"
    with pytest.raises(NotSent):
        transport_for(url, timeout_s=5).send(url + "/users/track", BODY)


def test_a_connection_closed_without_an_answer_is_unknown(serve: Any, transport_for: Any) -> None:
    server = serve(lambda conn, head, body, index: False)  # reads the request, closes without a word
    with pytest.raises(SentLost):
        transport_for(server.url).send(server.url + "/users/track", BODY)
    assert server.requests == [BODY]


def test_a_connection_closed_mid_answer_is_unknown(serve: Any, transport_for: Any) -> None:
    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        conn.sendall(b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"message":"suc')
        return False

    server = serve(handler)
    with pytest.raises(SentLost):
        transport_for(server.url).send(server.url + "/users/track", BODY)


def test_a_reused_connection_dropped_after_the_request_is_unknown_and_not_resent(
    serve: Any, transport_for: Any
) -> None:
    """The second request on a kept-alive connection is read, then the connection closes unanswered: the
    server may have applied it. Not resent behind the client's back (libcurl would, on a fresh connection)."""

    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        return answer_ok(conn, head, body, index) if index == 0 else False

    server = serve(handler)
    t = transport_for(server.url)
    assert t.send(server.url + "/users/track", BODY).status == 201
    with pytest.raises(SentLost):
        t.send(server.url + "/users/track", b'{"events":[]}')
    assert server.requests == [BODY, b'{"events":[]}'] and server.connections == 1


def test_an_answer_later_than_the_timeout_is_unknown(serve: Any, transport_for: Any) -> None:
    release = threading.Event()

    def handler(conn: socket.socket, head: bytes, body: bytes, index: int) -> bool:
        release.wait(30)
        return False

    server = serve(handler)
    try:
        with pytest.raises(SentLost):
            transport_for(server.url, timeout_s=0.5).send(server.url + "/users/track", BODY)
        assert server.requests == [BODY]
    finally:
        release.set()


def test_a_server_that_never_finishes_the_tls_handshake_is_not_sent(transport_for: Any) -> None:
    """TCP accepted, TLS never answered: a connect-phase timeout, nothing sent."""
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with pytest.raises(NotSent):
            transport_for(url, timeout_s=0.5).send(url + "/users/track", BODY)
    finally:
        sock.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    d: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    ctx.cert_path = str(d / "cert.pem")  # type: ignore[attr-defined]
    return ctx


def test_tls_is_verified_an_untrusted_certificate_is_not_sent(
    serve: Any, transport_for: Any, self_signed: ssl.SSLContext
) -> None:
    server = serve(answer_ok, tls=self_signed)
    with pytest.raises(NotSent):
        transport_for(server.url).send(server.url + "/users/track", BODY)
    assert server.requests == []


def test_tls_with_a_trusted_certificate_is_answered(
    serve: Any, engine: str, monkeypatch: pytest.MonkeyPatch, self_signed: ssl.SSLContext
) -> None:
    """SSL_CERT_FILE (Python's ssl, so aiohttp, and the curl engine alike) decides which CAs are trusted."""
    monkeypatch.setenv("SSL_CERT_FILE", self_signed.cert_path)  # type: ignore[attr-defined]
    server = serve(answer_ok, tls=self_signed)
    t = open_transport(server.url)
    try:
        assert t.engine == engine
        assert t.send(server.url + "/users/track", BODY).status == 201
    finally:
        t.close()


def test_the_engine_falls_back_to_aiohttp_when_pycurl_is_missing(
    serve: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that cannot import pycurl serves with aiohttp, and the parent says so."""
    (tmp_path / "pycurl.py").write_text("raise ImportError('pycurl hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv(ENGINE_VAR, "curl")
    server = serve(answer_ok)
    with caplog.at_level("WARNING", logger="connector.delivery.transport.process"):
        t = open_transport(server.url)
    try:
        assert t.engine == "aiohttp" and "sends with aiohttp" in caplog.text
        assert t.send(server.url + "/users/track", BODY).status == 201
    finally:
        t.close()


def test_an_engine_name_that_names_none_is_said_not_ignored(
    serve: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """BRAZE_CONNECTOR_HTTP_ENGINE=bogus: the default engine sends, and the log says the name meant nothing."""
    monkeypatch.setenv(ENGINE_VAR, "bogus")
    server = serve(answer_ok)
    with caplog.at_level("WARNING", logger="connector.delivery.transport.process"):
        t = open_transport(server.url)
    try:
        assert t.send(server.url + "/users/track", BODY).status == 201
        assert t.engine == "curl" and f"{ENGINE_VAR}='bogus' names no HTTP engine (curl, aiohttp)" in caplog.text
    finally:
        t.close()
