"""Mirror mode: which users are gone from a stream's source, and whether a run may delete that many.

A user is *removed* when the state confirmed it for the stream in an earlier run (DeltaState.known_keys)
and this run's source does not hold it at all. Present means read from the source, whatever happened to
the row afterwards: a row rejected by a suite, the mapping or the contract, or failed at Braze, still
names its user, so that user is not removed. `Presence` collects the users read (8-byte digests in a
temporary SQLite file, so memory stays bounded whatever the number of users; a digest collision can only
make a removed user look present, never the reverse). `guard` is the safety rule of `max_delete_fraction`.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_PAGE = 5000


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big",
                          signed=True)  # fmt: skip


class Presence:
    """The users one stream's source holds in this run (and how many rows named no readable user)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="braze-mirror-")
        self._db = sqlite3.connect(str(Path(self._dir.name) / "presence.sqlite"), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (h INTEGER PRIMARY KEY)")
        self.unreadable = 0  # rows whose identifier could not be read (lines that did not parse)

    def see(self, keys: Iterable[str | None]) -> None:
        """Record the users of some rows read (None: a row with no identifier value, which names nobody)."""
        hashes = [(_digest(k),) for k in keys if k]
        if hashes:
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", hashes)

    def removed(self, known: Iterable[str]) -> Removed:
        """Compare with the users the state knows: how many it knows, and which of them were not read."""
        db = self._db
        db.execute("DROP TABLE IF EXISTS known")
        db.execute("CREATE TABLE known (h INTEGER PRIMARY KEY, key TEXT NOT NULL)")
        page: list[tuple[int, str]] = []
        for key in known:
            page.append((_digest(key), key))
            if len(page) >= _PAGE:
                db.executemany("INSERT OR IGNORE INTO known VALUES (?, ?)", page)
                page = []
        db.executemany("INSERT OR IGNORE INTO known VALUES (?, ?)", page)
        db.execute("DROP TABLE IF EXISTS gone")
        db.execute("CREATE TABLE gone AS SELECT key FROM known WHERE h NOT IN (SELECT h FROM seen) ORDER BY key")
        (n_known,) = db.execute("SELECT count(*) FROM known").fetchone()
        (n_gone,) = db.execute("SELECT count(*) FROM gone").fetchone()
        return Removed(int(n_known), int(n_gone), self)

    def _gone(self) -> Iterator[str]:
        last = 0
        while True:
            rows = self._db.execute("SELECT rowid, key FROM gone WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                    (last, _PAGE)).fetchall()  # fmt: skip
            for _, key in rows:
                yield key
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


@dataclass(frozen=True)
class Removed:
    """The outcome of a comparison: `known` users in the state, `count` of them absent from the source."""

    known: int
    count: int
    _presence: Presence

    def keys(self) -> Iterator[str]:
        """The removed users' state keys ("external_id:u1", ...), sorted, read in pages."""
        return self._presence._gone()


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
