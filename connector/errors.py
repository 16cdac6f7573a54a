"""Every exception the connector raises, under one root, named by what the caller must do.

Messages say what failed, where (file, row, column) and how to fix it. They never contain the API key.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""

    exit_code: int = 1


class ConfigError(ConnectorError):
    """The pipeline file or the command line is wrong: fix it and run again (exit code 2)."""

    exit_code = 2


class SourceError(ConnectorError):
    """A source file is missing, unreadable or not the declared format (exit code 2)."""

    exit_code = 2


class SuiteError(ConfigError):
    """An expectation suite is missing or malformed."""


class RowRejected(ConnectorError):
    """One row breaks a rule. Collected into the rejects file, never propagated out of a run."""

    def __init__(self, rule: str, reason: str, column: str | None = None) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason
        self.column = column


class ApiError(ConnectorError):
    """Root of errors from the Braze API (or the emulator).

    `resent_after_drop`: the client sent the body again after an attempt whose connection dropped after
    sending, so Braze may have applied it more than once.
    """

    resent_after_drop: bool = False

    def __init__(self, message: str, status: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TransientApiError(ApiError):
    """5xx, 408, timeout or dropped connection: safe to retry with backoff (for idempotent payloads)."""


class RateLimitedError(TransientApiError):
    """HTTP 429: retry after the server's indicated wait."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = 429, body: object = None) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class AmbiguousApiError(TransientApiError):
    """The connection dropped or timed out after the request was sent: Braze may or may not have applied it.

    Safe to resend only when the payload is idempotent (plain attribute sets); see Write.on_ambiguous.
    """


class RateLimitSpent(ApiError):
    """The server's rate-limit window resets later than the retry budget allows (write.retry.max_elapsed_s):
    stop sending, list the unsent rows for a retry after the reset (exit code 3)."""

    exit_code = 3

    def __init__(self, message: str, *, endpoint: str, wait_s: float, resets_at: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.endpoint = endpoint
        self.wait_s = wait_s
        self.resets_at = resets_at
        self.maybe_applied = False  # an earlier attempt of the request dropped after it was sent

    @property
    def reason(self) -> str:
        """The skip reason of the rows a stopped run did not send."""
        return f"run aborted: Braze's rate limit is spent until {self.resets_at}"


class PermanentApiError(ApiError):
    """400/403/404/413: the request itself is wrong; resending it unchanged cannot succeed."""


class AuthError(PermanentApiError):
    """401: the API key is missing, wrong, or belongs to another instance. Aborts the run (exit code 3)."""

    exit_code = 3


class DestinationUnreachable(ConnectorError):
    """The destination could not be reached after every retry (exit code 3)."""

    exit_code = 3


class RunStopped(ConnectorError):
    """The run was asked to stop (SIGTERM, SIGINT or the caller's StopToken) before this request was sent.

    Its rows are listed as not_sent; a later run resends them (exit code 4).
    """

    exit_code = 4


class RunLocked(ConnectorError):
    """Another run of this pipeline is using the same report folder or delta state: wait for it or stop it
    (exit code 2)."""

    exit_code = 2


class UnfinishedRun(ConnectorError):
    """The pipeline's last run was killed or stopped, and a plain re-run would apply rows of streams that keep
    no state a second time: finish it with --resume, or pass --ignore-unfinished (exit code 2)."""

    exit_code = 2


class JournalError(ConnectorError):
    """The run journal (journal.log in the report folder) cannot be written or read: free disk space or
    fix the folder's permissions. Nothing more is sent once it fails (exit code 2)."""

    exit_code = 2
