"""Access to /users/track/sync, a Braze beta: the probe before an auto-mode run, the switch to bulk on refusal.

`/users/track/sync` needs the key permission `users.track.sync`, which only workspaces in the beta have
("contact your account manager", post_user_track_synchronous.md). A key without it gets 403 Access Denied
(errors.md: "does not have sufficient permissions"); a workspace without the endpoint may answer 404. Two
safeguards, so that no run fails or loses a row over it:

- `probe_mode`: every run that chose sync probes the key first; mode auto with `write.sync_endpoint: auto`
  keeps sync only when the probe shows the key can use it, and a run that asked for sync keeps it unless the
  probe is refused (403/404). The probe posts `{"attributes": []}`: an empty array holds no object, so nothing can be written whatever
  Braze answers (side-effect free), and it costs one request of the 500/minute sync budget. Braze checks the
  key's permission before it reads the body (a key-level refusal, as the emulator does), so 403/404 means no
  access, and 400 (nothing to process) or a 2xx means access. A 401 refuses the key itself (errors.md: an
  invalid key, or one of another instance, on any endpoint): the run ends there (exit 3), before it reads a
  row. Any other outcome (still 429/5xx after the retries, no answer) proves nothing: bulk, which needs only
  `users.track`. Should Braze ever validate the
  body first (a 400 without access), the switch below still catches the first real request.
- `SyncRefusal`: whatever the mode came from (auto, `mode: sync`, `sync_endpoint: enabled`), a 403/404 from
  the sync endpoint switches the rest of the run to /users/track; the refused rows are resent in bulk, with a
  warning in the summary and the report.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from connector.config import Pipeline
from connector.delivery import outcomes
from connector.errors import ApiError, AuthError, PermanentApiError

if TYPE_CHECKING:
    from connector.report import RunReport

logger = logging.getLogger(__name__)

PROBE_BODY = b'{"attributes":[]}'
REFUSED_STATUSES = (403, 404)


def needs_probe(pipeline: Pipeline, override: str | None, chosen: str) -> bool:
    """Whether the sync mode chosen is probed first: always. Requests are packed for the endpoint they go to
    (one row per sync request), so a refusal found before packing lets the whole run go in full bulk
    requests, where a refusal found mid-run could only resend the rows already packed one per request."""
    return chosen == "sync"


def asked_for_sync(pipeline: Pipeline, override: str | None) -> bool:
    """Sync was asked for (--mode sync, write.mode: sync, or sync_endpoint: enabled), not merely allowed: a
    probe that proves nothing then keeps sync; only a 403/404 turns the run to bulk."""
    if override not in (None, "auto"):
        return override == "sync"
    return pipeline.write.mode == "sync" or pipeline.write.sync_endpoint == "enabled"


def probe_mode(pipeline: Pipeline, url: str, api_key: str, report: RunReport, *, asked: bool = False,
               embedded: bool = False) -> str:
    """Probe the key (see the module doc) and return the run's mode, also set in the report with its reason;
    the probe is listed in the report as a probe (`requests.probes`), apart from the delivery requests. With
    `asked`, an inconclusive probe keeps sync."""
    from connector.delivery.client import client_for

    client = client_for(pipeline, url, api_key, "sync")
    t0 = time.perf_counter()
    status: int | None = None
    try:
        resp = client.post("users_track_sync", PROBE_BODY, idempotent=True)
        status, access, seen = resp.status, True, f"HTTP {resp.status}"
    except AuthError as e:  # 401: the key itself is refused (every endpoint): the run ends here, exit 3, so that
        # one with nothing to send (an unchanged delta run) does not exit 0 with a revoked key
        report.record_probe("users_track_sync", e.status or 401, (time.perf_counter() - t0) * 1000.0,
                            purpose="sync access", answer=f"HTTP {e.status}: the key was refused", decided="none")
        report.set_mode(report.mode or "sync", f"{report.mode_reason}; the sync probe's HTTP {e.status or 401} "
                        "refused the key, so no row was read or sent")  # fmt: skip
        raise
    except PermanentApiError as e:
        status, access = e.status, e.status not in REFUSED_STATUSES
        seen = outcomes.request_reason(e.status, outcomes.parse_body(e.body))
    except ApiError as e:
        status, access, seen = e.status, False, f"{outcomes.error_text(e)}; inconclusive"
    finally:
        client.close()
    if asked and not access and status not in REFUSED_STATUSES:
        access = True  # sync was asked for: only a refusal turns it down (a 401 then stops the run itself)
    report.record_probe("users_track_sync", status or 0, (time.perf_counter() - t0) * 1000.0,
                        purpose="sync access", answer=seen, decided="sync" if access else "bulk")
    reason = report.mode_reason
    if access:
        mode, reason = "sync", f"{reason}; a probe shows the key can use /users/track/sync ({seen} to an empty request)"
    else:
        mode, reason = "bulk", (
            f"{reason}, but the key cannot use /users/track/sync, a Braze beta (probe: {seen}), so bulk; "
            + f"{bulk_from_start(pipeline.file is not None)} to use bulk from the start"
        )
        if asked:
            report.add_warning(
                f"sync was asked for, but /users/track/sync refused the key (probe: {seen}): it needs the "
                "users.track.sync permission of Braze's sync beta, so the run used /users/track (bulk); "
                + ("set destination.emulator.sync_beta: true to try sync on the embedded emulator"
                   if embedded else
                   "ask Braze for the beta (a local emulator: start it with --sync-beta, or "
                   "--api-key KEY:users.track.sync)")
            )
    report.set_mode(mode, reason)
    logger.info("mode %s (%s)", mode, reason)
    return mode


def bulk_from_start(from_file: bool) -> str:
    """How to skip sync from the start: a pipeline file's setting, or an upload's flag (it has no file)."""
    return "set write.sync_endpoint: disabled" if from_file else "pass --mode bulk"


class SyncRefusal:
    """Remembers (thread-safe) that Braze refused /users/track/sync in this run; `refuse` records it once."""

    def __init__(self, report: RunReport, *, confirm_profiles: bool = False, from_file: bool = True) -> None:
        self._report = report
        self._confirm = confirm_profiles
        self._from_file = from_file  # an upload has no pipeline file to change: its advice is a flag
        self._lock = threading.Lock()
        self.refused = False

    def refuse(self, status: int | None, body: object) -> None:
        """Switch the rest of the run to bulk: a warning and the report's mode say so, the first time only."""
        with self._lock:
            if self.refused:
                return
            self.refused = True
        why = outcomes.request_reason(status, outcomes.parse_body(body))
        report = self._report
        unconfirmed = "; rows sent in bulk have no confirmed profile (confirm_profiles)" if self._confirm else ""
        report.add_warning(
            f"/users/track/sync refused the key ({why}): it needs the users.track.sync permission of Braze's "
            "sync beta. The refused rows and the rest of the run went through /users/track (bulk), so no row "
            f"was lost{unconfirmed}; {bulk_from_start(self._from_file)} to use bulk from the start"
        )
        report.set_mode("bulk", f"switched from sync after /users/track/sync refused the key ({why}); sync had "
                        f"been chosen because {report.mode_reason}")  # fmt: skip
