"""flux.logs: one JSON object per log line when asked, with the request's id and the access log's fields."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from flux.logs import ACCESS_LOGGER, REQUEST_ID, JsonFormatter, logging_config, say


def record(name: str, message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args or None, exc_info)


def test_a_record_is_one_json_object_with_time_level_logger_message_and_node() -> None:
    line = JsonFormatter(node="n1").format(record("flux.kafka.publisher", "sent %d records", 3))
    entry = orjson.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING" and entry["logger"] == "flux.kafka.publisher"
    assert entry["message"] == "sent 3 records" and entry["node"] == "n1"
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-11-30T18:00:00.000Z")
    assert "request_id" not in entry and "exception" not in entry


def test_the_request_id_and_the_traceback_travel_in_their_own_fields() -> None:
    token = REQUEST_ID.set("req-7")
    try:
        entry = orjson.loads(JsonFormatter().format(record("api", "failed", exc=True)))
    finally:
        REQUEST_ID.reset(token)
    assert entry["request_id"] == "req-7"
    assert "ValueError: boom" in entry["exception"] and "Traceback" in entry["exception"]


def test_an_access_line_carries_method_path_status_and_client() -> None:
    access = record(ACCESS_LOGGER, '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/api/x", "1.1", 404)
    entry = orjson.loads(JsonFormatter().format(access))
    assert (entry["method"], entry["path"], entry["status"], entry["client"]) == (
        "GET",
        "/api/x",
        404,
        "127.0.0.1:5000",
    )


def test_the_config_puts_the_json_formatter_on_the_workers_handler_only_when_asked() -> None:
    text = logging_config("text", "n", "WARNING", access_log=False)
    assert text == {"merge": True, "root": {"level": "WARNING", "handlers": ["default"]}}
    json_config = logging_config("json", "n", "WARNING", access_log=True)
    assert json_config["handlers"]["default"]["formatter"] == "json"
    assert json_config["formatters"]["json"]["()"] is JsonFormatter
    assert json_config["loggers"][ACCESS_LOGGER]["level"] == "INFO"


def test_the_command_reports_in_the_logs_format(capsys: pytest.CaptureFixture[str]) -> None:
    say("serving on http://127.0.0.1:3000")
    say("serving on http://127.0.0.1:3000", "json")
    text, json_line = capsys.readouterr().err.splitlines()
    assert text == "flux: serving on http://127.0.0.1:3000"
    assert orjson.loads(json_line)["message"] == "serving on http://127.0.0.1:3000"
