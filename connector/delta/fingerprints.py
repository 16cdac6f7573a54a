"""What delta sync remembers of an object, computed for a whole chunk at once.

- attributes: a *record*, the JSON of the attribute values Braze will hold once the object is confirmed
  (identifier keys included: they are the same for one user key, and never compared). Usually that is
  the row's own JSON as mapping encoded it (`encodings`), so a later row is unchanged when its JSON equals
  the record, without looking at any attribute; only rows whose JSON differs are compared attribute by
  attribute (`differs`). Where the record is not the row (operations left out, attributes kept from an
  earlier run, or long values) it is orjson's sorted JSON (`record`). A record over `LONG` bytes keeps a
  16-byte digest of each long value instead of the value (`{"$fp": hex}`: no attribute value can be such
  an object, Braze refuses nested keys starting with `$`), so the state stays small whatever the values.
  Records written by earlier versions (always sorted JSON) are read alike.
- events and purchases: a *key*, a 16-byte BLAKE2b digest of the whole object's JSON (sorted keys, as
  earlier versions computed it, so events delivered before an upgrade stay delivered); the record is empty.

Values compared one by one are serialised by orjson with the same options, so a value read back from the
state serialises to the same bytes as when it was sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import Any

import numpy as np
import orjson

from connector.records import EncodedObjects

_SORT = orjson.OPT_SORT_KEYS
LONG = 1024  # record bytes above which long values are kept as digests
_LONG_VALUE = 64  # ... and the value size above which a value is a digest
# Keys of an attributes object that are not attribute values.
CONTROL = frozenset(("external_id", "user_alias", "braze_id", "_update_existing_only"))
OPERATIONS = frozenset(("inc", "add", "remove", "update", "$add", "$remove", "$update"))
EVENT_RECORD = b"1"
_PLAIN = frozenset((str, int, bool))  # not float: -0.0 == 0.0, and their JSON differs


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_SORT)


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def object_keys(objects: list[dict[str, Any]]) -> list[str]:
    """Events and purchases: one digest per object (identical objects share it)."""
    blake = hashlib.blake2b
    return [blake(orjson.dumps(o, option=_SORT), digest_size=16).hexdigest() for o in objects]


def encodings(objects: Sequence[dict[str, Any]]) -> list[bytes]:
    """Each object's JSON as it will be sent: sliced out of an EncodedObjects (nothing decoded or encoded),
    else orjson's (the same bytes: mapping/encode.py)."""
    if isinstance(objects, EncodedObjects):
        data = bytes(objects.data)
        offsets = objects.offsets.tolist() if hasattr(objects.offsets, "tolist") else list(objects.offsets)
        return [data[a : b - 1] for a, b in pairwise(offsets)]
    return list(map(orjson.dumps, objects))


def flat(rows: list[bytes], objects: Sequence[dict[str, Any]] | None = None) -> bool:
    """Whether every row is at most LONG bytes and holds no nested object (so no operation): the chunk
    has one "{" per row (one scan in C; a "{" inside a string counts too, which only costs a closer look).
    `objects`: the rows' EncodedObjects, if they are: read in numpy from its buffer, nothing joined."""
    if not rows:
        return True
    if isinstance(objects, EncodedObjects) and len(objects) == len(rows):
        ends = np.asarray(objects.offsets, np.int64)
        data = np.frombuffer(objects.data, np.uint8)[ends[0] : ends[-1]]  # the rows and a comma after each
        return int((np.diff(ends) - 1).max()) <= LONG and int(np.count_nonzero(data == 0x7B)) == len(rows)
    return max(map(len, rows)) <= LONG and b"".join(rows).count(b"{") == len(rows)


def encoded_objects(parts: list[bytes], decoded: dict[int, dict[str, Any]]) -> EncodedObjects:
    """Objects from their JSON (and the dicts already built for some of them)."""
    offsets = [0, *accumulate(len(p) + 1 for p in parts)]
    return EncodedObjects(b",".join(parts) + b"," if parts else b"", offsets, decoded)


def split(obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The object without its operations (always sent, never remembered), and whether it had any."""
    if dict not in map(type, obj.values()):
        return obj, False
    ops = {a for a, v in obj.items() if type(v) is dict and v and v.keys() <= OPERATIONS}
    if not ops:
        return obj, False
    return {a: v for a, v in obj.items() if a not in ops}, True


def record(values: dict[str, Any]) -> bytes:
    """The bytes remembered for these attribute values (long values as digests when the whole is long)."""
    raw = orjson.dumps(values, option=_SORT)
    if len(raw) <= LONG:
        return raw
    short: dict[str, Any] = {}
    for a, v in values.items():
        one = orjson.dumps(v, option=_SORT)
        short[a] = v if len(one) <= _LONG_VALUE else {"$fp": _digest(one)}
    return orjson.dumps(short, option=_SORT)


def load(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(raw)
    return out


def differs(value: Any, stored: Any) -> bool:
    """Whether an attribute value differs from the one remembered (a value or a digest of it)."""
    kind = type(value)
    if kind is type(stored) and kind in _PLAIN:  # their JSON is equal exactly when they are
        return bool(value != stored)
    raw = orjson.dumps(value, option=_SORT)
    if type(stored) is dict and len(stored) == 1 and "$fp" in stored:
        return len(raw) <= _LONG_VALUE or _digest(raw) != stored["$fp"]
    return raw != orjson.dumps(stored, option=_SORT)
