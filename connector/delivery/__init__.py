"""Delivery: mapped objects -> Braze, inside its rate limits, with every object's outcome mapped to its row.

Interface:
- `writer.Writer(pipeline, client, report, mode="bulk"|"sync", dry_run=False, delta=None)`:
  `submit(stream, mapped)`, `close()`, `aborted`, `abort_reason`. Requests go out in source order per
  user (schedule.OrderedQueue); Braze's per-object errors come back to the rows (outcomes.py).
- `batching`: request bodies (75 objects per /users/track array or combined, one per sync request, 50
  Canvas recipients, one Live Activity update), `split` of a refused request.
- `ratelimit.RateLimiter`: a token bucket per endpoint that learns from X-RateLimit-* headers.
- `shared_limits.SharedRateLimiter`: the same interface (`ratelimit.Limiter`), one budget per endpoint
  shared through Redis by every process of a namespace (`write.shared_limits`), a local share without it.
- `client.BrazeClient` / `client.client_for(pipeline, url, key, mode, limiter=None)`: one retry policy (tenacity),
  Braze's status table, over a transport (transport/: requests, aiohttp, or aiohttp in a child process).
- `mode.choose_mode(pipeline, override, streams) -> (mode, reason)`: bulk or sync for a run.
"""
