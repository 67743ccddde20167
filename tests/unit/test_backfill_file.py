"""``flux backfill``: reading files, stable eventIds, checkpoints (unit), and runs against a real node (e2e)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson

from api.cli.backfill import Checkpoint, file_event_id, read_items

T0 = 1_600_000_000_000


def event(i: int, ns: str, **extra: Any) -> dict[str, Any]:
    return {
        "stream": "backfill",
        "source": "archive",
        "timestamp": T0 + i * 1000,
        "payload": {"entity_id": f"{ns}/dev-{i % 20}", "properties": {"reading": i}},
        **extra,
    }


def test_json_lines_and_json_arrays_read_the_same_events() -> None:
    events = [event(i, "x") for i in range(3)]
    lines = "\n".join(orjson.dumps(e).decode() for e in events) + "\n\n"
    from_lines = [item.event for item in read_items(io.StringIO(lines))]
    from_array = [item.event for item in read_items(io.StringIO("  " + orjson.dumps(events).decode()))]
    assert [e["payload"] for e in from_lines] == [e["payload"] for e in from_array] == [e["payload"] for e in events]  # type: ignore[index]


def test_events_without_an_id_get_one_from_position_and_content() -> None:
    text = orjson.dumps(event(1, "x")).decode()
    first = next(read_items(io.StringIO(text)))
    again = next(read_items(io.StringIO(text)))
    assert first.event is not None and again.event is not None
    assert first.event["eventId"] == again.event["eventId"] == file_event_id(0, text)
    assert file_event_id(0, text) < file_event_id(1, text)  # file order
    kept = next(read_items(io.StringIO(orjson.dumps(event(1, "x", eventId="mine")).decode())))
    assert kept.event is not None and kept.event["eventId"] == "mine"


def test_lines_that_are_not_events_are_items_with_the_reason() -> None:
    items = list(read_items(io.StringIO('{"a": 1}\nnot json\n[1, 2]\n')))
    assert [item.error is None for item in items] == [True, False, False]
    assert "line 2: not JSON" in (items[1].error or "")


def test_a_checkpoint_remembers_how_far_the_file_is_done(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "f.flux-backfill.json")
    assert checkpoint.load() == 0
    checkpoint.save(1200)
    assert Checkpoint(tmp_path / "f.flux-backfill.json").load() == 1200
