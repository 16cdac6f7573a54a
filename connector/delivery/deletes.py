"""Deleting users through POST /users/delete: 50 identifiers a request, through the run's client.

The client brings the rate limiter (Braze: 20,000 requests/minute, shared with /users/alias/new,
/users/identify, /users/merge and /users/alias/update), the retry policy and the key's scrubbing. A delete
is idempotent (deleting a deleted user deletes nothing), so every transient failure, an ambiguous one
included, is retried. Only a 2xx confirms a batch; a failed batch keeps its users (the caller leaves them
in the state, and the next run tries again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from connector.errors import ApiError, AuthError, ConnectorError, RateLimitSpent, RunStopped
from connector.records import alias_of_key

if TYPE_CHECKING:
    from connector.delivery.client import BrazeClient

logger = logging.getLogger(__name__)

ENDPOINT = "users_delete"
MAX_IDS = 50  # Braze's limit for /users/delete ("Up to 50 external_ids, user_aliases, braze_ids ...")


def delete_identifier(key: str) -> tuple[str, Any] | None:
    """A state key ("external_id:u1", "user_alias:name|label", "braze_id:x") as a /users/delete entry.

    None when it cannot be one: an email or phone key, or an alias key that does not tell where the name
    ends (records.alias_of_key: one written, unescaped, before alias keys escaped a `|`).
    """
    kind, _, value = key.partition(":")
    if kind == "external_id":
        return "external_ids", value
    if kind == "braze_id":
        return "braze_ids", value
    alias = alias_of_key(value) if kind == "user_alias" else None
    if alias is not None:
        return "user_aliases", {"alias_name": alias[0], "alias_label": alias[1]}
    return None


def not_deletable(key: str) -> str:
    """Why delete_identifier() gives None for `key`, in words (the key itself is listed beside it)."""
    if key.startswith("user_alias:"):
        return ("not deleted: this alias key predates the escaping of '|' in alias keys, so where the name ends "
                "is unknown; delete the user in Braze by hand")  # fmt: skip
    return "not deleted: this identifier cannot be sent to /users/delete"


@dataclass
class Deletions:
    """What happened to each user asked to be deleted."""

    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    fatal: ConnectorError | None = None  # a failure that stopped the deletes (a refused key, a spent rate limit)
    fatal_why: str = ""


def delete_users(client: BrazeClient, keys: Iterable[str],
                 on_request: Callable[[int, float, int, int, int], None] | None = None,
                 on_deleted: Callable[[list[str]], None] | None = None) -> Deletions:  # fmt: skip
    """Delete the users named by state keys, 50 a request, one request at a time.

    `on_request(status, latency_ms, identifiers, retries, rate_limited)` hears of every request (status 0:
    no HTTP answer); `on_deleted(keys)` of every batch Braze confirmed, as it is confirmed (so a run killed
    midway keeps what it deleted in the state's books).
    """
    out = Deletions()
    batches: dict[str, list[tuple[str, Any]]] = {}
    for key in keys:
        entry = delete_identifier(key)
        if entry is None:
            out.failed.append((key, not_deletable(key)))
            continue
        array, value = entry
        batch = batches.setdefault(array, [])
        batch.append((key, value))
        if len(batch) == MAX_IDS:
            _send(client, array, batches.pop(array), out, on_request, on_deleted)
    for array, batch in batches.items():
        _send(client, array, batch, out, on_request, on_deleted)
    return out


def _send(client: BrazeClient, array: str, batch: list[tuple[str, Any]], out: Deletions,
          on_request: Callable[[int, float, int, int, int], None] | None,
          on_deleted: Callable[[list[str]], None] | None) -> None:  # fmt: skip
    keys = [k for k, _ in batch]
    if out.fatal is not None:
        out.failed.extend((k, f"not sent: {out.fatal_why}") for k in keys)
        return
    body = orjson.dumps({array: [v for _, v in batch]})
    try:
        resp = client.post(ENDPOINT, body, idempotent=True)
    except RunStopped as e:
        out.fatal, out.fatal_why = e, str(e)
        out.failed.extend((k, f"not sent: {e}") for k in keys)
        return
    except ApiError as e:
        spent = isinstance(e, RateLimitSpent)
        if on_request is not None and not (spent and e.status is None):  # a spent limit may send nothing
            on_request(e.status or 0, 0.0, len(keys), 0, 0)
        why = str(e)
        if isinstance(e, RateLimitSpent):
            why = (f"Braze's rate limit for /users/delete is spent until {e.resets_at} (beyond "
                   "write.retry.max_elapsed_s); the next run deletes them")  # fmt: skip
        if isinstance(e, AuthError) or spent:
            out.fatal, out.fatal_why = e, why
        logger.warning("%s: %d user(s) not deleted: %s", ENDPOINT, len(keys), why)
        out.failed.extend((k, why) for k in keys)
        return
    if on_request is not None:
        on_request(resp.status, resp.http_ms, len(keys), resp.attempts - 1, resp.rate_limited)
    out.deleted.extend(keys)
    if on_deleted is not None:
        on_deleted(keys)
