"""The delivery engine behind connector.writer.Writer: request scheduling and response outcomes."""

from __future__ import annotations
