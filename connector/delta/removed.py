"""Mirror mode: which users are gone from a stream's source, and whether a run may delete that many.

A user is *removed* when the state confirmed it for the stream in an earlier run (DeltaState.known_keys)
and this run's source does not hold it at all. Present means read from the source, whatever happened to
the row afterwards: a row rejected by a suite, the mapping or the contract, or failed at Braze, still
names its user, so that user is not removed. `Presence` keeps one 64-bit hash per row read (8 bytes a
row, whatever the row's size: 8 MB per million rows); the comparison hashes the known users as the state
lists them (one C loop) and is one Arrow set lookup of those hashes in the seen ones. The hashes are the
keys' XXH3 (keyindex.key_hashes), the ones delta sync's fast path computes for the same rows (users.py), so
a chunk's users are hashed once; a collision can only make a removed user look present (not reported, not
deleted), never the reverse.
`guard` is the safety rule of `max_delete_fraction`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.delta.keyindex import key_hashes, key_hashes_of
from connector.records import alias_key, alias_of_key


class Presence:
    """The users one stream's source holds in this run (and how many rows named no readable user)."""

    def __init__(self) -> None:
        self._seen: list[np.ndarray] = []
        self.unreadable = 0  # rows whose identifier could not be read (lines that did not parse)

    def see(self, keys: Iterable[str | None]) -> None:
        """Record the users of some rows read (None: a row with no identifier value, which names nobody)."""
        self.see_hashes(key_hashes([k for k in keys if k is not None]))

    def see_hashes(self, hashes: np.ndarray) -> None:
        """Record the users of some rows read, by their keys' hashes (users.py)."""
        if len(hashes):
            self._seen.append(hashes)

    def removed(self, known: Callable[[], Iterable[str]], *, aliases: bool = False) -> Removed:
        """Compare with the users the state knows (`known()` lists them, the same order each call).

        `aliases` (a stream identified by user alias): an alias key written before alias keys escaped a `|`
        (records.alias_key) is `stale`, not removed, when the user it names is known under today's key, read
        or in the state: the state can forget it. (Looking costs one more read of the removed keys.)
        """
        hashes = pa.array(key_hashes_of(known()))
        if not len(hashes):
            return Removed(0, [], known)
        seen = pa.array(np.concatenate(self._seen) if self._seen else np.empty(0, np.int64))
        gone = pc.indices_nonzero(pc.invert(pc.is_in(hashes, value_set=seen))).to_pylist()
        legacy = [(pos, key, c) for pos, key in zip(gone, Removed(len(hashes), gone, known).keys(), strict=True)
                  if (c := legacy_alias_keys(key))] if aliases and gone else []  # fmt: skip
        if not legacy:
            return Removed(len(hashes), gone, known)
        wanted = pa.array(key_hashes([k for _, _, cands in legacy for k in cands]), type=pa.int64())
        hits = pc.or_(pc.is_in(wanted, value_set=seen), pc.is_in(wanted, value_set=hashes)).to_pylist()
        stale: dict[int, str] = {}
        at = 0
        for pos, key, cands in legacy:
            if any(hits[at : at + len(cands)]):
                stale[pos] = key
            at += len(cands)
        return Removed(len(hashes) - len(stale), [g for g in gone if g not in stale], known, list(stale.values()))

    def close(self) -> None:
        self._seen = []


@dataclass(frozen=True)
class Removed:
    """The outcome of a comparison: `known` users in the state, the positions of those not read."""

    known: int
    gone: list[int]
    _known: Callable[[], Iterable[str]]
    stale: list[str] = field(default_factory=list)  # old alias keys of users known under today's key

    @property
    def count(self) -> int:
        return len(self.gone)

    def keys(self) -> Iterator[str]:
        """The removed users' state keys ("external_id:u1", ...), read again from the state in its order."""
        if not self.gone:
            return
        wanted = iter(self.gone)
        nxt = next(wanted)
        for i, key in enumerate(self._known()):
            if i == nxt:
                yield key
                nxt = next(wanted, -1)
                if nxt < 0:
                    return


def legacy_alias_keys(key: str) -> list[str]:
    """For an alias key written before alias keys escaped a `|` ("user_alias:a|b|c": where the name ends is
    unknown), today's key of each way it splits; [] for any other key."""
    kind, _, value = key.partition(":")
    if kind != "user_alias" or value.count("|") < 2 or alias_of_key(value) is not None:
        return []
    return [alias_key(value[:i], value[i + 1 :]) for i, ch in enumerate(value) if ch == "|"]


def delete_limit(known: int, fraction: float) -> int:
    """How many of `known` users a run may delete under `max_delete_fraction` without confirmation."""
    return math.floor(known * fraction + 1e-9)


def guard(stream: str, removed: int, known: int, fraction: float, allowed: int | None) -> str | None:
    """None when a run may delete `removed` of the `known` users; else why not, with the numbers and the fix.

    Allowed: at most `fraction` of the known users, or at most `allowed` (the command line's
    `--allow-deletes N`, given after a person has seen the numbers).
    """
    limit = delete_limit(known, fraction)
    if removed <= limit or (allowed is not None and removed <= allowed):
        return None
    share = f"{100.0 * removed / known:.1f} %" if known else "all"
    over = f"; --allow-deletes {allowed} allows only {allowed:,}" if allowed is not None else ""
    return (
        f"stream {stream}: {removed:,} of the {known:,} users the state knows ({share}) are gone from the source, "
        f"more than max_delete_fraction {fraction:g} allows ({limit:,}){over}; nothing was deleted. Check the "
        f"source (an empty or partial extract looks like this); if these deletions are right, run again with "
        f"--allow-deletes {removed}"
    )
