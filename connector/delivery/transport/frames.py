"""The frames between the HTTP child and its parent (process.py describes the protocol), and the choice
of the child's engine. Shared by both engines (child.py, curl_child.py) and the parent; imports nothing
heavy.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping

REQUEST = struct.Struct("!III")
ANSWER = struct.Struct("!IiII")
LENGTH = struct.Struct("!I")
NOT_SENT, SENT_LOST = -1, -2

ENGINE_VAR = "BRAZE_CONNECTOR_HTTP_ENGINE"
ENGINES = ("curl", "aiohttp")


class Frames:
    """The parent's frames on our stdin, cut out of what each read brings (often several at once): the
    config frame first, then request frames."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.configured = False

    def feed_config(self, data: bytes) -> bytes | None:
        """Add `data`; the config frame's content once it is whole (later bytes stay in `buf`), else None."""
        buf = self.buf
        buf += data
        if len(buf) < LENGTH.size or len(buf) < LENGTH.size + LENGTH.unpack_from(buf)[0]:
            return None
        end = LENGTH.size + LENGTH.unpack_from(buf)[0]
        raw = bytes(buf[LENGTH.size : end])
        del buf[:end]
        self.configured = True
        return raw

    def cut(self, on_request: Callable[[int, bytes, bytes], None]) -> None:
        """Hand every whole request frame in `buf` to on_request(id, url, body) and drop it from `buf`."""
        buf = self.buf
        pos, n = 0, len(buf)
        head = REQUEST.size
        while n - pos >= head:
            rid, n_url, n_body = REQUEST.unpack_from(buf, pos)
            end = pos + head + n_url + n_body
            if end > n:
                break
            on_request(rid, bytes(buf[pos + head : pos + head + n_url]), bytes(buf[pos + head + n_url : end]))
            pos = end
        if pos:
            del buf[:pos]


def engine_name_unknown(environ: Mapping[str, str] = os.environ) -> str | None:
    """"BRAZE_CONNECTOR_HTTP_ENGINE='x' names no HTTP engine (curl, aiohttp)" when it is set to no engine's
    name (the default engine sends: the log and the report say so), else None."""
    asked = environ.get(ENGINE_VAR, "").strip()
    if not asked or asked.lower() in ENGINES:
        return None
    return f"{ENGINE_VAR}={asked!r} names no HTTP engine ({', '.join(ENGINES)})"


def engine_wanted(environ: Mapping[str, str] = os.environ) -> str:
    """BRAZE_CONNECTOR_HTTP_ENGINE if it names an engine, else `curl` (the default)."""
    value = environ.get(ENGINE_VAR, "").strip().lower()
    return value if value in ENGINES else "curl"
