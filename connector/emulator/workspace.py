"""The emulated workspace: API keys and their permissions, the /users/track/sync beta, the Canvases it has.

A Braze REST key carries a list of endpoint permissions (braze-api.md §10). Here a key is `KEY` (every
permission of the generally available endpoints) or `KEY:perm1,perm2` (exactly those). `/users/track/sync`
is a beta ("Contact your Braze account manager", post_user_track_synchronous.md): its permission
`users.track.sync` exists only for keys of a workspace in the beta, so a plain key does not carry it. It is
granted per key (`KEY:users.track.sync,...`) or to every key at once (`sync_beta=True`, `--sync-beta`).

Canvases: `/canvas/trigger/send` only reaches a Canvas the workspace has (with API-triggered delivery). The
emulator knows the ids it is given (`canvases`, `--canvas ID[=active|paused|archived]`), or takes any id
(`accept_any_canvas`, `--accept-any-canvas`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PERMISSIONS = {
    "users_track": "users.track",
    "users_track_sync": "users.track.sync",
    "canvas_trigger_send": "canvas.trigger.send",
    "live_activity_update": "messages.live_activity.update",
    "users_delete": "users.delete",
}
SYNC_PERMISSION = "users.track.sync"
ALL_PERMISSIONS = frozenset(PERMISSIONS.values())
CANVAS_STATES = ("active", "paused", "archived")
# What a permission name looks like (`users.track`): used to tell a mistyped permission from a key with ':'.
_PERMISSION_LIKE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")

Permissions = frozenset[str] | None  # None: a plain key, every permission but the beta ones


def parse_api_keys(keys: Any) -> dict[str, Permissions]:
    """Accept keys as a dict (key -> permissions or None), or strings `KEY` / `KEY:perm1,perm2`.

    A string whose part after the last ':' is not a list of permission names is a plain key (so keys may
    contain ':'); a list of permission-like names with an unknown one is a ValueError, not a silent plain key.
    """
    if isinstance(keys, Mapping):
        return {str(k): (frozenset(v) if v is not None else None) for k, v in keys.items()}
    if isinstance(keys, str):
        keys = [keys]
    out: dict[str, Permissions] = {}
    for item in keys:
        key, sep, perms = item.rpartition(":")
        names = [p.strip() for p in perms.split(",") if p.strip()]
        if not (sep and key and names and all(_PERMISSION_LIKE.match(p) for p in names)):
            out[item] = None
            continue
        unknown = sorted(set(names) - ALL_PERMISSIONS)
        if unknown:
            raise ValueError(  # the key itself is never shown
                f"an API key lists the unknown permission {', '.join(unknown)}; "
                f"use {', '.join(sorted(ALL_PERMISSIONS))}"
            )
        out[key] = frozenset(names)
    return out


def parse_canvases(canvases: Any) -> dict[str, str]:
    """Canvas ids and states from a dict (id -> state) or an iterable of `ID` / `ID=state` strings."""
    if canvases is None:
        return {}
    items: Iterable[tuple[str, str]]
    if isinstance(canvases, Mapping):
        items = ((str(k), str(v)) for k, v in canvases.items())
    else:
        if isinstance(canvases, str):
            canvases = [canvases]
        pairs = []
        for text in canvases:
            cid, sep, state = str(text).partition("=")
            pairs.append((cid, state if sep else "active"))
        items = pairs
    out: dict[str, str] = {}
    for cid, state in items:
        if not cid:
            raise ValueError("a canvas id must not be empty")
        if state not in CANVAS_STATES:
            raise ValueError(f"canvas {cid}: state must be active, paused or archived, not {state!r}")
        out[cid] = state
    return out


@dataclass(frozen=True)
class Workspace:
    """Keys, the sync beta switch and the known Canvases; answers "may this key call this endpoint"."""

    api_keys: dict[str, Permissions]
    sync_beta: bool = False
    canvases: dict[str, str] = field(default_factory=dict)
    accept_any_canvas: bool = False

    def knows(self, key: str | None) -> bool:
        """Whether the key exists (else 401)."""
        return key is not None and key in self.api_keys

    def allows(self, key: str, endpoint: str) -> bool:
        """Whether a known key carries the endpoint's permission (else 403 Access Denied)."""
        needed = PERMISSIONS[endpoint]
        if needed == SYNC_PERMISSION and self.sync_beta:
            return True
        perms = self.api_keys[key]
        if perms is None:
            return needed != SYNC_PERMISSION
        return needed in perms

    def canvas_state(self, canvas_id: str) -> str | None:
        """The state of a Canvas the workspace has (active, paused, archived), or None when it has none."""
        state = self.canvases.get(canvas_id)
        if state is None and self.accept_any_canvas:
            return "active"
        return state
