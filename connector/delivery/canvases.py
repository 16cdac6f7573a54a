"""What Braze says about a Canvas as a whole: a paused or archived notice, or a canvas_id it refuses.

/canvas/trigger/send reaches only a Canvas of the workspace with API-triggered delivery. For any other id
Braze refuses the whole request: the live API answers `400 {"message": "canvas_id must be a string of the
Canvas api identifier"}` for an unknown id (recorded, ../shared/oracle braze_ruby_vcr canvas/details), and the
errors page names no other text. Every recipient of such a request is rejected with Braze's message (rule
`braze.canvas`) instead of splitting the request recipient by recipient, and the stream's later requests for
that Canvas are rejected the same way without being sent: each would get the same answer.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

from connector.delivery import outcomes

if TYPE_CHECKING:
    from connector.report import RunReport

CANVAS_RULE = "braze.canvas"
# A request-level message about the Canvas itself ("canvas_id ...", "Invalid Canvas ID"), not about a
# recipient or its properties ("'canvas_entry_properties' must be an object ..." does not match).
_NAMES_CANVAS = re.compile(r"\bcanvas(?:_id)?\b", re.IGNORECASE)
_STATUSES = (400, 404)


class CanvasReplies:
    """The run's Canvas-level answers (thread-safe): notices warned once, refused ids remembered."""

    def __init__(self, report: RunReport) -> None:
        self._report = report
        self._lock = threading.Lock()
        self._notices: set[str] = set()
        self._refused: dict[str, str] = {}

    def notice(self, stream: str, canvas_id: str | None, doc: Any) -> None:
        """A paused or archived Canvas answers 201 with a notice: warn once per Canvas and notice text."""
        notice = outcomes.notice_of(doc)
        if notice is None:
            return
        key = f"{canvas_id}: {notice}"
        with self._lock:
            if key in self._notices:
                return
            self._notices.add(key)
        self._report.add_warning(f"stream {stream}: Canvas {key}")

    @staticmethod
    def refusal(status: int | None, body: Any) -> str | None:
        """Braze's reason when a refused request names the Canvas itself, else None (a recipient's error)."""
        doc = outcomes.parse_body(body)
        if status not in _STATUSES or outcomes.object_errors(doc):
            return None
        message = outcomes.message_of(doc)
        return outcomes.request_reason(status, doc) if _NAMES_CANVAS.search(message) else None

    def refuse(self, stream: str, canvas_id: str | None, reason: str) -> str:
        """Remember that Braze refused this Canvas (warning once); returns the reject reason for its rows."""
        text = f"Braze refused Canvas {canvas_id!r}: {reason}"
        key = str(canvas_id)
        with self._lock:
            first = key not in self._refused
            self._refused.setdefault(key, text)
        if first:
            self._report.add_warning(
                f"stream {stream}: {text}. Its recipients are rejected ({CANVAS_RULE}); check canvas.canvas_id "
                "and that the Canvas uses API-triggered delivery"
            )
        return text

    def refused(self, canvas_id: str | None) -> str | None:
        """The reject reason for rows of a Canvas refused earlier in the run (not sent again), or None."""
        text = self._refused.get(str(canvas_id))
        return None if text is None else f"{text} (not sent: refused earlier in this run)"
