"""Log lines: timestamps always, text or JSON lines, and the run's context (run id, pipeline, stream).

The CLI calls `setup_logging()` once. Library and integration callers keep their own logging; the
context fields are still set on every record (`record.run_id`, `record.pipeline`, `record.stream`), so
any formatter can show them. On a terminal the handler prints through the rich Console that the
progress display also uses, so log lines scroll above the display instead of being written into it.

Counters ride on a record as `extra={"counters": {...}}`; the JSON formatter writes them as an object.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

import orjson

if TYPE_CHECKING:
    from rich.console import Console

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")

# Libraries that talk a lot at INFO and say nothing a pipeline's owner needs.
NOISY = ("great_expectations", "urllib3", "aiohttp.access", "asyncio")

# The run in progress: set by run_pipeline for its duration. A process runs one pipeline at a time in the
# CLI; the worker threads that send requests do not inherit context variables, so this is plain state.
_run_lock = threading.Lock()
_run: dict[str, str] = {}
# The stream being read: a context variable, so it is right in the thread that reads (workers have none).
_stream: contextvars.ContextVar[str | None] = contextvars.ContextVar("braze_connector_stream", default=None)


@contextmanager
def run_context(pipeline: str, run_id: str) -> Iterator[None]:
    """Within this block every log record carries this run's id and pipeline name."""
    with _run_lock:
        before = dict(_run)
        _run.update(pipeline=pipeline, run_id=run_id)
    try:
        yield
    finally:
        with _run_lock:
            _run.clear()
            _run.update(before)


@contextmanager
def stream_context(name: str) -> Iterator[None]:
    """Within this block (in this thread) every log record carries the stream's name."""
    token = _stream.set(name)
    try:
        yield
    finally:
        _stream.reset(token)


class ContextFilter(logging.Filter):
    """Stamps run_id, pipeline and stream on each record (a value given in `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = _run.get("run_id")
        if getattr(record, "pipeline", None) is None:
            record.pipeline = _run.get("pipeline")
        if getattr(record, "stream", None) is None:
            record.stream = _stream.get()
        return True


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 UTC with milliseconds: 2024-05-01T12:00:00.123Z."""
    t = datetime.fromtimestamp(record.created, UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.123Z WARNING connector.delivery.client: message`."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, run_id, pipeline, stream, message[, counters][, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "run_id": getattr(record, "run_id", None),
            "pipeline": getattr(record, "pipeline", None),
            "stream": getattr(record, "stream", None),
            "message": record.getMessage(),
        }
        counters = getattr(record, "counters", None)
        if isinstance(counters, Mapping):
            doc["counters"] = dict(counters)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class ConsoleHandler(logging.Handler):
    """Writes through a rich Console: while a progress display is live, lines go above it, never into it."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:  # logging must never break the run
            self.handleError(record)


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    *,
    stream: TextIO | None = None,
    terminal: bool | None = None,
) -> Console | None:
    """Configure the root logger for the command line; returns the Console to share with the progress display.

    On a terminal (or `terminal=True`) records go through a rich Console, which is returned so that the
    progress display uses the same one; elsewhere a plain stream handler writes them and None is returned.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: allowed values are {', '.join(LOG_LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: allowed values are {', '.join(LOG_FORMATS)}")
    out = stream or sys.stderr
    tty = out.isatty() if terminal is None else terminal
    console: Console | None = None
    handler: logging.Handler
    if tty:
        from rich.console import Console

        console = Console(file=out, force_terminal=True)
        handler = ConsoleHandler(console)
    else:
        handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_braze_connector", False):
            root.removeHandler(old)
    setattr(handler, "_braze_connector", True)  # noqa: B010 - marks the handler this function owns
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return console
