"""SQLite state of the emulator: profiles by every identifier, events, purchases, dispatches, the ledger.

One connection, used only from the server's event-loop thread, so writes are serialised by design. Each
request is one transaction (`Store.transaction()`), and its ledger entry is written inside it, so a 201 is
only sent after the objects and their ledger entry are committed together.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

logger = logging.getLogger(__name__)

OBJECT_KINDS = ("attributes", "events", "purchases", "recipients", "live_activities")
IDENTIFIER_KINDS = ("external_id", "braze_id", "email", "phone", "user_alias")
# full: each applied object as sent; ids: its array, index and identifier only; none: counts only.
LEDGER_DETAILS = ("full", "ids", "none")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
  pid INTEGER PRIMARY KEY, external_id TEXT UNIQUE, braze_id TEXT UNIQUE NOT NULL, email TEXT, phone TEXT,
  attrs TEXT NOT NULL DEFAULT '{}', updated INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS profiles_email ON profiles(email);
CREATE INDEX IF NOT EXISTS profiles_phone ON profiles(phone);
CREATE TABLE IF NOT EXISTS aliases (label TEXT, name TEXT, pid INTEGER, PRIMARY KEY (label, name));
CREATE TABLE IF NOT EXISTS events (pid INTEGER, name TEXT, first TEXT, last TEXT, count INTEGER,
  PRIMARY KEY (pid, name));
CREATE TABLE IF NOT EXISTS purchases (pid INTEGER, product_id TEXT, first TEXT, last TEXT, count INTEGER,
  PRIMARY KEY (pid, product_id));
CREATE TABLE IF NOT EXISTS dispatches (dispatch_id TEXT PRIMARY KEY, canvas_id TEXT, broadcast INTEGER,
  recipients TEXT, seq INTEGER);
CREATE TABLE IF NOT EXISTS live_activities (id INTEGER PRIMARY KEY, app_id TEXT, activity_id TEXT, body TEXT,
  seq INTEGER);
CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT, status INTEGER,
  attributes INTEGER DEFAULT 0, events INTEGER DEFAULT 0, purchases INTEGER DEFAULT 0,
  recipients INTEGER DEFAULT 0, live_activities INTEGER DEFAULT 0, data_points INTEGER DEFAULT 0,
  applied TEXT, dropped INTEGER DEFAULT 0, fault TEXT);
"""

_EVENT_UPSERT = """
INSERT INTO {table} (pid, {col}, first, last, count) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (pid, {col}) DO UPDATE SET first = min(first, excluded.first), last = max(last, excluded.last),
  count = count + excluded.count
"""


@dataclass
class LedgerEntry:
    """What one request did, written in the same transaction as the objects it applied."""

    endpoint: str
    status: int
    counts: dict[str, int] = field(default_factory=dict)
    data_points: int = 0
    applied: list[dict[str, Any]] = field(default_factory=list)
    dropped: bool = False
    fault: str | None = None


