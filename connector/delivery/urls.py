"""The REST endpoint's base URL, checked before the key is sent anywhere."""

from __future__ import annotations

import ipaddress
import urllib.parse

from connector.errors import ConfigError

__all__ = ["check_base_url"]


def check_base_url(base_url: str) -> str:
    """The base URL without its trailing slash; plain HTTP only to loopback (the key travels in a header).

    Raises:
        ConfigError: not an http(s) URL, or http:// to a host that is not loopback.
    """
    parts = urllib.parse.urlsplit(base_url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"REST endpoint {base_url!r} is not an http(s) URL such as https://rest.iad-01.braze.com"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"REST endpoint {base_url!r} uses plain http to a non-loopback host; use https:// "
            "(the API key would otherwise travel unencrypted)"
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
