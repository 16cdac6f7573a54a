"""Read Braze's replies: per-object errors, request-level messages, and the reason texts the report shows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

logger = logging.getLogger(__name__)

# The abort reasons are grouped by text in the report's skipped counts, so they stay constant strings.
ABORT_AUTH = "run aborted: API key refused (HTTP 401)"
ABORT_FORBIDDEN = "run aborted: access denied (HTTP 403)"
ABORT_UNREACHABLE = "run aborted: destination unreachable"
ABORT_ERROR = "run aborted: internal error"
ABORT_JOURNAL = "run aborted: the run journal cannot be written"
# Why a row may have been applied more than once (report.json possibly_duplicated, its file's _reason).
DUP_DROPPED = "sent again after an attempt whose connection dropped after sending"
DUP_RESUMED = "sent before the run was interrupted, with no answer; sent again by --resume"
DRY_RUN = "dry run"


def stopped_reason(why: str) -> str:
    """The skip reason of rows a stopped run did not send, e.g. "run stopped by SIGTERM"."""
    return f"run {why}"


@dataclass(frozen=True, slots=True)
class ObjectError:
    """One entry of Braze's `errors[]`: the array and 0-based index within it, and Braze's `type` text."""

    array: str
    index: int
    text: str


def parse_body(body: Any) -> Any:
    """Decode a response body given as bytes; anything else (already parsed, or text) is returned as is."""
    if not isinstance(body, bytes | bytearray | memoryview):
        return body
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return bytes(body[:300]).decode("utf-8", "replace")


def object_errors(doc: Any) -> list[ObjectError]:
    """The `errors[]` items that name an object by (`input_array`, `index`); others are ignored.

    Braze's error shape is only known from observed traffic, so anything unexpected degrades to "no
    per-object errors" rather than raising.
    """
    if not isinstance(doc, dict):
        return []
    items = doc.get("errors")
    if not isinstance(items, list):
        return []
    out: list[ObjectError] = []
    for e in items:
        if not isinstance(e, dict):
            continue
        array, index = e.get("input_array"), e.get("index")
        if not isinstance(array, str) or not isinstance(index, int) or isinstance(index, bool):
            continue
        text = e.get("type")
        out.append(ObjectError(array, index, str(text) if text is not None else "rejected by Braze"))
    return out


def message_of(doc: Any, fallback: str = "") -> str:
    """Braze's request-level message (`message`, or `error` for the malformed-JSON gateway reply)."""
    if isinstance(doc, dict):
        for key in ("message", "error"):
            value = doc.get(key)
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())
    elif isinstance(doc, str) and doc.strip():  # a non-JSON reply, kept as text by the client
        return " ".join(doc.split())[:300]
    return fallback


def request_reason(status: int | None, doc: Any) -> str:
    """The reject reason for a row isolated by a request-level 4xx: status plus Braze's message."""
    msg = message_of(doc)
    head = f"HTTP {status}" if status is not None else "request refused"
    return f"{head}: {msg}" if msg else head


def notice_of(doc: Any) -> str | None:
    """The Canvas `notice` of a 201 (paused or archived Canvas: the trigger had no effect)."""
    if isinstance(doc, dict):
        notice = doc.get("notice")
        if isinstance(notice, str) and notice:
            return notice
    return None


def confirmed_user(doc: Any) -> dict[str, Any] | None:
    """users[0] of a /users/track/sync reply (the docs call it an object; every example is an array)."""
    if not isinstance(doc, dict):
        return None
    users = doc.get("users")
    if isinstance(users, list):
        return users[0] if users and isinstance(users[0], dict) else None
    return users if isinstance(users, dict) else None


def error_text(exc: BaseException) -> str:
    """A one-line description of an API error for failed.csv (never includes the key: errors never carry it)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