class Session:
    """One request's unit of work: cached profiles, pending event/purchase upserts, then one commit."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn
        self.attrs: dict[int, dict[str, Any]] = {}
        self.committed_attrs: dict[int, dict[str, Any]] = {}
        self.contact_pids: set[int] = set()
        self.events: list[tuple[int, str, str, str, int]] = []
        self.purchases: list[tuple[int, str, str, str, int]] = []

    def find(self, kind: str, value: Any) -> int | None:
        """The profile id for an identifier, or None."""
        c = self.conn
        if kind == "external_id":
            row = c.execute("SELECT pid FROM profiles WHERE external_id = ?", (str(value),)).fetchone()
        elif kind == "braze_id":
            row = c.execute("SELECT pid FROM profiles WHERE braze_id = ?", (str(value),)).fetchone()
        elif kind == "user_alias":
            row = c.execute(
                "SELECT pid FROM aliases WHERE label = ? AND name = ?",
                (value["alias_label"], value["alias_name"]),
            ).fetchone()
        elif kind in ("email", "phone"):
            # Several profiles: the most recently updated one with an external_id wins, else the most recent.
            row = c.execute(
                f"SELECT pid FROM profiles WHERE {kind} = ? ORDER BY external_id IS NULL, updated DESC LIMIT 1",
                (value,),
            ).fetchone()
        else:
            raise ValueError(kind)
        return None if row is None else int(row[0])

    def create(self, kind: str, value: Any) -> int:
        """Create a profile addressed by one identifier (never by braze_id)."""
        self.store.counter += 1
        braze_id = f"{self.store.counter:024x}"
        cols = {"braze_id": braze_id, "updated": self.store.counter}
        if kind in ("external_id", "email", "phone"):
            cols[kind] = str(value)
        names = ", ".join(cols)
        cur = self.conn.execute(
            f"INSERT INTO profiles ({names}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values())
        )
        pid = int(cur.lastrowid or 0)
        if kind == "user_alias":
            self.add_alias(pid, value)
        attrs: dict[str, Any] = {}
        if kind in ("email", "phone"):
            attrs[kind] = value
        self.attrs[pid] = attrs
        return pid

    def add_alias(self, pid: int, alias: dict[str, str]) -> None:
        """Attach an alias; one alias_name per alias_label per profile."""
        self.conn.execute(
            "INSERT OR REPLACE INTO aliases (label, name, pid) VALUES (?, ?, ?)",
            (alias["alias_label"], alias["alias_name"], pid),
        )

    def resolve(
        self, obj: dict[str, Any], *, create: bool, id_keys: dict[str, str] | None = None
    ) -> int | None:
        """Find (or create, when allowed) the profile an object addresses (primary first, then email, phone)."""
        id_keys = id_keys or {}
        for kind in ("external_id", "user_alias", "braze_id", "email", "phone"):
            value = obj.get(id_keys.get(kind, kind))
            if value is None:
                continue
            memo = (
                kind,
                str(value) if kind != "user_alias" else f"{value['alias_name']}|{value['alias_label']}",
            )
            pid = self.store.pids.get(memo)
            if pid is None:
                pid = self.find(kind, value)
                if pid is None and create and kind != "braze_id":
                    pid = self.create(kind, value)
                if pid is not None and kind not in ("email", "phone"):
                    self.store.remember(memo, pid)  # email/phone lookups change as profiles are written
            return pid
        return None

    def profile_attrs(self, pid: int) -> dict[str, Any]:
        """The profile's attributes, loaded once per session and written back at commit."""
        attrs = self.attrs.get(pid)
        if attrs is None:
            cached = self.store.attrs_cache.get(pid)
            if cached is not None:
                attrs = dict(cached)  # copy: the cache only changes at commit
            else:
                row = self.conn.execute("SELECT attrs FROM profiles WHERE pid = ?", (pid,)).fetchone()
                attrs = orjson.loads(row[0]) if row else {}
            if "email" in attrs or "phone" in attrs:
                self.contact_pids.add(pid)  # so that removing them clears the lookup columns
            self.attrs[pid] = attrs
        return attrs

    def touch(self, pid: int) -> None:
        """Mark a profile as written by this session."""
        self.profile_attrs(pid)

    def flush(self) -> None:
        """Write cached profiles and aggregated events/purchases (batched with executemany)."""
        rows = []
        contacts = []
        for pid, attrs in self.attrs.items():
            self.store.counter += 1
            rows.append((orjson.dumps(attrs).decode(), self.store.counter, pid))
            email, phone = attrs.get("email"), attrs.get("phone")
            if email is not None or phone is not None or pid in self.contact_pids:
                contacts.append(
                    (
                        email if isinstance(email, str) else None,
                        phone if isinstance(phone, str) else None,
                        pid,
                    )
                )
        if rows:
            self.conn.executemany("UPDATE profiles SET attrs = ?, updated = ? WHERE pid = ?", rows)
        if contacts:
            # Only profiles that have (or had) an email/phone touch the lookup columns and their indexes.
            self.conn.executemany(
                "UPDATE profiles SET email = ?, phone = ? WHERE pid = ? AND (email IS NOT ? OR phone IS NOT ?)",
                [(e, p, pid, e, p) for e, p, pid in contacts],
            )
        self.committed_attrs.update(self.attrs)
        if self.events:
            self.conn.executemany(_EVENT_UPSERT.format(table="events", col="name"), self.events)
        if self.purchases:
            self.conn.executemany(_EVENT_UPSERT.format(table="purchases", col="product_id"), self.purchases)
        self.attrs.clear()
        self.events.clear()
        self.purchases.clear()


