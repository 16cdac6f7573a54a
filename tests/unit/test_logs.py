"""connector.logs: timestamps, text and JSON lines, the run's context on every record, console handler."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest

from connector.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    run_context,
    setup_logging,
    stream_context,
)

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("connector.test", logging.WARNING, __file__, 1, msg, args or ("world",), None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """Restore the root logger after a test installs the CLI's handler."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_have_a_utc_timestamp() -> None:
    line = TextFormatter().format(record())
    assert re.fullmatch(TS + r" WARNING connector\.test: hello world", line), line


def test_json_lines_carry_the_run_context_and_counters() -> None:
    rec = record(counters={"delivered": 5, "failed": 1})
    with run_context("users_daily", "20240501T000000Z-abc123"), stream_context("users"):
        ContextFilter().filter(rec)
    doc = json.loads(JsonFormatter().format(rec))
    assert re.fullmatch(TS, doc.pop("ts"))
    assert doc == {
        "level": "warning",
        "logger": "connector.test",
        "run_id": "20240501T000000Z-abc123",
        "pipeline": "users_daily",
        "stream": "users",
        "message": "hello world",
        "counters": {"delivered": 5, "failed": 1},
    }


def test_context_ends_with_its_block_and_extra_wins() -> None:
    rec = record()
    ContextFilter().filter(rec)
    assert (rec.run_id, rec.pipeline, rec.stream) == (None, None, None)  # type: ignore[attr-defined]
    with run_context("p", "r1"):
        rec = record(pipeline="given")
        ContextFilter().filter(rec)
        assert (rec.pipeline, rec.run_id) == ("given", "r1")  # type: ignore[attr-defined]


def test_the_run_context_reaches_worker_threads_but_the_stream_does_not() -> None:
    """Requests are sent from worker threads: they log the run, not a stream they may not belong to."""
    seen: list[logging.LogRecord] = []

    def work() -> None:
        rec = record()
        ContextFilter().filter(rec)
        seen.append(rec)

    with run_context("p", "r2"), stream_context("users"):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert (seen[0].run_id, seen[0].stream) == ("r2", None)  # type: ignore[attr-defined]


def test_json_keeps_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("connector.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in doc["exc"] and doc["message"] == "failed"


def test_setup_logging_plain_stream(root_handlers: None) -> None:
    out = io.StringIO()
    assert setup_logging("warning", "json", stream=out, terminal=False) is None
    setup_logging("info", "json", stream=out, terminal=False)  # a second call replaces, never doubles
    logging.getLogger("connector.x").info("one %d", 1, extra={"counters": {"read": 3}})
    logging.getLogger("connector.x").debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["counters"] == {"read": 3}
    assert logging.getLogger("great_expectations").level == logging.WARNING


def test_setup_logging_on_a_terminal_shares_a_console(root_handlers: None) -> None:
    out = io.StringIO()
    console = setup_logging("info", "text", stream=out, terminal=True)
    assert console is not None
    logging.getLogger("connector.x").warning("through the console")
    assert re.search(TS + r" WARNING connector\.x: through the console", out.getvalue())


def test_setup_logging_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="allowed values"):
        setup_logging("loud")
    with pytest.raises(ValueError, match="allowed values"):
        setup_logging("info", "xml")
