"""BrazeClient's rules that need no server or transport: the status table, Retry-After precedence, the base URL.

Moved from tests/integration/test_client.py, whose tests run once per HTTP transport: these ran four times
over the same code."""

from __future__ import annotations

import pytest

from connector.config import Write
from connector.delivery.client import BrazeClient, action_for, check_base_url, retry_after_s
from connector.delivery.ratelimit import RateLimiter
from connector.errors import ConfigError


def test_status_table() -> None:
    assert [action_for(s) for s in (200, 201, 202, 400, 401, 403, 404, 408, 413, 429, 500, 503)] == [
        "delivered", "delivered", "delivered", "permanent", "auth", "permanent", "permanent",
        "transient", "permanent", "rate_limited", "transient", "transient",
    ]  # fmt: skip


def test_retry_after_header_precedence() -> None:
    assert retry_after_s({"x-ratelimit-retry-after": "3", "retry-after": "9"}) == 3.0
    assert retry_after_s({"retry-after": "9", "x-ratelimit-reset": "20"}) == 9.0
    assert retry_after_s({"x-ratelimit-reset": "20"}) == 20.0
    assert retry_after_s({"x-ratelimit-reset": "1800000005"}, now_epoch=1_800_000_000) == 5.0
    assert retry_after_s({"x-ratelimit-retry-after": ""}) is None


def test_base_url_must_be_https_unless_loopback() -> None:
    assert check_base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_base_url("http://localhost:1") == "http://localhost:1"
    assert check_base_url("http://[::1]:1") == "http://[::1]:1"
    assert check_base_url("https://rest.iad-01.braze.com") == "https://rest.iad-01.braze.com"
    with pytest.raises(ConfigError, match="plain http"):
        check_base_url("http://rest.iad-01.braze.com")
    with pytest.raises(ConfigError, match="not an http"):
        BrazeClient("rest.iad-01.braze.com", "test-key", write=Write(), limiter=RateLimiter(None),
                    transport="requests")
