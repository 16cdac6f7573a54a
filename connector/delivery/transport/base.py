"""What every transport shares: the raw Answer, the two failure kinds, and the Transport protocol.

A transport sends one POST and returns the raw answer, or raises `NotSent` (nothing reached the server:
safe to resend) or `SentLost` (the connection failed after the request was sent: Braze may or may not have
applied it). Status codes, retries and the rate limiter are the client's business (delivery/client.py).
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0


def environ_proxy(base_url: str) -> str | None:
    """The proxy `requests` would use for `base_url` (resolved once per transport, like requests).

    Without any `*_proxy` variable (the usual case) there is none on Linux, where proxies come only from the
    environment; requests (~35 ms of CPU to import here, before the first request) is imported only otherwise."""
    if sys.platform not in ("darwin", "win32") and not any(
        value and name.lower().endswith("_proxy") for name, value in os.environ.items()
    ):
        return None
    import requests

    return requests.utils.get_environ_proxies(base_url).get(base_url.split(":", 1)[0])


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes


class NotSent(Exception):
    """The request never reached the server (refused, DNS, connect timeout, TLS): safe to resend."""


class SentLost(Exception):
    """The connection failed after the request was sent (reset, read timeout): outcome unknown."""


# Called right before a request leaves: returns when it may (its journal record is on disk), or raises to
# stop it (the exception reaches the sender; nothing was sent). The process transport calls it on its writer
# thread, so the senders do not each wait for the journal.
Gate = Callable[[], None]


class Transport(Protocol):
    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer: ...

    async def send_async(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        """send() for a coroutine on the caller's event loop: waiting for the answer holds no thread (the
        gate may still wait on a transport thread)."""
        ...

    def close(self, wait_s: float | None = None) -> None:
        """Release the connections; `wait_s` bounds any wait for requests still in flight."""
        ...


def awaitable(future: Future[T]) -> asyncio.Future[T]:
    """An asyncio future on the running loop that takes `future`'s outcome once it has one.

    Unlike asyncio.wrap_future, cancelling the returned future (a timeout) leaves `future` alone, so the
    thread that resolves it never finds it cancelled.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def copy(f: Future[T]) -> None:
        if waiter.done():
            return
        if f.cancelled():
            waiter.set_exception(NotSent("the transport closed before the request was sent"))
            return
        exc = f.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(f.result())

    def resolved(f: Future[T]) -> None:
        try:
            loop.call_soon_threadsafe(copy, f)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits the answer any more

    future.add_done_callback(resolved)
    return waiter


class DaemonPool:
    """At most `size` daemon threads running blocking calls for an event loop (`submit` -> Future).

    Not concurrent.futures.ThreadPoolExecutor: its threads are joined at interpreter exit, so a run stopped
    at once would wait for the HTTP exchanges still running there; these threads die with the process, as
    the writer's threads always did. Threads start as calls arrive, up to `size`.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = max(1, size)
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run fn(*args) on a pool thread. Raises RuntimeError once closed."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is closed")
            self._calls.put((fn, args, future))
            if self._idle == 0 and len(self._threads) < self._size:
                t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._idle -= 1 if self._idle else 0
        return future

    def _work(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, args, future = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """No new calls; calls not started are cancelled; running ones finish on their own (not waited for)."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        while True:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[2].cancel()
        for _ in range(threads):
            self._calls.put(None)
