"""What the shared limiter (shared_limits.py) keeps in Redis: where, the buckets' shapes, the Lua scripts.

Each script is atomic in Redis and timed by Redis TIME.
Times are microseconds since the epoch of the Redis server (kept as integers: `%.0f`, since Lua's default
number format would round them); what a script returns is relative to its own "now", so no worker's
clock is compared with another's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from connector.config import DEFAULT_RATE_LIMITS, Pipeline, Write
from connector.delivery.ratelimit import (
    BURST_FRACTION,
    EPOCH_THRESHOLD,
    MAX_RESET_S,
    RateLimiter,
    rate_headers,
)
from connector.errors import ConfigError

US = 1_000_000  # microseconds: Redis TIME and the scripts count in them

# KEYS: tat, pause, budget, rejoin. ARGV: interval_us, capacity, n, horizon_us.
# Returns {granted (1/0), wait_us (to the slot, or until asking again), pause_us (a pause still ahead),
# now (Redis TIME, microseconds: the caller estimates its clock's offset from it)}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T, C, n, horizon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local b = redis.call('HMGET', KEYS[3], 'remaining', 'until')
if b[1] then
  local untl = tonumber(b[2])
  if now >= untl then
    redis.call('DEL', KEYS[3])
  else
    local left = tonumber(b[1]) - n
    if left < 0 then
      if untl > pause then
        pause = untl
        redis.call('SET', KEYS[2], string.format('%.0f', pause), 'PX', math.ceil((pause - now) / 1000) + 1000)
      end
      redis.call('DEL', KEYS[3])
    else
      redis.call('HSET', KEYS[3], 'remaining', left)
    end
  end
end
local hold = math.max(pause, tonumber(redis.call('GET', KEYS[4]) or '0'))
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now, hold + (C - 1) * T)
local new_tat = tat + n * T
local slot = math.max(now, new_tat - C * T)
local ahead = 0
if pause > now then ahead = pause - now end
if slot - now > horizon then
  return {0, slot - horizon - now, ahead, now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 60000)
return {1, slot - now, ahead, now}
"""

# KEYS: pause. ARGV: seconds_us. No slot is granted before now + seconds.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
if untl > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
"""

# KEYS: budget. ARGV: remaining, seconds_us. The server's window budget, as the local limiter keeps it.
BUDGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local remaining, untl = tonumber(ARGV[1]), now + tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'remaining', 'until')
if (not b[1]) or untl > tonumber(b[2]) + 500000 or now >= tonumber(b[2]) then
  redis.call('HSET', KEYS[1], 'remaining', remaining, 'until', string.format('%.0f', untl))
else
  redis.call('HSET', KEYS[1], 'remaining', math.min(tonumber(b[1]), remaining))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
return 1
"""

# KEYS: workers, rejoin. ARGV: worker id, ttl_us, rejoin_us, "1" when this worker is on its local share.
# Returns {workers seen within the ttl, microseconds to the common rejoin time (0 when not asked)}.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - ttl))
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) * 2)
local rejoin = 0
if ARGV[4] == '1' then
  local at = now + tonumber(ARGV[3])
  if not redis.call('SET', KEYS[2], string.format('%.0f', at), 'NX', 'PX', math.ceil(tonumber(ARGV[3]) / 1000) + 10000) then
    at = tonumber(redis.call('GET', KEYS[2]) or string.format('%.0f', now))
  end
  rejoin = at - now
end
return {redis.call('ZCARD', KEYS[1]), rejoin}
"""


@dataclass(frozen=True, slots=True)
class SharedTarget:
    """Where the shared budget lives: the Redis URL (from the environment) and the namespace."""

    url: str
    namespace: str
    expected_workers: int = 4

    @property
    def where(self) -> str:
        """The Redis server for messages: host, port and database, never a password."""
        parts = urlsplit(self.url)
        host = parts.hostname or parts.path or "?"
        return (
            f"{parts.scheme}://{host}"
            + (f":{parts.port}" if parts.port else "")
            + (parts.path if parts.hostname else "")
        )


def resolve_shared_limits(
    pipeline: Pipeline, env: Mapping[str, str], *, offline: bool
) -> SharedTarget | None:
    """The shared budget of a run (None without `write.shared_limits`, or when nothing is sent).

    Raises:
        ConfigError: the Redis URL's environment variable is unset or not a redis:// URL.
    """
    cfg = pipeline.write.shared_limits
    if cfg is None or offline:
        return None
    url = (env.get(cfg.redis_url_env) or "").strip()
    where = f"{pipeline.origin}: write.shared_limits"
    if not url:
        raise ConfigError(
            f"{where}: the environment variable {cfg.redis_url_env} is not set; set it to the Redis URL "
            "(redis://host:6379/0) or remove write.shared_limits"
        )
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{where}: {cfg.redis_url_env} is not a redis://, rediss:// or unix:// URL")
    return SharedTarget(url, cfg.namespace, cfg.expected_workers)


@dataclass(frozen=True, slots=True)
class Shape:
    """One bucket's GCRA: microseconds between requests at the steady rate, and the burst."""

    name: str
    interval_us: float
    capacity: float
    requests: int  # the limit: requests per window of per_seconds
    per_seconds: float


def shapes_of(write: Write) -> dict[str, Shape]:
    """Per endpoint: its bucket (shared buckets as the local limiter groups them) and that bucket's shape."""
    local = RateLimiter.from_write(write)
    return {
        ep: Shape(
            local.bucket_name(ep),
            US / local.rate(ep),
            max(1.0, BURST_FRACTION * write.rate_limit(ep).requests),
            write.rate_limit(ep).requests,
            write.rate_limit(ep).per_seconds,
        )
        for ep in DEFAULT_RATE_LIMITS
    }


def read_window(headers: Mapping[str, str], now_epoch: float | None) -> tuple[float, float] | None:
    """(remaining, seconds to the reset) from X-RateLimit-Remaining/-Reset (epoch or seconds), or None."""
    _limit, remaining, reset = rate_headers(headers)
    if remaining is None or reset is None:
        return None
    seconds = reset - (time.time() if now_epoch is None else now_epoch) if reset > EPOCH_THRESHOLD else reset
    if seconds <= 0:
        return None
    return remaining, min(seconds, MAX_RESET_S)
