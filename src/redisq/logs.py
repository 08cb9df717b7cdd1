"""The coordinator's log: one line per event an operator acts on, as text or as JSON.

``event_line(logger, level, event, message, **fields)`` writes one event: ``message`` says
it in words (the text format prints it), ``fields`` carry the same as keys (the JSON format
prints one object per line: ``at``, ``level``, ``logger``, ``event``, ``message`` and the
fields). Lines that are not events (a traceback, uvicorn's own) come out in the same format,
with ``event`` "log" (or "access" for uvicorn's access log, with ``client``, ``method``,
``path`` and ``status``).

``configure_logging(config)`` installs the one handler ``redisq serve`` logs through, at
``log_level``, and turns uvicorn's access log on only with ``access_log``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from .config import Config

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EVENT_ATTR = "redisq_event"  # the LogRecord attributes an event line carries
FIELDS_ATTR = "redisq_fields"
ACCESS_LOGGER = "uvicorn.access"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")


def one_line(text: str) -> str:
    """Text from outside (a worker's error body) fit for one log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def event_line(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """Log one event: ``message`` in words, ``fields`` as keys (None values are left out)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", one_line(message),
                   extra={EVENT_ATTR: event, FIELDS_ATTR: {k: v for k, v in fields.items() if v is not None}})


def record_fields(record: logging.LogRecord) -> tuple[str, Mapping[str, Any]]:
    """The event name and fields of a record: an event line's own; uvicorn's access line's
    parts; "log" and none for anything else."""
    event = getattr(record, EVENT_ATTR, None)
    if isinstance(event, str):
        fields = getattr(record, FIELDS_ATTR, {})
        return event, fields if isinstance(fields, Mapping) else {}
    if record.name == ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, _, status = record.args
        return "access", {"client": client, "method": method, "path": path, "status": status}
    return "log", {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: at, level, logger, event, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = record_fields(record)
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "event": event, "message": record.getMessage(),
        }
        for key, value in fields.items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(config: Config, stream: TextIO | None = None) -> logging.Handler:
    """The process's one log handler (stderr), in ``log_format``, at ``log_level``; uvicorn's
    access log through it with ``access_log``, else off. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(config.log_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(config.log_level)
    root.setLevel(level)
    for name in UVICORN_LOGGERS:  # its start-up chatter stays out below WARNING, as before
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers.clear()
    access.propagate = config.access_log
    access.setLevel(logging.INFO if config.access_log else logging.CRITICAL + 1)
    return handler
