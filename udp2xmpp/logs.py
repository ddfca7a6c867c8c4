"""Logging setup: JSON lines for machines, readable text for people.

``--log-format auto`` (the default) writes JSON lines when stderr is not a
terminal (systemd's journal, a file, a container log collector) and text
when it is. Stdlib logging only: a `logging.Formatter` subclass.

A JSON line has ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``
and ``message``; then ``exception`` when there is one, and any ``extra=``
fields the call passed.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a stray surrogate or control character can never break the line.
        return json.dumps(entry, default=str, ensure_ascii=True)


def choose_format(fmt: str, stream: IO[str]) -> str:
    """ "json" or "text" for `fmt` ("auto" asks whether `stream` is a terminal)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format: one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed or not a real file
        return "json"


def setup_logging(fmt: str = "auto", level: str = "info", stream: IO[str] | None = None) -> str:
    """Send the root logger to `stream` (stderr) in `fmt`; returns "json" or "text"."""
    stream = stream if stream is not None else sys.stderr
    chosen = choose_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # slixmpp is chatty at INFO/DEBUG; its warnings still come through.
    logging.getLogger("slixmpp").setLevel(max(logging.WARNING, root.level))
    return chosen
