"""/users/track bodies cut out of objects already encoded as JSON (records.EncodedObjects): no dict and no
serialisation per object; a request over consecutive objects is one slice of the encoded bytes.

The bodies, object counts, byte caps and user cuts are exactly batching.pack_track_array's for the same
objects as dicts (tests/unit/test_pack_encoded.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from connector.delivery.request import Request, user_cut, windows
from connector.records import EncodedObjects


def _body(head: bytes, objects: EncodedObjects, tokens: Sequence[int], contiguous: bool) -> bytes:
    if contiguous:
        inner = objects.encoded_run(tokens[0], tokens[-1] + 1) if tokens else b""
    else:
        inner = objects.encoded_at(tokens)
    return head + inner + b"]}"


def _fit(objects: EncodedObjects, tokens: Sequence[int], overhead: int, max_bytes: int) -> tuple[int, bool]:
    """How many leading objects fit one body of `max_bytes`, and whether the first is over it alone."""
    size = overhead + objects.size(tokens[0])
    if size > max_bytes:
        return 1, True
    for k in range(1, len(tokens)):
        size += objects.size(tokens[k]) + 1
        if size > max_bytes:
            return k, False
    return len(tokens), False


def pack_encoded(
    array: str,
    objects: EncodedObjects,
    user_keys: Sequence[str],
    positions: Sequence[int],
    *,
    max_objects: int,
    max_bytes: int,
    endpoint: str,
) -> Iterator[Request]:
    """Requests for the objects at `positions` (tokens = positions), all in `array`, in order."""
    head = b'{"' + array.encode() + b'":['
    overhead = len(head) + 2

    def build(tokens: Sequence[int], keys: list[str], next_key: str | None) -> Request:
        contiguous = isinstance(tokens, range)
        m = user_cut(keys, len(tokens), next_key)
        body = _body(head, objects, tokens[:m], contiguous)
        oversize = False
        if len(body) > max_bytes:
            m, oversize = _fit(objects, tokens, overhead, max_bytes)
            if not oversize:
                m = user_cut(keys, m, keys[m] if m < len(keys) else next_key)
            body = _body(head, objects, tokens[:m], contiguous)
        return Request.packed(endpoint, body, array, None, list(tokens[:m]), keys[:m], oversize)

    return windows(user_keys, positions, max_objects, build)
