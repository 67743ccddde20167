"""What a node writes to its log: Flux's text lines, or one JSON object per line.

``FLUX_LOG_FORMAT=json`` makes every log record one JSON object on its own line (``time`` in RFC
3339 with milliseconds, ``level``, ``logger``, ``message``, ``node``, ``request_id`` while an HTTP
request is being served, ``exception`` with the traceback), for log shippers. ``FLUX_ACCESS_LOG=true``
adds a line per HTTP request (uvicorn's access log: ``method``, ``path``, ``status``, ``client``
as fields in JSON). Both are off by default: logs stay quiet.

:func:`logging_config` is the ``dictConfig`` the worker merges into its own (see
``mode.utils.logging``); :func:`say` is how the ``flux`` command reports before that exists.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("flux_request_id", default=None)
ACCESS_LOGGER = "uvicorn.access"


def _rfc3339(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def __init__(self, node: str = "") -> None:
        super().__init__()
        self._node = node

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": self._node,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.name == ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args  # uvicorn: client, method, path, HTTP version, status
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(log_format: LogFormat, node: str, root_level: str, access_log: bool) -> dict[str, Any]:
    """The ``dictConfig`` merged into the worker's: the root logger at ``root_level``, the JSON
    formatter on the worker's handler when asked, and uvicorn's access log at INFO when asked."""
    config: dict[str, Any] = {"merge": True, "root": {"level": root_level, "handlers": ["default"]}}
    if log_format == "json":
        config["formatters"] = {"json": {"()": JsonFormatter, "node": node}}
        config["handlers"] = {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        }
    if access_log:
        config["loggers"] = {ACCESS_LOGGER: {"level": "INFO", "propagate": True}}
    return config


def say(message: str, log_format: LogFormat = "text", level: str = "INFO") -> None:
    """Report ``message`` on standard error: ``flux: message``, or a JSON line like the log's."""
    if log_format == "json":
        entry = {"time": _rfc3339(time.time()), "level": level, "logger": "flux.cli", "message": message}
        print(orjson.dumps(entry).decode(), file=sys.stderr)
    else:
        print(f"flux: {message}", file=sys.stderr)


TEXT_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"  # the Faust worker's own line format
QUIET_LOGGERS = ("aiokafka", "kafka", "rocksdict")  # their debug and info paths cost CPU on every send


def process_logging_config(log_format: LogFormat, node: str, level: str, access_log: bool) -> dict[str, Any]:
    """A whole ``dictConfig`` for a process without a Faust worker (an HTTP process): the same
    lines as the worker's, Flux's loggers at ``level``, the chatty client libraries at WARNING."""
    config = logging_config(log_format, node, level, access_log)
    del config["merge"]
    config.update(version=1, disable_existing_loggers=False)
    if log_format != "json":
        config["formatters"] = {"text": {"format": TEXT_FORMAT}}
        config["handlers"] = {
            "default": {"class": "logging.StreamHandler", "formatter": "text", "stream": "ext://sys.stderr"}
        }
    loggers = config.setdefault("loggers", {})
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for name in QUIET_LOGGERS:
        loggers[name] = {"level": logging.getLevelName(quiet)}
    return config