class Store:
    """The emulator's SQLite database (":memory:" or a file)."""

    def __init__(self, path: str = ":memory:", ledger_detail: str = "full") -> None:
        if ledger_detail not in LEDGER_DETAILS:
            raise ValueError(
                f"ledger_detail must be one of {', '.join(LEDGER_DETAILS)}, not {ledger_detail!r}"
            )
        self.path = path
        self.ledger_detail = ledger_detail
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        row = self.conn.execute("SELECT coalesce(max(updated), 0) FROM profiles").fetchone()
        self.counter = int(row[0])
        self._lock = threading.Lock()  # belt and braces: the loop thread is the only writer
        # Caches of committed state (single writer, so they stay exact): identifier -> pid, pid -> attributes.
        self.pids: dict[tuple[str, str], int] = {}
        self.attrs_cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.cache_size = 200_000

    def remember(self, memo: tuple[str, str], pid: int) -> None:
        """Cache a stable identifier -> profile mapping (bounded)."""
        if len(self.pids) >= self.cache_size:
            self.pids.clear()
        self.pids[memo] = pid

    def _cache_attrs(self, committed: dict[int, dict[str, Any]]) -> None:
        cache = self.attrs_cache
        for pid, attrs in committed.items():
            cache[pid] = attrs
            cache.move_to_end(pid)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def _drop_caches(self) -> None:
        self.pids.clear()
        self.attrs_cache.clear()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One request: BEGIN, work, flush, COMMIT (or ROLLBACK on error)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            session = Session(self)
            try:
                yield session
                session.flush()
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._drop_caches()
                raise
            self._cache_attrs(session.committed_attrs)

    def write_ledger(self, entry: LedgerEntry) -> int:
        """Insert a ledger entry (inside the current transaction when there is one); return its seq."""
        applied = entry.applied
        if self.ledger_detail == "none":
            applied = []
        elif self.ledger_detail == "ids":
            applied = [{k: v for k, v in a.items() if k not in ("object", "context")} for a in applied]
        c = entry.counts
        cur = self.conn.execute(
            "INSERT INTO ledger (endpoint, status, attributes, events, purchases, recipients, live_activities, "
            "data_points, applied, dropped, fault) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (entry.endpoint, entry.status, c.get("attributes", 0), c.get("events", 0), c.get("purchases", 0),
             c.get("recipients", 0), c.get("live_activities", 0), entry.data_points,
             orjson.dumps(applied).decode(), int(entry.dropped), entry.fault),
        )  # fmt: skip
        return int(cur.lastrowid or 0)

    def record(self, entry: LedgerEntry) -> int:
        """Write a ledger entry for a request that applied nothing (its own small transaction)."""
        with self._lock:
            return self.write_ledger(entry)

    def stats(self) -> dict[str, Any]:
        """Counters derived from the ledger: requests by endpoint and status, objects applied, data points."""
        requests: dict[str, dict[str, int]] = {}
        for endpoint, status, n in self.conn.execute(
            "SELECT endpoint, status, count(*) FROM ledger GROUP BY 1, 2"
        ):
            requests.setdefault(endpoint, {})[str(status)] = n
        sums = self.conn.execute(
            "SELECT "
            + ", ".join(f"coalesce(sum({k}), 0)" for k in (*OBJECT_KINDS, "data_points"))
            + " FROM ledger"
        ).fetchone()
        return {
            "requests": requests,
            "objects_applied": dict(zip(OBJECT_KINDS, sums[:5], strict=True)),
            "data_points": sums[5],
        }

    def ledger(self, since: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """Ledger entries with seq > since, oldest first."""
        out = []
        for row in self.conn.execute(
            "SELECT seq, endpoint, status, attributes, events, purchases, recipients, live_activities, data_points, "
            "applied, dropped, fault FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
            (since, limit),
        ):
            out.append({
                "seq": row[0], "endpoint": row[1], "status": row[2],
                "objects": dict(zip(OBJECT_KINDS, row[3:8], strict=True)), "data_points": row[8],
                "applied": orjson.loads(row[9]) if row[9] else [], "dropped": bool(row[10]), "fault": row[11],
            })  # fmt: skip
        return out

    def profile(self, kind: str, value: str) -> dict[str, Any] | None:
        """One profile as the inspection endpoint shows it, or None."""
        ident: Any = value
        if kind == "user_alias":
            name, _, label = value.partition("|")
            ident = {"alias_name": name, "alias_label": label}
        pid = Session(self).find(kind, ident)
        if pid is None:
            return None
        return self.profile_by_pid(pid)

    def profile_by_pid(self, pid: int) -> dict[str, Any]:
        """The profile view for an internal id."""
        c = self.conn
        ext, braze_id, attrs = c.execute(
            "SELECT external_id, braze_id, attrs FROM profiles WHERE pid = ?", (pid,)
        ).fetchone()
        aliases = [
            {"alias_name": n, "alias_label": lab}
            for lab, n in c.execute("SELECT label, name FROM aliases WHERE pid = ?", (pid,))
        ]
        events = {n: {"first": f, "last": la, "count": k} for n, f, la, k in c.execute(
            "SELECT name, first, last, count FROM events WHERE pid = ? ORDER BY name", (pid,))}  # fmt: skip
        purchases = {p: {"first": f, "last": la, "count": k} for p, f, la, k in c.execute(
            "SELECT product_id, first, last, count FROM purchases WHERE pid = ? ORDER BY product_id", (pid,))}  # fmt: skip
        a = orjson.loads(attrs)
        return {
            "braze_id": braze_id, "external_id": ext, "email": a.get("email"), "phone": a.get("phone"),
            "user_aliases": aliases, "attributes": a, "custom_events": events, "purchases": purchases,
        }  # fmt: skip

    def add_dispatch(
        self, dispatch_id: str, canvas_id: str, broadcast: bool, recipients: list[dict[str, Any]], seq: int
    ) -> None:
        """Record one canvas dispatch."""
        self.conn.execute(
            "INSERT INTO dispatches VALUES (?, ?, ?, ?, ?)",
            (dispatch_id, canvas_id, int(broadcast), orjson.dumps(recipients).decode(), seq),
        )

    def add_live_activity(self, body: dict[str, Any], seq: int) -> None:
        """Record one live activity update."""
        self.conn.execute(
            "INSERT INTO live_activities (app_id, activity_id, body, seq) VALUES (?, ?, ?, ?)",
            (body["app_id"], body["activity_id"], orjson.dumps(body).decode(), seq),
        )

    def dispatches(self) -> list[dict[str, Any]]:
        """Every canvas dispatch recorded, oldest first."""
        return [
            {"dispatch_id": d, "canvas_id": cid, "broadcast": bool(b), "recipients": orjson.loads(r)}
            for d, cid, b, r in self.conn.execute(
                "SELECT dispatch_id, canvas_id, broadcast, recipients FROM dispatches ORDER BY seq"
            )
        ]

    def reset(self) -> None:
        """Delete all state, caches included: afterwards the store is as a fresh one (ids, seq from 1)."""
        with self._lock:
            tables = ("profiles", "aliases", "events", "purchases", "dispatches", "live_activities", "ledger")
            for table in tables:
                self.conn.execute(f"DELETE FROM {table}")
            self.conn.execute("DELETE FROM sqlite_sequence WHERE name = 'ledger'")
            # The identifier -> profile cache would send a returning user to a deleted profile.
            self._drop_caches()
            self.counter = 0

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
