"""POST one JSON document to a webhook (the standard library's HTTP client: one attempt, a timeout).

The URL is a secret (a Slack incoming webhook's path is its key), so nothing here puts it in a message:
errors are described by what happened (`connection refused`, `timed out after 5.0 s`, `HTTP 500`), not by
the exception's text. Redirects are not followed (a 3xx is not delivered), so the body never goes
anywhere but the URL given.
"""

from __future__ import annotations

import errno
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson

MAX_BODY_READ = 64 * 1024


@dataclass(frozen=True)
class PostResult:
    """What came of one post: delivered (a 2xx), the HTTP status if any answer came, and why not."""

    delivered: bool
    status: int | None
    error: str | None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect())


def post_json(url: str, payload: dict[str, Any], timeout_s: float) -> PostResult:
    """POST `payload` as JSON to `url` within `timeout_s` in all (a receiver that trickles its answer byte
    by byte is cut off too: the socket's own timeout is per read); never raises for a network or HTTP failure."""
    done: list[PostResult] = []
    worker = threading.Thread(target=lambda: done.append(_post(url, payload, timeout_s)), daemon=True,
                              name="alert-webhook")  # fmt: skip
    worker.start()
    worker.join(timeout_s)
    return done[0] if done else PostResult(False, None, f"timed out after {timeout_s:g} s")


def url_problem(url: str) -> str | None:
    """Why `url` cannot be posted to, in words that hold no part of it; None when it can.

    A URL with credentials (`user:password@host`) is refused before any connection or name lookup: the post
    sends no credentials, and urllib would take `user:password@host` for the host (a name lookup of the
    password, then a misleading "host name not found").
    """
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # ValueError when it is not a number in 0..65535
    except ValueError:
        return "the URL is malformed (its host or port)"
    if parts.scheme.lower() not in ("http", "https"):
        return "the URL is not an http:// or https:// URL"
    if "@" in parts.netloc:
        return ("the URL holds credentials (user:password@ before the host), which a webhook post does not "
                "send; use the receiver's own webhook URL (Slack's, Teams' and most receivers' carry their "
                "secret in the path), without user:password@")  # fmt: skip
    if not parts.hostname:
        return "the URL has no host"
    return None


def _post(url: str, payload: dict[str, Any], timeout_s: float) -> PostResult:
    problem = url_problem(url)
    if problem is not None:
        return PostResult(False, None, problem)
    body = orjson.dumps(payload)
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "braze-connector-alerts"},
    )  # fmt: skip
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            answer.read(MAX_BODY_READ)
            status = int(answer.status)
    except urllib.error.HTTPError as e:
        e.close()
        return PostResult(False, e.code, f"HTTP {e.code}")
    except (urllib.error.URLError, OSError) as e:
        return PostResult(False, None, _why(e, timeout_s))
    except http.client.HTTPException as e:
        return PostResult(False, None, f"bad HTTP answer ({type(e).__name__})")
    except ValueError:
        return PostResult(False, None, "the URL is malformed")
    if 200 <= status < 300:
        return PostResult(True, status, None)
    return PostResult(False, status, f"HTTP {status}")


def _why(e: BaseException, timeout_s: float) -> str:
    """The cause of a failed connection, in words that hold no part of the URL."""
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"timed out after {timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    if isinstance(reason, OSError) and reason.errno is not None:
        return f"network error ({errno.errorcode.get(reason.errno, reason.errno)})"
    if isinstance(reason, OSError) and "timed out" in str(reason):
        return f"timed out after {timeout_s:g} s"
    return f"network error ({type(reason).__name__})"
