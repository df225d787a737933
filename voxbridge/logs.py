"""Log output: the seed's emoji lines for people, one JSON object per line for machines.

Every record may carry ``agent`` and ``plugin`` (pass them in ``extra``); both formats always
show them, so ``grep support/discord`` or ``jq 'select(.agent=="support")'`` find an actor's lines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "actor_logger", "setup_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-11-24T07:50:01.123Z INFO  ✅ support/discord ready``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<5} {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "msg": ..., "agent": ..., "plugin": ..., ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "agent": getattr(record, "agent", None),
            "plugin": getattr(record, "plugin", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send voxbridge's (and its libraries') logs to ``stream`` (stderr) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and up
    logging.getLogger("voxbridge").setLevel(level.upper())


def actor_logger(agent: str, plugin: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry the actor's agent and plugin."""
    return logging.LoggerAdapter(
        logging.getLogger(f"voxbridge.plugins.{plugin}"), {"agent": agent, "plugin": plugin}
    )
