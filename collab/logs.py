"""Logging set-up: text in development, JSON lines in production, never blocking.

:func:`configure_logging` installs a ``QueueHandler`` on the root logger; a
``QueueListener`` thread does the formatting and writing, so a slow stderr
never stalls the event loop. Every record carries the ``request_id`` of the
request it belongs to (from a context variable set by the HTTP layer).

Nothing here scrubs secrets out of messages: the rule is that no code logs a
token, password, hash or query string, and a test scans captured logs for
them.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import queue
import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "request_id"}


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Queue the record as it is: formatting happens in the listener thread.

    The stock ``prepare`` formats the message in the emitting thread, i.e. on
    the event loop. Records stay in this process, so nothing needs pickling.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            doc["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(rid)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


@contextmanager
def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> Iterator[None]:
    """Route all logging through a queue to ``stream`` (stderr) for the block."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = _DeferredQueueHandler(log_queue)
    queue_handler.addFilter(_ContextFilter())
    listener = logging.handlers.QueueListener(log_queue, handler, respect_handler_level=False)
    root = logging.getLogger()
    previous = (root.level, list(root.handlers))
    root.handlers = [queue_handler]
    root.setLevel(level)
    # hypercorn's own access log would print query strings (tokens); ours does not.
    logging.getLogger("hypercorn.access").disabled = True
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO lines dump whole initdb transcripts
    listener.start()
    try:
        yield
    finally:
        listener.stop()
        root.setLevel(previous[0])
        root.handlers = previous[1]
