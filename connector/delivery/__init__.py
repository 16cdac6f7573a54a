"""Delivery: mapped objects -> Braze, inside its rate limits, with every object's outcome mapped to its row.

Interface:
- `writer.Writer(pipeline, client, report, mode="bulk"|"sync", dry_run=False, delta=None, settled=None,
  stop=None, journal=None)`:
  `submit(stream, mapped)`, `close()`, `aborted`, `abort_reason`. Requests go out in source order per
  user (schedule.OrderedQueue), up to `write.concurrency` in flight on one event-loop thread (sender.Sender),
  not a thread each: first attempts leave a 10 ms rate-limit group at a time and their answers are recorded
  a read at a time (volleys.py); the rest of a job (retries, splits) runs as a coroutine. Braze's
  per-object errors come back to the rows (outcomes.py). Once the
  stop token (connector.stop) is requested nothing new is sent, and close() waits `write.stop_grace_s`
  for the answers in flight before giving up on them as "unknown" (inflight.py).
- `batching`: request bodies (75 objects per /users/track array or combined, 50 combined on MAU contracts,
  one per sync request, 50 Canvas recipients, one Live Activity update), `split` of a refused request;
  `bins.plan_bins`: a chunk's /users/track requests with each user's objects together, filled to the cap.
- `ratelimit.RateLimiter`: a token bucket per endpoint that learns from X-RateLimit-* headers.
- `shared_limits.SharedRateLimiter`: the same interface (`ratelimit.Limiter`), one budget per endpoint
  shared through Redis by every process of a namespace (`write.shared_limits`), a local share without it.
- `client.BrazeClient` / `client.client_for(pipeline, url, key, mode, stop=None, on_retry=None,
  limiter=None)`: one retry policy
  (tenacity), Braze's status table (statuses.py), over a transport (transport/: requests, aiohttp, or
  aiohttp in a child process); no attempt or retry after a stop (`RunStopped` when nothing was sent).
  `post()` blocks a thread; `post_async()` (the writer) waits for slots, backoff and answers without one
  (waits.py); `prepare`/`slot`/`launch`/`conclude`/`resume_async`: a first attempt sent in a group.
- `spare.start(pipeline, mode, offline=, resume=)` / `take(secrets)` / `discard()`: the HTTP child started
  at the CLI's start for a bulk run, handed to the transport (`mode.early_mode`, `mode.transport_kind`).
- `mode.choose_mode(pipeline, override, streams) -> (mode, reason)`: bulk or sync for a run;
  `sync_access.probe_mode(...)` checks that the key has the /users/track/sync beta before auto uses it, and
  `sync_access.SyncRefusal` sends the rest of a run to bulk when the sync endpoint refuses the key.
- `canvases.CanvasReplies`: Canvas-level answers (paused/archived notices, a refused canvas_id).
- `journal.Journal`: journal.log, each request's source rows on disk before it leaves, then their outcomes;
  `journal_rows.load_journal`: it read back, every row's last state (delivered, refused, rejected by the run's
  checks, ...) and the streams read to their end; `resume.ResumeSet`: an interrupted run's journal carried
  into the resumed run's report (a stream every row of which had its outcome is carried without reading it).
"""
