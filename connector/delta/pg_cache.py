"""A local copy of the PostgreSQL delta state's index (pg_store.py), so a run on a machine that ran the pipeline
last reads nothing of the state as it opens (issue 13: reading 1M keys' hashes, digests and prints cost the
server 0.5-0.6 s of CPU and this process 0.6-1 s, every run).

What makes a copy trustworthy is a stamp the database keeps: `braze_connector_delta_gen (pipeline, part,
gen, token)`, one row per pipeline and run partition (`all`: an unpartitioned run). Every write of this
version bumps its own partition's `gen` and sets a new random `token` in the same transaction (its own row:
partitions writing at once never wait for each other), so a pipeline's rows change only together with a
change of its gens; the token also tells apart two histories that reached the same gen (a database
restored to an earlier point in time, then written again). Writes
that do not (a process of an earlier version, or SQL typed by hand: DELETE, TRUNCATE) are caught by a
statement trigger on the delta table that bumps every pipeline's gens (`_FOREIGN`): a process of this
version says it is one by setting `braze_connector.delta_writer` for its transaction. A process of an
earlier version is not refused: its writes stay correct in the table (pg_store.py), they only make every
copy stale. The tokens are random, so a copy made against another database (or a gen table dropped and
made again) never matches; the delta table's oid is in the stamp too (a table dropped and made again).

A copy is written by a run that may write, as it closes, only when its index is the table's rows at a
stamp it can name: the stamp it opened at (read before and after the index was read, equal), plus one gen
for each of its own writes, and nothing else changed (read again at close). A run that opened from a copy
and wrote nothing leaves it alone. Anything else (another process wrote meanwhile, a write whose outcome
is unknown) writes no copy, and the next run reads the index from the server. The file is written beside
the state file (`state.path` + `.pg-index`) under a temporary name, then renamed, with a checksum of its
contents: a torn or damaged copy is never used. It holds hashes, digests and prints, no key or record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from connector.errors import SourceError
from connector.readers.sql.drivers import Database

log = logging.getLogger(__name__)

GENS = "braze_connector_delta_gen"
WRITER = "braze_connector.delta_writer"  # set (transaction-local) by every write of this version
CREATE_GENS = f"""CREATE TABLE IF NOT EXISTS {GENS} (
    pipeline TEXT NOT NULL, part TEXT NOT NULL, gen BIGINT NOT NULL, token TEXT NOT NULL, PRIMARY KEY (pipeline, part))"""


def foreign_trigger(table: str) -> list[str]:
    """The statements installing the trigger that bumps every gen on a write not made by this version
    (idempotent; run under the store's advisory lock)."""
    return [
        f"""CREATE OR REPLACE FUNCTION {table}_foreign() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  IF current_setting('{WRITER}', true) IS DISTINCT FROM 'on' THEN
    UPDATE {GENS} SET gen = gen + 1, token = md5(random()::text || clock_timestamp()::text);
  END IF;
  RETURN NULL;
END $f$""",
        f"""DO $d$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{table}_foreign' AND tgrelid = '{table}'::regclass) THEN
    CREATE TRIGGER {table}_foreign AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
      FOR EACH STATEMENT EXECUTE PROCEDURE {table}_foreign();
  END IF;
END $d$""",
    ]  # fmt: skip


# A write's first statements: this transaction is a writer of this version (the trigger leaves the gens
# alone), and its partition's gen moves on, with a new random token ($3).
MARK_WRITER = f"SELECT set_config('{WRITER}', 'on', true)"
BUMP = f"UPDATE {GENS} SET gen = gen + 1, token = $3 WHERE pipeline = $1 AND part = $2"
ADD_PART = f"INSERT INTO {GENS} (pipeline, part, gen, token) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING"


def stamp_query(table: str) -> str:
    """The stamp of a pipeline ($1): the delta table's oid, then each partition's (part, gen, token)."""
    return (f"SELECT to_regclass('{table}')::oid::int8, g.part, g.gen, g.token FROM (SELECT 1) AS one "
            f"LEFT JOIN {GENS} AS g ON g.pipeline = $1 ORDER BY g.part")  # fmt: skip


Stamp = tuple[Any, ...]  # (table oid, (part, gen, token), ...)


def prepare(db: Database, table: str, lock_id: int, pipeline: str, part: str | None, label: str) -> bool:
    """Whether the gens can be used. A run that may write (`part`: its partition label; None: a read-only
    run) first installs the gen table and the trigger of foreign writes (once per database, under the
    store's advisory lock `lock_id`) and adds its partition's gen. False where they are missing (a read-only
    run before any run of this version wrote) or cannot be made (the role may not create them: a warning;
    no copy is then used or written, and writes leave the gens alone)."""
    try:
        there = bool(db.scalar(f"SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger WHERE "
                               f"tgname = '{table}_foreign' AND tgrelid = to_regclass($2))", [GENS, table]))  # fmt: skip
        if not there and part is not None:
            db.transaction([("SELECT pg_advisory_xact_lock($1)", [lock_id]), (CREATE_GENS, []),
                            *((q, []) for q in foreign_trigger(table))])  # fmt: skip
            there = True
        if there and part is not None:
            db.transaction([(ADD_PART, [pipeline, part, secrets.token_hex(16)])])
    except SourceError as e:
        log.warning("%s: the state's generation table cannot be used (%s); every run reads the index from the "
                    "server", label, e)  # fmt: skip
        return False
    return there


def stamp_now(db: Database, table: str, pipeline: str) -> Stamp | None:
    """The pipeline's stamp as the server has it now (None: none, or the query failed)."""
    try:
        return stamp_of(db.transaction([(stamp_query(table), [pipeline])]))
    except SourceError:
        return None


def stamp_of(rows: list[tuple[Any, ...]]) -> Stamp | None:
    """A stamp from stamp_query's rows; None when nothing can be vouched for (no table, or no gen row)."""
    if not rows or rows[0][0] is None or rows[0][1] is None:
        return None
    return (int(rows[0][0]), *((str(p), int(g), str(t)) for _, p, g, t in rows))


def bumped(stamp: Stamp, part: str, writes: int, token: str) -> Stamp:
    """`stamp` after `writes` writes of partition `part`, the last of which set `token`."""
    if not writes:
        return stamp
    return (stamp[0], *((p, g + writes, token) if p == part else (p, g, t) for p, g, t in stamp[1:]))


_MAGIC = b"braze-connector pg-index 1\n"
Arrays = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # stream -> sorted hashes, digests, prints


class IndexCache:
    """The copy of one pipeline's index in a local file."""

    def __init__(self, path: Path, pipeline: str) -> None:
        self.path, self.pipeline = path, pipeline

    def load(self, stamp: Stamp) -> Arrays | None:
        """The streams' arrays, when the file is whole and was written at exactly `stamp`; else None."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        try:
            return self._parse(data, stamp)
        except (ValueError, KeyError, TypeError) as e:
            log.debug("state index copy %s not used: %s", self.path, e)
            return None

    def _parse(self, data: bytes, stamp: Stamp) -> Arrays | None:
        if not data.startswith(_MAGIC):
            return None
        at = len(_MAGIC) + 8
        size = int.from_bytes(data[len(_MAGIC) : at], "little")
        head = json.loads(data[at : at + size])
        body = memoryview(data)[at + size :]
        if head["pipeline"] != self.pipeline or _stamp_from_json(head["stamp"]) != stamp:
            return None
        if xxhash.xxh3_64_intdigest(body) != head["checksum"] or len(body) != 24 * sum(n for _, n in head["streams"]):
            return None
        out: Arrays = {}
        pos = 0
        for name, n in head["streams"]:
            h, d, s = (_aligned(np.frombuffer(body, "<i8", n, pos + 8 * n * i)) for i in range(3))
            out[str(name)] = (h, d, s)
            pos += 24 * n
        return out

    def save(self, stamp: Stamp, arrays: Arrays) -> None:
        """Write the copy (under a temporary name, then renamed); a failure is logged, never raised: the next
        run reads the index from the server."""
        body = b"".join(np.ascontiguousarray(a, "<i8").tobytes() for h, d, s in arrays.values() for a in (h, d, s))
        head = json.dumps({"pipeline": self.pipeline, "stamp": list(stamp), "checksum": xxhash.xxh3_64_intdigest(body),
                           "streams": [[k, len(v[0])] for k, v in arrays.items()]}).encode()  # fmt: skip
        head += b" " * (-(len(_MAGIC) + 8 + len(head)) % 8)  # the arrays 8-byte aligned in the file (and as read)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_MAGIC + len(head).to_bytes(8, "little") + head + body)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("could not write the state index copy %s (%s); the next run reads the index from the server",
                        self.path, e.strerror or e)  # fmt: skip
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _aligned(a: np.ndarray) -> np.ndarray:
    """`a`, copied if it is not 8-byte aligned (a copy written before the header was padded): numpy searches
    and gathers misaligned arrays through a copy of their own, a chunk at a time."""
    return a if a.flags.aligned else a.copy()


def _stamp_from_json(value: list[Any]) -> Stamp:
    return (int(value[0]), *((str(p), int(g), str(t)) for p, g, t in value[1:]))
