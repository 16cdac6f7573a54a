"""POST /users/delete: remove user profiles by external_id, user alias or braze_id.

Shape (Braze's "Delete users" page, braze-api.md §9.2, the braze_ruby VCR cassettes
`delete_users/with_success/*`): exactly one of `external_ids` (strings; the recordings show Braze
accepting integers too), `user_aliases` ({alias_name, alias_label}) or `braze_ids`, at most 50 identifiers
a request (more: `400 The max number of ids per request was exceeded`). The answer is
`201 {"deleted": n, "message": "success"}`, n being the number of identifiers queued for deletion (Braze
deletes asynchronously and counts what it was given, known or not: the recording deleted 3 of 3). The
emulator deletes at once: the profiles, their aliases, events and purchases are gone before the 201 leaves.
`email_addresses` and `phone_numbers` (newer docs) are not modelled: a clear 400 says so.
"""

from __future__ import annotations

from typing import Any

from connector.emulator import rules
from connector.emulator.store import LedgerEntry, Store

MAX_DELETE_IDS = 50
MSG_MAX_IDS = "The max number of ids per request was exceeded"
KINDS = {"external_ids": "external_id", "user_aliases": "user_alias", "braze_ids": "braze_id"}
_NOT_MODELLED = ("email_addresses", "phone_numbers")

Result = tuple[int, dict[str, Any], LedgerEntry]


def _fail(store: Store, endpoint: str, message: str | dict[str, Any], fault: str | None) -> Result:
    entry = LedgerEntry(endpoint, 400, fault=fault)
    store.record(entry)
    return 400, dict(message) if isinstance(message, dict) else {"message": message}, entry


def _bad_identifier(kind: str, value: Any) -> bool:
    if kind == "user_alias":
        return not (
            isinstance(value, dict)
            and isinstance(value.get("alias_name"), str)
            and isinstance(value.get("alias_label"), str)
        )
    if kind == "external_id":
        return isinstance(value, bool) or not isinstance(value, (str, int)) or value == ""
    return not isinstance(value, str) or not value


def users_delete(store: Store, body: Any, *, endpoint: str, dropped: bool = False,
                 fault: str | None = None) -> Result:  # fmt: skip
    """Validate and apply one /users/delete body; the ledger lists each identifier and whether it existed."""
    if not isinstance(body, dict):
        return _fail(store, endpoint, rules.MALFORMED_JSON_BODY, fault)
    for name in _NOT_MODELLED:
        if body.get(name) is not None:
            return _fail(store, endpoint, f"'{name}' is not modelled by the emulator; use external_ids, "
                         "user_aliases or braze_ids", fault)  # fmt: skip
    given = [name for name in KINDS if body.get(name) is not None]
    if len(given) != 1:
        return _fail(store, endpoint, "Exactly one of 'external_ids', 'user_aliases' or 'braze_ids' must be "
                     "provided", fault)  # fmt: skip
    name = given[0]
    ids = body[name]
    if not isinstance(ids, list) or not ids:
        return _fail(store, endpoint, f"'{name}' must be a non-empty array", fault)
    if len(ids) > MAX_DELETE_IDS:
        return _fail(store, endpoint, MSG_MAX_IDS, fault)
    kind = KINDS[name]
    for value in ids:
        if _bad_identifier(kind, value):
            return _fail(store, endpoint, f"'{name}' holds an invalid identifier", fault)
    entry = LedgerEntry(endpoint, 202 if fault == "202" else 201, dropped=dropped, fault=fault)
    with store.transaction() as s:
        for value in ids:
            pid = s.find(kind, value)
            entry.applied.append({"deleted": {kind: value}, "found": pid is not None})
            if pid is not None:
                for table in ("aliases", "events", "purchases", "profiles"):
                    s.conn.execute(f"DELETE FROM {table} WHERE pid = ?", (pid,))
                s.attrs.pop(pid, None)
                store.attrs_cache.pop(pid, None)
        entry.counts = {}
        store.write_ledger(entry)
    store.pids.clear()  # identifier -> profile memos may name a deleted profile
    return entry.status, {"deleted": len(ids), "message": "success"}, entry
