"""Where a run sends rows: the destination URL (or the embedded emulator) and the API key, from the environment."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from connector.config.models import Pipeline
from connector.errors import ConfigError

ENV_ENDPOINT = "BRAZE_REST_ENDPOINT"


@dataclass(frozen=True)
class Destination:
    """Where the run sends rows: the embedded emulator ("local"), a REST URL, or nowhere (offline)."""

    kind: Literal["local", "rest", "none"]
    url: str | None
    api_key: str | None = field(default=None, repr=False)


def resolve_destination(pipeline: Pipeline, env: Mapping[str, str], *, offline: bool) -> Destination:
    """BRAZE_REST_ENDPOINT over destination.url; the key from env[destination.api_key_env].

    `local` gets a fresh random key for the embedded emulator (never shown). Offline runs (validate, dry
    run) need no key; the URL is still checked.

    Raises:
        ConfigError: a URL that is not http(s), a non-loopback URL without https, or a missing key.
    """
    override = (env.get(ENV_ENDPOINT) or "").strip()
    url = override or pipeline.destination.url.strip()
    where = f"{ENV_ENDPOINT}" if override else f"{pipeline.origin}: destination.url"
    if url == "local":
        if offline:
            return Destination("none", None)
        return Destination("local", None, secrets.token_urlsafe(24))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not a URL; use https://rest.<instance>.braze.com or 'local'")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: remove the credentials from the URL; the API key is read from an env var"
        )
    if parts.scheme != "https" and not _loopback(parts.hostname):
        raise ConfigError(
            f"{where}: {parts.scheme}://{parts.hostname} is not a loopback address, so it must use https://"
        )
    if offline:
        return Destination("none", url)
    var = pipeline.destination.api_key_env
    key = (env.get(var) or "").strip()
    if not key:
        raise ConfigError(
            f"the API key for {parts.hostname} is read from the environment variable {var}, which is not set "
            f"(set it, or change destination.api_key_env in the pipeline file)"
        )
    return Destination("rest", url, key)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
